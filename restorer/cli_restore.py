"""``aw-restore``: run both ArtifactWorld stages on every reference video of a folder.

Each ``INPUT/NAME.mp4`` is a prepared ``T + 8``-frame reference video (``aw-prepare``, the official
DBA layout: GT first frame, artifact frames, GT last frame 9 times). Stage 1 predicts the artifact
heatmap and writes it as the official stage-1 script does, to ``OUTPUT/heatmaps/NAME.mp4``: RGB as
decoded, ``T + 8`` frames, the last 9 black (bright = severe). Stage 2 (AATF) restores the clip and
writes ``OUTPUT/samples/NAME.mp4``, trimmed back to the clip's ``T`` frames. Both keep the input's
name, resolution and frame rate.

An input whose last 9 frames are not one frame repeated is a plain clip, not a reference
(:func:`artifactworld_ns.restorer.dba.has_anchor_tail`): it is restored whole, with its own first and last frames as the
DBA anchors (weaker than ground-truth anchors), and its sample keeps all of its frames.

``--heatmap-folder`` reuses existing stage-1 heatmaps (as the release's stage-2 script does with
``--noisemap-videos-folder``); ``--heatmap-only`` runs stage 1 alone. Outputs already present are
skipped, so an interrupted run resumes where it stopped; each output's settings are kept beside it
(``NAME.settings.json``, :mod:`artifactworld_ns.restorer.output_settings`), and an output made with other settings is
skipped with the difference named (``--overwrite`` redoes it). Outputs, the device and the numeric
options are checked before anything loads. Under ``accelerate launch`` or ``torchrun`` the sorted file
list is split by index over the processes (``RANK`` / ``WORLD_SIZE``), each process using the GPU of
its ``LOCAL_RANK``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional

import tyro
from rich.console import Console

from .batch import (
    BatchAbort,
    InputError,
    Outcome,
    Skip,
    StepProgress,
    list_videos,
    local_rank,
    print_error,
    print_note,
    process_index,
    rank_label,
    require_folder,
    run_batch,
    shard,
)
from .dba import (
    ANCHOR_TAIL_FRAMES,
    MIN_CLIP_FRAMES,
    build_reference_video,
    clip_length,
    has_anchor_tail,
    is_clip_length,
    nearest_clip_length,
    trim_to_clip,
)
from .errors import RestorerInputError
from .option_checks import (
    check_at_least,
    check_crf,
    check_device,
    check_output_folder,
    check_processing_max_side,
    describe_os_error,
)
from .output_settings import describe_change, read_settings, write_settings
from .presets import get_preset
from .untrained import announce_untrained
from .video_io import DEFAULT_CRF, read_video, write_video

if TYPE_CHECKING:
    from torch import Tensor

HEATMAPS_DIR = "heatmaps"
SAMPLES_DIR = "samples"


@dataclass
class RestoreArgs:
    """Restore every prepared reference video in a folder with the two ArtifactWorld stages."""

    input_folder: Path
    """Folder of T+8-frame reference videos (*.mp4, made by aw-prepare): GT first frame, artifact frames, GT last frame x 9. A plain clip (last 9 frames not one frame) is restored whole with its own first and last frames as anchors."""
    output_folder: Path
    """Output folder: restored clips go to OUTPUT/samples/NAME.mp4, stage-1 heatmaps to OUTPUT/heatmaps/NAME.mp4."""
    preset: Literal["tiny", "full"] = "full"
    """Restorer preset: 'full' is LTX-Video 13B with the released LoRAs; 'tiny' is a small random-init (untrained) model for CPU smoke tests."""
    weights_root: Optional[Path] = None
    """Folder with the ArtifactWorld LoRAs and auxiliary_latents/ (default: $ARTIFACTWORLD_WEIGHTS_ROOT, else the cache)."""
    ltx_main_root: Optional[Path] = None
    """Root of Lightricks/LTX-Video with tokenizer/, text_encoder/, vae/ and ltxv-13b-0.9.8-distilled.safetensors (default: $ARTIFACTWORLD_LTX_MAIN_ROOT, else the cache)."""
    ltx_097_dev_root: Optional[Path] = None
    """Only for --transformer-source 0.9.7-dev: root of Lightricks/LTX-Video-0.9.7-dev with its transformer/ (default: $ARTIFACTWORLD_LTX_097_DEV_ROOT, else the cache)."""
    transformer_source: Literal["0.9.8-distilled", "0.9.7-dev"] = "0.9.8-distilled"
    """Base transformer: 0.9.8-distilled (official, the single file in the LTX-Video root) or the 0.9.7-dev sharded transformer."""
    steps: Optional[int] = None
    """Euler sampling steps of both stages (default: the preset's, 8). The official heatmap blend table is scaled to this count; an explicit blend table must have as many rows."""
    heatmap_steps: Optional[int] = None
    """Euler sampling steps of stage 1 only; overrides --steps for stage 1."""
    seed: Optional[int] = None
    """Random seed of each stage's generator (default: the preset's, 42 as the official configs)."""
    processing_max_side: Optional[int] = None
    """Process at the native size capped to this long side instead of the official 960x544 (outputs are resized back)."""
    download: bool = False
    """Download missing weights from the Hugging Face hub (only the needed files; honours HF_HOME and HF_HUB_OFFLINE)."""
    device: Optional[str] = None
    """Torch device, e.g. cuda:0 or cpu (default: the tiny preset uses cpu; full uses cuda:LOCAL_RANK when CUDA is available, else cpu)."""
    profile: Optional[Literal["80gb", "40gb", "24gb"]] = None
    """GPU memory profile: 80gb, 40gb or 24gb chooses transformer offload and VAE tiling (bf16 weights in all three) for a GPU of that size (see docs/restorer.md, "Which GPU do I need"); prints the predicted peak and refuses a smaller GPU (default: everything resident, as 80gb)."""
    force: bool = False
    """Run --profile even when the detected GPU is smaller than its predicted peak."""
    heatmap_folder: Optional[Path] = None
    """Reuse stage-1 heatmap videos from this folder (NAME.mp4 directly in it or in its heatmaps/ subfolder) instead of predicting them; only samples are written."""
    heatmap_only: bool = False
    """Run stage 1 only and write OUTPUT/heatmaps/NAME.mp4 (like the release's stage-1 script)."""
    crf: int = DEFAULT_CRF
    """x264 constant rate factor of the written videos (0 = lossless, 18 = visually lossless)."""
    overwrite: bool = False
    """Recompute outputs that already exist instead of skipping them (also those made with other settings)."""


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{local_rank() % max(torch.cuda.device_count(), 1)}"
    return "cpu"


def restorer_overrides(args: RestoreArgs) -> dict[str, Any]:
    """Keyword overrides for ``ArtifactRestorer.from_preset`` from the flags the user set."""
    overrides: dict[str, Any] = {}
    for key in ("weights_root", "ltx_main_root", "ltx_097_dev_root"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = str(value)
    if args.steps is not None:
        overrides["num_inference_steps"] = args.steps
        overrides["heatmap_steps"] = args.steps
    if args.heatmap_steps is not None:
        overrides["heatmap_steps"] = args.heatmap_steps
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.processing_max_side is not None:
        overrides["processing_max_side"] = args.processing_max_side
        overrides["processing_size"] = None
    if args.transformer_source != "0.9.8-distilled":
        overrides["transformer_source"] = args.transformer_source
    if args.download:
        overrides["allow_download"] = True
    if args.profile is not None:
        overrides["memory_profile"] = args.profile
        overrides["force_memory_profile"] = args.force
    if args.device is not None:
        overrides["device"] = args.device
    elif args.preset != "tiny":
        overrides["device"] = default_device()
    return overrides


def load_restorer(args: RestoreArgs, progress: Callable[[str, int, int], None] | None = None):
    """Build the restorer of ``args.preset`` (loads the backbone once for both stages)."""
    from .pipeline import ArtifactRestorer

    return ArtifactRestorer.from_preset(args.preset, progress=progress, **restorer_overrides(args))


def find_heatmap(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / HEATMAPS_DIR / name):
        if candidate.is_file():
            return candidate
    raise InputError(f"No heatmap video {name} in {folder} (nor in {folder / HEATMAPS_DIR}).")


def load_heatmap(path: Path, frames: int, height: int, width: int):
    """Read a stage-1 heatmap video as ``[F, H, W, 3]`` in ``[0, 1]`` (RGB, as the official stage 2 reads
    it), resized to the reference's resolution."""
    from .conform import resize_frames

    video, _ = read_video(path)
    if video.shape[0] != frames:
        raise InputError(f"The heatmap video {path} has {video.shape[0]} frames but its reference video has {frames}.")
    if video.shape[1:3] != (height, width):
        video = resize_frames(video, height, width).clamp(0.0, 1.0)
    return video


def check_options(args: RestoreArgs) -> None:
    """Every flag that needs no model, the device and the output folder (writable, not a full disk): checked
    before anything loads (raises :class:`RestorerInputError`)."""
    if args.heatmap_folder is not None:
        require_folder(args.heatmap_folder, "heatmap folder (--heatmap-folder)")
        if args.heatmap_only:
            raise InputError("--heatmap-only and --heatmap-folder cannot be used together.")
    for flag, value in (("--steps", args.steps), ("--heatmap-steps", args.heatmap_steps)):
        check_at_least(flag, value, 1)
    check_processing_max_side(args.processing_max_side)
    check_crf(args.crf)
    check_device(args.device)
    check_output_folder(args.output_folder, "--output-folder")


def input_videos(args: RestoreArgs) -> list[Path]:
    """The reference videos to restore, after :func:`check_options` (raises InputError / RestorerInputError)."""
    input_folder = require_folder(args.input_folder, "input folder (--input-folder)")
    check_options(args)
    files = list_videos(input_folder)
    if not files:
        raise InputError(f"The input folder {input_folder} contains no .mp4 videos.")
    return files


def output_settings(args: RestoreArgs) -> tuple[dict[str, Any], dict[str, Any]]:
    """What this run's heatmaps and samples are made with, by flag, with the preset's defaults filled in
    (recorded beside each output, :mod:`artifactworld_ns.restorer.output_settings`)."""
    numeric = {"num_inference_steps", "heatmap_steps", "seed", "processing_max_side", "processing_size"}
    preset = get_preset(
        args.preset,
        transformer_source=args.transformer_source,
        **{k: v for k, v in restorer_overrides(args).items() if k in numeric},
    )
    common = {
        "--preset": args.preset,
        "--transformer-source": preset.transformer_source,
        "--weights-root": None if args.weights_root is None else str(args.weights_root),
        "--seed": preset.seed,
        "--processing-max-side": preset.processing_max_side if preset.processing_size is None else None,
        "--crf": args.crf,
    }
    heatmap = {**common, "--heatmap-steps": preset.heatmap_steps}
    sample = {
        **common,
        "--steps": preset.num_inference_steps,
        "--heatmap-steps": None if args.heatmap_folder is not None else preset.heatmap_steps,
        "--heatmap-folder": None if args.heatmap_folder is None else str(args.heatmap_folder),
    }
    return heatmap, sample


def existing_output(output: Path, settings: dict[str, Any], overwrite: bool, what: str = "it") -> Outcome | Skip | None:
    """None when ``output`` must be computed; a quiet skip when it exists with these settings (or unrecorded
    ones); a :class:`Skip` naming the difference when it was made with other settings."""
    if overwrite or not output.exists():
        return None
    change = describe_change(read_settings(output), settings)
    if change is None:
        return Outcome.SKIPPED
    return Skip(f"{what} was made with {change}; pass --overwrite to redo it")


@dataclass
class ModelInput:
    """What the restorer gets for one input video, and how its sample is cut back."""

    reference: Tensor
    """The reference in the official layout, ``T' + 8`` frames."""
    clip_frames: int
    """``T'``: the restored frames kept (the rest is the anchor tail)."""
    out_frames: int
    """Frames of the written sample (a plain clip keeps its own count; ``T'`` is resampled back to it)."""
    plain: bool
    """True for a plain clip: its own first and last frames are the anchors."""


def model_input(name: str, video: Tensor, console: Console) -> ModelInput:
    """A prepared reference as it is, or a plain clip laid out as one with its own first and last frames as
    anchors (DBA, Eq. 1; weaker than ground-truth anchors). Refuses a clip of fewer than 2 frames."""
    from .conform import resample_indices

    frames = int(video.shape[0])
    if frames < 2:
        raise InputError(
            f"{name} has {frames} frame; the restorer needs a clip of at least 2 frames "
            "(8n + 1, e.g. 17, 33 or 89, is used as is)."
        )
    if has_anchor_tail(video):
        if not is_clip_length(frames) or frames < MIN_CLIP_FRAMES + ANCHOR_TAIL_FRAMES:
            print_note(
                console,
                f"{name} has {frames} frames, not 8n + 1 >= 17; it is resampled in time, which moves its tail "
                "anchor (aw-prepare writes T + 8 = 8n + 1 frames, e.g. 97 for the benchmark's 89-frame clips).",
            )
        return ModelInput(video, clip_length(frames), clip_length(frames), plain=False)
    clip_frames = nearest_clip_length(frames)
    clip = video if clip_frames == frames else video[resample_indices(frames, clip_frames)]
    return ModelInput(build_reference_video(clip, clip[0], clip[-1]), clip_frames, frames, plain=True)


def plain_clips_note(names: list[str]) -> str:
    listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"{len(names)} input(s) are plain clips, not aw-prepare references (their last 9 frames are not one frame "
        f"repeated): {listed}; each was restored whole with its own first and last frames as anchors, which is "
        "weaker than ground-truth anchors (docs/restorer.md, 'A clip without ground truth')."
    )


def run(args: RestoreArgs, console: Console | None = None) -> int:
    console = console or Console()
    err_console = Console(stderr=True)
    try:
        rank, world = process_index()
        files = input_videos(args)
    except RestorerInputError as err:
        print_error(err_console, str(err))
        return 2

    mine = shard(files, rank, world)
    label = rank_label(rank, world)
    heat_dir = args.output_folder / HEATMAPS_DIR
    sample_dir = args.output_folder / SAMPLES_DIR
    heat_settings, sample_settings = output_settings(args)
    plain: list[str] = []

    if args.preset == "tiny":
        print_note(console, announce_untrained("model"))
    step_progress = StepProgress()
    loaded: list[Any] = []

    def get_restorer():
        """Load the model on first use, so a resumed run with nothing to do never loads it; a failed load
        stops the batch with one sentence (not once per file)."""
        if not loaded:
            console.print(f"Loading the '{args.preset}' restorer{label}...", highlight=False, markup=False)
            try:
                restorer = load_restorer(args, progress=step_progress)
                if not args.heatmap_only:
                    check_schedule(restorer)
            except RestorerInputError as err:
                raise BatchAbort(str(err)) from None
            except Exception as err:  # noqa: BLE001 - one sentence, once, instead of a failure per file
                reason = describe_os_error(err) or f"{type(err).__name__}: {err}"
                raise BatchAbort(f"The '{args.preset}' restorer could not be loaded ({reason}).") from None
            loaded.append(restorer)
        return loaded[0]

    def work(path: Path) -> Outcome | Skip:
        name = path.name
        if args.heatmap_only:
            done = existing_output(heat_dir / name, heat_settings, args.overwrite)
        else:
            done = existing_output(sample_dir / name, sample_settings, args.overwrite)
            if done is None and args.heatmap_folder is None:  # stage 1 of an earlier run is reused: same settings?
                stale = existing_output(heat_dir / name, heat_settings, args.overwrite, what="its heatmap")
                done = stale if isinstance(stale, Skip) else None
        if done is not None:
            return done
        video, fps = read_video(path)
        given = model_input(name, video, console)
        if given.plain:
            plain.append(name)
        heatmap = stage1_heatmap(args, heat_dir / name, given.reference, fps, get_restorer, heat_settings)
        if args.heatmap_only:
            return Outcome.DONE
        result = get_restorer().restore_reference(given.reference, heatmap=heatmap)
        check_shape("restored clip", tuple(result.frames.shape), tuple(given.reference.shape))
        restored = trim_to_clip(result.frames, given.clip_frames)
        if given.out_frames != given.clip_frames:
            from .conform import resample_indices

            restored = restored[resample_indices(given.clip_frames, given.out_frames)]
        write_settings(sample_dir / name, sample_settings)
        write_video(sample_dir / name, restored, fps, crf=args.crf)
        return Outcome.DONE

    try:
        result = run_batch(
            "aw-restore",
            mine,
            work,
            name=lambda p: p.name,
            console=console,
            description=f"aw-restore{label}",
            on_start=step_progress.attach,
        )
    except BatchAbort as err:
        print_error(err_console, str(err))
        return 2
    if plain:
        result.notes.append(plain_clips_note(plain))
    return result.report(console, label)


def stage1_heatmap(
    args: RestoreArgs, heat_out: Path, reference: Tensor, fps: float, get_restorer, settings: dict[str, Any]
) -> Tensor:
    """The clip's stage-2 heatmap: from --heatmap-folder, from an earlier run (resume), or predicted by stage 1
    and written to ``heat_out`` (with its settings beside it)."""
    frames, height, width, _ = reference.shape
    if args.heatmap_folder is not None:
        return load_heatmap(find_heatmap(args.heatmap_folder, heat_out.name), frames, height, width)
    if heat_out.exists() and not args.overwrite:  # resume: stage 1 finished in an earlier run
        return load_heatmap(heat_out, frames, height, width)
    from .pipeline import hand_off_heatmap

    heatmap = hand_off_heatmap(get_restorer().predict_heatmap(reference))
    check_shape("heatmap", tuple(heatmap.shape), (frames, height, width, 3))
    write_settings(heat_out, settings)
    write_video(heat_out, heatmap, fps, crf=args.crf)
    return heatmap


def check_schedule(restorer) -> None:
    """Fail before the batch when stage 2's per-step blend table does not match its step count."""
    settings = getattr(restorer, "settings", None)
    rows = getattr(getattr(settings, "schedule", None), "rows", None)
    steps = getattr(settings, "num_inference_steps", None)
    if rows is not None and steps is not None and len(rows) != steps:
        raise InputError(
            f"Stage 2 runs {steps} steps but its heatmap blend table has {len(rows)} rows; "
            f"use --steps {len(rows)} (--heatmap-steps changes stage 1 alone)."
        )


def check_shape(what: str, got: tuple, want: tuple) -> None:
    if tuple(got) != tuple(want):
        raise RuntimeError(f"The restorer returned a {what} of shape {got}, expected {want}.")


INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report it."""


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point of ``aw-restore``; Ctrl-C stops it with one line and exit status 130 (outputs
    are written atomically: finished ones stay, the one in progress leaves nothing)."""
    try:
        return run(tyro.cli(RestoreArgs, args=argv))
    except KeyboardInterrupt:
        print(
            "aw-restore: interrupted; finished outputs are kept, rerun the same command to continue.",
            file=sys.stderr,
        )
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
