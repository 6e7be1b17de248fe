"""Training pairs for the two LoRA adapters (paper Sec. 4.3): DBA references, clean targets, pseudo-GT heatmaps.

A *pair* is a clean video and a degraded (artifact) video of the same camera path, same
length and size: the benchmark's ``gt/`` + ``artifact/`` folders, or a nerfstudio run's
held-out GT views + the sparse-view renders at the same poses. For each pair,
:func:`build_pair` does what the restorer does at inference (``ArtifactRestorer.restore``):

1. conform both videos to the preset's model grid (``8n + 1`` frames, sides multiples of 32,
   ``processing_max_side``) with :func:`restorer.conform.to_model`,
2. build the DBA reference (Eq. 1) from the conformed artifact frames and the clean first /
   last frames with :func:`restorer.dba.build_reference_video`,
3. compute the stage-1 pseudo-GT heatmap between artifact and clean frames
   (:func:`heatmap_map`, LPIPS spatial map by default, as the paper does).

**Heatmap normalization.** Every metric gives a per-pixel distance that is already on a
``[0, 1]``-like scale, and it is clipped to ``[0, 1]`` without per-clip rescaling, so a
heatmap's brightness means the same severity in every clip:

* ``lpips`` -- the LPIPS (AlexNet) spatial map, clipped to ``[0, 1]``;
* ``l1`` -- mean absolute RGB difference per pixel (in ``[0, 1]`` by construction);
* ``ssim`` -- ``(1 - SSIM) / 2`` of torchmetrics' full SSIM map (Gaussian window 11, sigma 1.5),
  channel mean, in ``[0, 1]``.

The DBA anchor frames (frame 0 and the last 8) are set to 0: the reference carries clean
views there, matching ``z_full``'s black boundary frames (:func:`restorer.latents.full_mask_video`).

On-disk layout written by ``aw-make-pairs`` (:func:`write_pair`) and read by ``aw-train-lora``::

    OUT/meta.json                          preset, heatmap metric, processing size, VAE folder
    OUT/videos/NAME/reference.mp4          DBA reference (model grid size)
    OUT/videos/NAME/clean.mp4              clean target
    OUT/videos/NAME/heatmap.mp4            pseudo-GT heatmap (gray)
    OUT/latents/NAME.pt                    z_ref, z_clean, z_heatmap, z_full, z_null (normalized VAE latents)
    OUT/prompts.pt                         the stage prompts' T5 embeddings

The latents are computed with the preset's VAE from the in-memory tensors (not from the
lossy mp4s), so training never runs the VAE or the text encoder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from restorer.conform import plan_conform, to_model
from restorer.dba import ANCHOR_TAIL_FRAMES, anchor_frame_mask, build_reference_video
from restorer.errors import RestorerInputError
from restorer.latents import auxiliary_latents, encode_video, mask_to_video
from restorer.loading import (
    ReleaseRoots,
    cache_dir,
    download_command,
    load_text_encoder,
    resolve_roots,
    text_encoder_identity,
)
from restorer.prompts import STAGE_PROMPTS, PromptEmbedding, cached_prompt_embeddings

HeatmapMetric = Literal["lpips", "l1", "ssim"]
HEATMAP_METRICS = ("lpips", "l1", "ssim")
ALEXNET_WEIGHTS_FILE = "alexnet-owt-7be5be79.pth"
META_FILE = "meta.json"
LATENTS_DIR = "latents"
VIDEOS_DIR = "videos"
PROMPTS_FILE = "prompts.pt"
LATENT_KEYS = ("z_ref", "z_clean", "z_heatmap", "z_full", "z_null")
PAIRS_FORMAT = "artifactworld-pairs-v1"


# ---------------------------------------------------------------------------------------------- presets


@dataclass
class PresetModels:
    """What a preset resolves to for training: its roots and processing settings."""

    name: str
    roots: ReleaseRoots
    processing_max_side: int | None
    max_prompt_tokens: int
    frame_rate: float
    device: str | None
    untrained: bool


def resolve_preset(name: str, **overrides) -> PresetModels:
    """Roots and settings of a restorer preset (``tiny`` builds its untrained release in the cache on first use).

    Unlike inference, training needs only the LTX roots (VAE, text encoder, transformer,
    scheduler), not the released LoRA files.
    """
    from method_configs.restorer_presets import get_preset

    try:
        preset = get_preset(name, **overrides)
    except (KeyError, TypeError) as err:
        raise RestorerInputError(str(err.args[0])) from None
    if preset.build_tiny_release and not any((preset.weights_root, preset.ltx_main_root, preset.ltx_097_dev_root)):
        from restorer.tiny import ensure_tiny_release

        roots = ensure_tiny_release(seed=preset.seed)
    else:
        roots = resolve_roots(preset.weights_root, preset.ltx_main_root, preset.ltx_097_dev_root)
    for what, folder in (("ltx_main", roots.ltx_main / "vae"), ("ltx_main", roots.ltx_main / "text_encoder"),
                         ("ltx_097_dev", roots.ltx_097_dev / "transformer")):
        if not folder.exists():
            root = roots.ltx_main if what == "ltx_main" else roots.ltx_097_dev
            raise RestorerInputError(
                f"The {what} root {root} has no {folder.name}/ folder; fetch it with `{download_command(what, root)}`."
            )
    return PresetModels(
        name=name, roots=roots, processing_max_side=preset.processing_max_side,
        max_prompt_tokens=preset.max_prompt_tokens, frame_rate=preset.frame_rate, device=preset.device,
        untrained=preset.untrained,
    )


def load_vae(models: PresetModels, device: torch.device | str, dtype: torch.dtype = torch.float32):
    """The preset's frozen VAE."""
    from diffusers import AutoencoderKLLTXVideo

    vae = AutoencoderKLLTXVideo.from_pretrained(models.roots.ltx_main, subfolder="vae", torch_dtype=dtype)
    return vae.requires_grad_(False).eval().to(device)


def prompt_embeddings(models: PresetModels, device: torch.device | str = "cpu") -> dict[str, PromptEmbedding]:
    """The stage prompts' T5 embeddings through the restorer's on-disk cache (text encoder loaded at most once)."""
    return cached_prompt_embeddings(
        STAGE_PROMPTS,
        text_encoder_identity(models.roots),
        lambda: load_text_encoder(models.roots, device, torch.float32),
        cache_dir(),
        max_tokens=models.max_prompt_tokens,
    )


# ---------------------------------------------------------------------------------------------- heatmaps


def alexnet_weights_path() -> Path:
    """Where torchvision looks for the AlexNet weights that LPIPS needs."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS_FILE


def check_lpips_weights() -> None:
    """Raise one sentence naming the missing AlexNet weight file and its folder (no download is attempted)."""
    path = alexnet_weights_path()
    if not path.exists():
        raise RestorerInputError(
            f"The LPIPS heatmap needs torchvision's AlexNet weights {ALEXNET_WEIGHTS_FILE}, which is missing: "
            f"put it in {path.parent} (or set TORCH_HOME), or use --heatmap-metric l1 or ssim."
        )


_LPIPS_NET: dict[str, torch.nn.Module] = {}


def _lpips_net() -> torch.nn.Module:
    check_lpips_weights()
    key = str(alexnet_weights_path())
    if key not in _LPIPS_NET:
        from torchmetrics.functional.image.lpips import _NoTrainLpips

        _LPIPS_NET[key] = _NoTrainLpips(net="alex", spatial=True)
    return _LPIPS_NET[key]


@torch.no_grad()
def heatmap_map(
    artifact: Float[Tensor, "frames height width 3"],
    clean: Float[Tensor, "frames height width 3"],
    metric: HeatmapMetric = "lpips",
    chunk: int = 8,
) -> Float[Tensor, "frames height width"]:
    """Per-pixel artifact severity ``[T, H, W]`` in ``[0, 1]`` between artifact and clean frames (see module doc)."""
    if metric not in HEATMAP_METRICS:
        raise RestorerInputError(f"Unknown heatmap metric {metric!r}; choose one of {', '.join(HEATMAP_METRICS)}.")
    if metric == "lpips":
        net = _lpips_net()
    a = artifact.permute(0, 3, 1, 2).float()
    c = clean.permute(0, 3, 1, 2).float()
    maps = []
    for start in range(0, a.shape[0], chunk):
        x, y = a[start : start + chunk], c[start : start + chunk]
        if metric == "l1":
            m = (x - y).abs().mean(dim=1)
        elif metric == "ssim":
            from torchmetrics.functional.image import structural_similarity_index_measure

            _, full = structural_similarity_index_measure(x, y, data_range=1.0, return_full_image=True, reduction="none")
            m = ((1.0 - full) / 2.0).mean(dim=1)
        else:
            m = net(x, y, normalize=True)[:, 0]
        if m.shape[-2:] != x.shape[-2:]:
            m = F.interpolate(m[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        maps.append(m)
    return torch.cat(maps).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------- pairs


@dataclass
class PairVideos:
    """One pair at the model grid size: DBA reference, clean target, pseudo-GT heatmap."""

    reference: Float[Tensor, "frames height width 3"]
    clean: Float[Tensor, "frames height width 3"]
    heatmap: Float[Tensor, "frames height width"]


def check_pair(clean: Tensor, artifact: Tensor) -> None:
    """One sentence when a clean / artifact pair does not match in length or size."""
    if clean.shape[0] != artifact.shape[0]:
        raise RestorerInputError(
            f"The clean video has {clean.shape[0]} frames but the artifact video has {artifact.shape[0]}; "
            "a pair must have the same length."
        )
    if clean.shape[1:] != artifact.shape[1:]:
        raise RestorerInputError(
            f"The clean video is {clean.shape[2]}x{clean.shape[1]} but the artifact video is "
            f"{artifact.shape[2]}x{artifact.shape[1]}; a pair must have the same resolution."
        )
    if clean.shape[0] < ANCHOR_TAIL_FRAMES + 1:
        raise RestorerInputError(
            f"The pair has {clean.shape[0]} frames; DBA needs at least {ANCHOR_TAIL_FRAMES + 1}."
        )


def build_pair(
    clean: Float[Tensor, "frames height width 3"],
    artifact: Float[Tensor, "frames height width 3"],
    metric: HeatmapMetric = "lpips",
    processing_max_side: int | None = None,
) -> PairVideos:
    """Conform a clean / artifact pair to the model grid and build reference, target and heatmap."""
    check_pair(clean, artifact)
    plan = plan_conform(*clean.shape[:3], processing_max_side)
    clean_m = to_model(clean.float().clamp(0, 1), plan)
    artifact_m = to_model(artifact.float().clamp(0, 1), plan)
    reference = build_reference_video(artifact_m, clean_m[0], clean_m[-1])
    heatmap = heatmap_map(artifact_m, clean_m, metric)
    heatmap[anchor_frame_mask(heatmap.shape[0])] = 0.0
    return PairVideos(reference=reference, clean=clean_m, heatmap=heatmap)


@torch.no_grad()
def encode_pair(vae, pair: PairVideos) -> dict[str, Tensor]:
    """The pair's normalized VAE latents (``[1, C, F, h, w]`` each, CPU float32).

    The heatmap is encoded as the restorer encodes heatmaps (gray mask -> 3-channel video);
    ``z_full`` / ``z_null`` are the AATF auxiliary latents for this clip size.
    """
    z_full, z_null = auxiliary_latents(vae, *pair.reference.shape[:3])
    latents = {
        "z_ref": encode_video(vae, pair.reference),
        "z_clean": encode_video(vae, pair.clean),
        "z_heatmap": encode_video(vae, mask_to_video(pair.heatmap)),
        "z_full": z_full,
        "z_null": z_null,
    }
    return {k: v.float().cpu().contiguous() for k, v in latents.items()}


def pairs_meta(models: PresetModels, metric: str) -> dict:
    """What a pairs folder was built with; training checks it against its own preset."""
    return {
        "format": PAIRS_FORMAT,
        "preset": models.name,
        "heatmap_metric": metric,
        "processing_max_side": models.processing_max_side,
        "vae": str((models.roots.ltx_main / "vae").resolve()),
    }


def _atomic_torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def write_pair(out_dir: Path, name: str, pair: PairVideos, latents: dict[str, Tensor], fps: float, crf: int) -> None:
    """Write the pair's videos and then (last, so its presence means the pair is complete) its latents."""
    from restorer.video_io import gray_to_rgb, write_video

    folder = out_dir / VIDEOS_DIR / name
    write_video(folder / "reference.mp4", pair.reference, fps, crf=crf)
    write_video(folder / "clean.mp4", pair.clean, fps, crf=crf)
    write_video(folder / "heatmap.mp4", gray_to_rgb(pair.heatmap), fps, crf=crf)
    _atomic_torch_save(latents, out_dir / LATENTS_DIR / f"{name}.pt")


def save_prompts(out_dir: Path, prompts: dict[str, PromptEmbedding]) -> None:
    _atomic_torch_save({k: {"embeds": p.embeds, "mask": p.mask} for k, p in prompts.items()}, out_dir / PROMPTS_FILE)


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

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return load_latents(self.files[index])


def load_latents(path: Path) -> dict[str, Tensor]:
    data = torch.load(path, map_location="cpu", weights_only=True)
    missing = [k for k in LATENT_KEYS if k not in data]
    if missing:
        raise RestorerInputError(f"The latent file {path} lacks {missing[0]!r}; rebuild it with aw-make-pairs --overwrite.")
    shapes = {tuple(data[k].shape) for k in LATENT_KEYS}
    if len(shapes) != 1:
        raise RestorerInputError(f"The latent file {path} holds latents of different shapes {sorted(shapes)}; rebuild it.")
    return {k: data[k].float() for k in LATENT_KEYS}


def open_pairs(root: str | os.PathLike, preset: str | None = None) -> PairsDataset:
    """Open a folder written by ``aw-make-pairs``; one sentence when it is missing, empty or built for another preset."""
    root = Path(root)
    if not root.is_dir():
        raise RestorerInputError(f"The pairs folder {root} does not exist; build it with aw-make-pairs.")
    meta_path = root / META_FILE
    if not meta_path.exists():
        raise RestorerInputError(f"The folder {root} has no {META_FILE}, so it was not written by aw-make-pairs.")
    meta = json.loads(meta_path.read_text())
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
    "check_lpips_weights",
    "encode_pair",
    "heatmap_map",
    "open_pairs",
    "resolve_preset",
]
