"""Training pairs for the two LoRA adapters (paper Sec. 4.3): DBA references, clean targets, pseudo-GT heatmaps.

A *pair* is a clean video and a degraded (artifact) video of the same camera path, same
length and size: the benchmark's ``gt/`` + ``artifact/`` folders, or a nerfstudio run's
held-out GT views + the sparse-view renders at the same poses. A clip has ``T = 8n + 1``
frames (:func:`artifactworld_ns.restorer.dba.check_clip_length`; 89 as the release was trained). For each pair
:func:`build_pair` lays every training video out in the official ``T + 8``-frame DBA layout:

* **reference** -- :func:`artifactworld_ns.restorer.dba.build_reference_video`: ``[A] + artifact[1:-1] + [B] * 9``
  with the clean first / last frames as anchors A / B (the official ``tools/process_videos.py``);
* **clean target** (stage 2) -- the clean clip followed by its last frame 8 more times, so the
  target's appended tail shows the same view B as the reference's (:func:`build_target_video`);
* **heatmap** (stage-1 target, stage-2 condition) -- the per-pixel artifact severity between the
  reference and the clean target (:func:`heatmap_map`; LPIPS spatial map by default, as the paper
  does), as a 3-channel video whose anchor frames are black: frame 0 (the reference shows clean
  A there) and the last 9 (:func:`artifactworld_ns.restorer.dba.black_tail`, exactly what the official stage-1 ->
  stage-2 hand-off does to the predicted heatmap).

The official training-data code is not released: neither ``stages/*/src/ltxv_trainer/datasets.py``
nor ``training_strategies.py`` says what the target and heatmap hold at the 8 appended frames;
the repeated clean last frame and the black tail above are this project's choice, consistent with
the reference and with the heatmaps stage 2 is given at inference.

Both videos are resized to the preset's processing size (:func:`conform_space`); frames are
never resampled in time.

**Heatmap normalization.** Every metric gives a per-pixel distance that is already on a
``[0, 1]``-like scale, and it is clipped to ``[0, 1]`` without per-clip rescaling, so a
heatmap's brightness means the same severity in every clip:

* ``lpips`` -- the LPIPS (AlexNet) spatial map, clipped to ``[0, 1]``;
* ``l1`` -- mean absolute RGB difference per pixel (in ``[0, 1]`` by construction);
* ``ssim`` -- ``(1 - SSIM) / 2`` of torchmetrics' full SSIM map (Gaussian window 11, sigma 1.5),
  channel mean, in ``[0, 1]``.

**Latents.** Each video is VAE-encoded whole with ``latent_dist.sample(generator)`` (as LTX-Video-
Trainer's ``scripts/process_videos.py`` precomputes its training latents) and normalized with the
VAE's latents mean / std; the generator is seeded per pair from ``--seed`` and the pair's name, so a
rebuilt pair gets the same latents. The source video's frame rate is stored with them: the official
trainer scales the temporal RoPE coordinate by it.

On-disk layout written by ``aw-make-pairs`` (:func:`write_pair`) and read by ``aw-train-lora``::

    OUT/meta.json                          format, preset, heatmap metric, processing size, VAE folder, seed;
                                           labels (when labels.jsonl sits beside the GT folder): each pair's
                                           artifact types, source and recipe (:func:`pair_labels_meta`)
    OUT/videos/NAME/reference.mp4          DBA reference (T + 8 frames, model grid size)
    OUT/videos/NAME/clean.mp4              clean target (T + 8 frames)
    OUT/videos/NAME/heatmap.mp4            pseudo-GT heatmap (T + 8 frames, RGB, black anchors)
    OUT/latents/NAME.pt                    z_ref, z_clean, z_heatmap (normalized VAE latents), fps, and z_artifact
                                           (the degraded clip in the clean target's T + 8 layout: the world
                                           model's target, paper Sec. 3.3)
    OUT/prompts.pt                         the stage prompts' T5 embeddings

The latents are computed from the in-memory tensors (not from the lossy mp4s), so training never
runs the VAE or the text encoder.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from .atomic import atomic_path
from .dba import (
    ANCHOR_TAIL_FRAMES,
    build_reference_video,
    check_clip_length,
)
from .errors import RestorerInputError
from .flow_matching import TRAINING_FPS
from .latents import encode_video
from .presets import PresetModels
from .prompts import PromptEmbedding
from .pseudo_heatmaps import (  # noqa: F401 -- re-exported with the pair format they belong to
    ALEXNET_WEIGHTS_FILE,
    HEATMAP_METRICS,
    HeatmapMetric,
    check_lpips_weights,
    heatmap_map,
    heatmap_video,
)

META_FILE = "meta.json"
LATENTS_DIR = "latents"
VIDEOS_DIR = "videos"
PROMPTS_FILE = "prompts.pt"
LATENT_KEYS = ("z_ref", "z_clean", "z_heatmap")
WORLD_MODEL_KEY = "z_artifact"
"""The degraded clip's latent (``T + 8`` frames, laid out as the clean target), which the world model learns to
generate; pairs built before it existed lack it (stages 1 and 2 do not need it)."""
PAIRS_FORMAT = "artifactworld-pairs-v2"
"""v2: official T + 8 DBA layout, sampled VAE latents, fps stored (v1 folders must be rebuilt)."""
DEFAULT_SEED = 42


# ---------------------------------------------------------------------------------------------- pairs


@dataclass
class PairVideos:
    """One pair at the model grid size, every video ``T + 8`` frames: DBA reference, clean target, heatmap."""

    reference: Float[Tensor, "frames height width 3"]
    clean: Float[Tensor, "frames height width 3"]
    heatmap: Float[Tensor, "frames height width 3"]
    clip_frames: int
    """``T``, the clip's own length (the videos are ``T + 8``)."""
    artifact: Float[Tensor, "frames height width 3"] | None = None
    """The degraded clip followed by its last frame 8 more times (the world model's target)."""


def check_pair(clean: Tensor, artifact: Tensor, names: tuple[str, str] = ("clean", "artifact")) -> None:
    """One sentence when a clean / artifact pair does not match in length or size, or is not ``8n + 1`` frames
    (``aw-make-pairs`` and ``aw-prepare`` both check pairs here; ``names`` are what each calls the two videos)."""
    first, second = names
    if clean.shape[0] != artifact.shape[0]:
        raise RestorerInputError(
            f"The {first} video has {clean.shape[0]} frames but the {second} video has {artifact.shape[0]}; "
            "a pair must have the same length."
        )
    if clean.shape[1:] != artifact.shape[1:]:
        raise RestorerInputError(
            f"The {first} video is {clean.shape[2]}x{clean.shape[1]} but the {second} video is "
            f"{artifact.shape[2]}x{artifact.shape[1]}; a pair must have the same resolution."
        )
    check_clip_length(int(clean.shape[0]))


def conform_space(
    video: Float[Tensor, "frames height width 3"], max_side: int | None = None, size: tuple[int, int] | None = None
) -> Tensor:
    """Bring a clip to the model's frame size exactly as inference conforms its inputs, keeping every frame.

    ``size`` (the preset's official ``(H, W)``): cover-resize and center-crop; otherwise a plain
    resize to multiples of 32 capped by ``max_side`` (:func:`artifactworld_ns.restorer.conform.plan_conform`).
    """
    from .conform import plan_conform, to_model_space

    plan = plan_conform(*video.shape[:3], max_side=max_side, size=size)
    return to_model_space(video.float().clamp(0, 1), plan)


def build_target_video(clean: Float[Tensor, "frames height width 3"]) -> Float[Tensor, "frames_plus_8 height width 3"]:
    """The ``T + 8``-frame clean target: the clip, then its last frame 8 more times (see module doc)."""
    return torch.cat([clean, clean[-1:].expand(ANCHOR_TAIL_FRAMES, *clean.shape[1:])]).clone()


def build_pair(
    clean: Float[Tensor, "frames height width 3"],
    artifact: Float[Tensor, "frames height width 3"],
    metric: HeatmapMetric = "lpips",
    processing_max_side: int | None = None,
    processing_size: tuple[int, int] | None = None,
) -> PairVideos:
    """Resize a ``T``-frame clean / artifact pair to the model grid and build its ``T + 8``-frame videos."""
    check_pair(clean, artifact)
    clean_m = conform_space(clean, processing_max_side, processing_size)
    artifact_m = conform_space(artifact, processing_max_side, processing_size)
    reference = build_reference_video(artifact_m, clean_m[0], clean_m[-1])
    target = build_target_video(clean_m)
    return PairVideos(
        reference=reference,
        clean=target,
        heatmap=heatmap_video(reference, target, metric),
        clip_frames=int(clean.shape[0]),
        artifact=build_target_video(artifact_m),
    )


def pair_generator(name: str, seed: int = DEFAULT_SEED) -> torch.Generator:
    """The VAE-sampling generator of one pair: seeded from ``seed`` and the pair's name (stable across runs)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)


@torch.no_grad()
def encode_pair(vae, pair: PairVideos, generator: torch.Generator | None = None, fps: float = TRAINING_FPS) -> dict:
    """The pair's normalized VAE latents (``[1, C, F, h, w]`` each, CPU float32, sampled with ``generator``) and fps."""
    latents = {
        "z_ref": encode_video(vae, pair.reference, generator=generator),
        "z_clean": encode_video(vae, pair.clean, generator=generator),
        "z_heatmap": encode_video(vae, pair.heatmap, generator=generator),
    }
    if pair.artifact is not None:
        latents[WORLD_MODEL_KEY] = encode_video(vae, pair.artifact, generator=generator)
    out: dict = {k: v.float().cpu().contiguous() for k, v in latents.items()}
    out["fps"] = float(fps)
    return out


def pairs_meta(models: PresetModels, metric: str, seed: int = DEFAULT_SEED) -> dict:
    """What a pairs folder was built with; training checks it against its own preset."""
    return {
        "format": PAIRS_FORMAT,
        "preset": models.name,
        "heatmap_metric": metric,
        "processing_max_side": models.processing_max_side,
        "processing_size": list(models.processing_size) if models.processing_size else None,
        "vae": str((models.roots.ltx_main / "vae").resolve()),
        "seed": seed,
    }


LABELS_META_KEY = "labels"
"""The key of ``meta.json`` holding the pairs' labels; not part of what a pairs folder was *built with*, so a
rerun that adds labelled pairs merges it instead of refusing the folder."""


def pair_labels_meta(labels_file: Path | list[Path], records: dict) -> dict:
    """The ``labels`` entry of ``meta.json``: the label file it came from and, per pair name, the clip's artifact
    types, source (simulated / generated) and recipe (``records``: name -> :class:`artifactworld_ns.restorer.labels.ClipLabel`)."""
    return {
        "file": (
            str(Path(labels_file).resolve())
            if isinstance(labels_file, (str, Path))
            else [str(Path(f).resolve()) for f in labels_file]  # several sources (aw-make-pairs --sources)
        ),
        "pairs": {
            name: {"types": list(label.types), "source": label.source, "recipe": label.recipe}
            for name, label in sorted(records.items())
        },
    }


def merge_pairs_meta(old: dict, new: dict) -> dict:
    """``new`` with the pairs' labels of ``old`` kept (``new``'s win for a pair in both); the build settings of the
    two must already agree (:func:`build_settings`)."""
    pairs = {**old.get(LABELS_META_KEY, {}).get("pairs", {}), **new.get(LABELS_META_KEY, {}).get("pairs", {})}
    if not pairs:
        return new
    file = new.get(LABELS_META_KEY, old.get(LABELS_META_KEY, {})).get("file")
    return {**new, LABELS_META_KEY: {"file": file, "pairs": dict(sorted(pairs.items()))}}


def build_settings(meta: dict) -> dict:
    """What a pairs folder was built with: its meta without the pairs' labels."""
    return {k: v for k, v in meta.items() if k != LABELS_META_KEY}


def atomic_torch_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_json_atomic(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_pair(out_dir: Path, name: str, pair: PairVideos, latents: dict, fps: float, crf: int) -> None:
    """Write the pair's videos and then (last, so its presence means the pair is complete) its latents."""
    from .video_io import write_video

    folder = out_dir / VIDEOS_DIR / name
    write_video(folder / "reference.mp4", pair.reference, fps, crf=crf)
    write_video(folder / "clean.mp4", pair.clean, fps, crf=crf)
    write_video(folder / "heatmap.mp4", pair.heatmap, fps, crf=crf)
    atomic_torch_save(latents, out_dir / LATENTS_DIR / f"{name}.pt")


def save_prompts(out_dir: Path, prompts: dict[str, PromptEmbedding]) -> None:
    atomic_torch_save({k: {"embeds": p.embeds, "mask": p.mask} for k, p in prompts.items()}, out_dir / PROMPTS_FILE)


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class PairsDataset:
    """A pairs folder opened for training: its meta, latent files and prompt embeddings."""

    root: Path
    meta: dict
    files: list[Path]
    prompts: dict[str, PromptEmbedding] | None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        return load_latents(self.files[index])

    def label(self, index: int) -> dict | None:
        """Pair ``index``'s ``{"types", "source", "recipe"}`` from the labels beside its clips, or None."""
        return self.meta.get(LABELS_META_KEY, {}).get("pairs", {}).get(self.files[index].stem)


def load_latents(path: Path) -> dict:
    """One pair's latents (``z_ref``, ``z_clean``, ``z_heatmap``, float32) and its ``fps`` (float)."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    missing = [k for k in LATENT_KEYS if k not in data]
    if missing:
        raise RestorerInputError(
            f"The latent file {path} lacks {missing[0]!r}; rebuild it with aw-make-pairs --overwrite."
        )
    shapes = {tuple(data[k].shape) for k in LATENT_KEYS}
    if len(shapes) != 1:
        raise RestorerInputError(
            f"The latent file {path} holds latents of different shapes {sorted(shapes)}; rebuild it."
        )
    out: dict = {k: data[k].float() for k in LATENT_KEYS}
    if WORLD_MODEL_KEY in data and tuple(data[WORLD_MODEL_KEY].shape) in shapes:
        out[WORLD_MODEL_KEY] = data[WORLD_MODEL_KEY].float()
    out["fps"] = float(data.get("fps", TRAINING_FPS))
    return out


def open_pairs(root: str | os.PathLike, preset: str | None = None) -> PairsDataset:
    """Open a folder written by ``aw-make-pairs``; one sentence when it is missing, empty, old or built for another preset."""
    root = Path(root)
    if not root.is_dir():
        raise RestorerInputError(f"The pairs folder {root} does not exist; build it with aw-make-pairs.")
    meta_path = root / META_FILE
    if not meta_path.exists():
        raise RestorerInputError(f"The folder {root} has no {META_FILE}, so it was not written by aw-make-pairs.")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != PAIRS_FORMAT:
        raise RestorerInputError(
            f"The pairs in {root} have format {meta.get('format')!r}, not {PAIRS_FORMAT!r} (the official T+8 DBA layout); "
            "rebuild them with aw-make-pairs --overwrite."
        )
    if preset is not None and meta.get("preset") != preset:
        raise RestorerInputError(
            f"The pairs in {root} were encoded with the {meta.get('preset')!r} preset's VAE, not {preset!r}; "
            f"rebuild them with aw-make-pairs --preset {preset}."
        )
    files = sorted(p for p in (root / LATENTS_DIR).glob("*.pt") if not p.name.startswith("."))
    if not files:
        raise RestorerInputError(f"The pairs folder {root} contains no training pairs (no {LATENTS_DIR}/*.pt files).")
    prompts = None
    if (root / PROMPTS_FILE).exists():
        data = torch.load(root / PROMPTS_FILE, map_location="cpu", weights_only=True)
        prompts = {k: PromptEmbedding(v["embeds"], v["mask"]) for k, v in data.items()}
    return PairsDataset(root=root, meta=meta, files=files, prompts=prompts)


__all__ = [
    "HEATMAP_METRICS",
    "PairVideos",
    "PairsDataset",
    "build_pair",
    "build_target_video",
    "check_lpips_weights",
    "encode_pair",
    "heatmap_map",
    "heatmap_video",
    "open_pairs",
]
