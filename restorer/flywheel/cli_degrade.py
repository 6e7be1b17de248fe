"""``aw-degrade INPUT --output-dir OUT``: clean videos -> degraded clips by the Artifact World Model (paper Sec. 3.3).

    aw-degrade clean/ --output-dir generated --adapter runs/wm/world_model_lora.safetensors --combinations 4 --seed 0
    aw-degrade walk.mp4 --output-dir generated --adapter ... --artifacts "Floaters,Needles"

``INPUT`` is an mp4 or a folder of mp4s. Each video is conformed as training conforms a pair (the preset's model
size; its first ``--clip-frames`` frames, or the longest ``8n + 1`` it has, at most 89), then degraded once per
combination: ``--artifacts LIST`` fixes the types (in an order shuffled per clip), ``--combinations N`` draws N
combinations of 1 to 9 shuffled types per video (N orders of the fixed list with ``--artifacts``); every draw
comes from ``--seed`` and the clip's name. Writes ``aw-simulate``'s layout, so the two merge without conversion::

    OUT/gt/NAME.mp4          the conformed clean clip
    OUT/artifact/NAME.mp4    the generated degraded clip (same frames, same size)
    OUT/labels.jsonl         one label record per clip: source "generated", recipe "world-model", the types in
                             prompt order, params {prompt, seed, adapter, ...}, PSNR / SSIM vs the clean clip
    OUT/records/NAME.json    the same record per clip, written last (a clip with a record is done)

``NAME`` is ``<video stem>__wm<k>``. Resumable (done clips are skipped), atomic (every file is written under a
temporary name, then renamed), and split over the processes of ``torchrun`` / ``accelerate launch``
(``RANK`` / ``WORLD_SIZE``) as ``aw-restore``; each process rewrites ``labels.jsonl`` from every record when it
ends (a rerun after all shards finished writes the complete file).
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro
from rich.console import Console

from ..batch import (
    BatchAbort,
    InputError,
    Outcome,
    Skip,
    list_videos,
    print_error,
    print_note,
    process_index,
    rank_label,
    run_batch,
    shard,
)
from ..errors import RestorerInputError
from ..labels import ClipLabel, LabelError, write_labels
from ..video_io import DEFAULT_CRF
from .combinatorics import fixed_combination, keyed_generator, plan_combinations, world_model_prompt
from .world_model import WORLD_MODEL_BASES, WORLD_MODEL_RECIPE

RECORDS_DIR = "records"
DEFAULT_MAX_CLIP_FRAMES = 89
"""The clip length the restorer was trained on (the release's 89 frames), the default cap."""


@dataclass
class DegradeArgs:
    """Generate degraded clips from clean videos with the world-model LoRA (aw-simulate's layout and labels)."""

    input: tyro.conf.Positional[Path]
    """A clean mp4, or a folder of them."""
    output_dir: Path
    """Where gt/, artifact/, labels.jsonl and records/ go (created if missing)."""
    adapter: Path
    """The world-model LoRA (aw-train-lora --stage world-model: world_model_lora.safetensors)."""
    preset: Literal["full", "tiny"] = "full"
    """full = LTX-Video 0.9.8-distilled 2B (--world-model-base) with the LTX-Video VAE; tiny = the untrained CPU model."""
    artifacts: str | None = None
    """A fixed combination, e.g. "Floaters,Needles" (any case; the labeler's Floater, Crack, Color too)."""
    combinations: int = 1
    """Clips per video: N random combinations of 1 to 9 types (or N orders of --artifacts)."""
    seed: int = 0
    """Seeds every draw: the combinations, their orders and each clip's sampling noise."""
    clip_frames: int | None = None
    """Frames per clip (8n + 1); default: the longest 8n + 1 the video has, at most 89."""
    world_model_base: Literal["2b", "13b"] = "2b"
    """The base the adapter was trained on (aw-train-lora --world-model-base)."""
    steps: int = 8
    """Euler steps (8 on LTX's linear-quadratic sigmas, as the distilled base and the restorer)."""
    device: str | None = None
    """Torch device (default: the preset's; full uses cuda when available)."""
    crf: int = DEFAULT_CRF
    overwrite: bool = False
    """Redo clips that are already done."""
    allow_download: bool = False
    """Fetch missing LTX-Video files (tokenizer, text encoder, VAE and only the base's single file) from the hub."""


@dataclass(frozen=True)
class Planned:
    name: str
    video: Path
    types: tuple[str, ...]
    seed: int

    def __str__(self) -> str:
        return self.name


def plan(videos: list[Path], artifacts: str | None, combinations: int, seed: int) -> list[Planned]:
    """Every clip of the run, the same in every shard and rerun (draws keyed by ``seed`` and names)."""
    items = []
    for video in videos:
        if artifacts is None:
            combos = plan_combinations(seed, video.stem, combinations)
        else:
            combos = [fixed_combination(artifacts, seed, f"{video.stem}#{k}") for k in range(combinations)]
        for k, types in enumerate(combos):
            name = f"{video.stem}__wm{k:02d}"
            clip_seed = int(torch_randint(keyed_generator(seed, name)))
            items.append(Planned(name, video, tuple(types), clip_seed))
    return items


def torch_randint(generator) -> int:
    import torch

    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def _inputs(args: DegradeArgs) -> list[Path]:
    from ..option_checks import check_at_least, check_crf, check_device, check_output_folder

    if not args.input.exists():
        raise InputError(f"The input {args.input} does not exist.")
    videos = [args.input] if args.input.is_file() else list_videos(args.input)
    if args.input.is_file() and args.input.suffix.lower() != ".mp4":
        raise InputError(f"The input {args.input} is not an mp4 video.")
    if not videos:
        raise InputError(f"The folder {args.input} holds no mp4 video.")
    if not args.adapter.is_file():
        raise InputError(
            f"The world-model adapter {args.adapter} does not exist; train it with aw-train-lora --stage world-model."
        )
    check_at_least("--combinations", args.combinations, 1)
    check_at_least("--steps", args.steps, 1)
    if args.clip_frames is not None:
        from ..dba import check_clip_length

        check_clip_length(args.clip_frames)
    check_crf(args.crf)
    check_device(args.device)
    check_output_folder(args.output_dir, "--output-dir")
    if args.output_dir.resolve() == (args.input if args.input.is_dir() else args.input.parent).resolve():
        raise InputError(f"The output folder {args.output_dir} must differ from the input folder.")
    return videos


def _check_adapter(path: Path) -> None:
    """One sentence unless the file holds LoRA weights (checked before any model loads)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..lora import parse_lora_state_dict

    try:
        parse_lora_state_dict(load_file(str(path)), f"adapter {path}")
    except (SafetensorError, OSError, ValueError) as err:
        if isinstance(err, RestorerInputError):
            raise
        raise InputError(f"The adapter {path} is not a safetensors LoRA file ({err}).") from None


def resolve_models(args: DegradeArgs):
    """The preset's roots with the world model's base; fetches only the needed files with --allow-download."""
    from ..presets import resolve_preset
    from .world_model import fetch_world_model_roots

    base = WORLD_MODEL_BASES[args.world_model_base]
    try:
        return resolve_preset(args.preset, base)
    except RestorerInputError:
        if not args.allow_download or args.preset == "tiny":
            raise
    fetch_world_model_roots(base)
    return resolve_preset(args.preset, base)


def _record(
    item: Planned, args: DegradeArgs, clip_frames: int, fps: float, metrics: dict, untrained: bool
) -> ClipLabel:
    return ClipLabel(
        name=item.name,
        types=list(item.types),
        source="generated",
        recipe=WORLD_MODEL_RECIPE,
        params={
            "prompt": world_model_prompt(item.types),
            "type_order": list(item.types),
            "seed": item.seed,
            "run_seed": args.seed,
            "adapter": str(args.adapter.resolve()),
            "preset": args.preset,
            "base": args.world_model_base,
            "steps": args.steps,
            "fps": fps,
            "untrained_backbone": untrained,
        },
        scene=str(item.video),
        frame_indices=list(range(clip_frames)),
        metrics=metrics,
    )


def merge_records(out: Path) -> int:
    """Rewrite ``OUT/labels.jsonl`` from every finished clip's record; returns how many."""
    labels = []
    for path in sorted((out / RECORDS_DIR).glob("*.json")):
        if not path.name.startswith("."):
            labels.append(ClipLabel.from_dict(json.loads(path.read_text()), where=str(path)))
    if labels:
        write_labels(out / "labels.jsonl", labels)
    return len(labels)


def run(args: DegradeArgs, console: Console | None = None) -> int:
    import torch

    console = console or Console()
    err_console = Console(stderr=True)
    try:
        videos = _inputs(args)
        items = plan(videos, args.artifacts, args.combinations, args.seed)
        _check_adapter(args.adapter)
        models = resolve_models(args)
    except (InputError, RestorerInputError) as err:
        print_error(err_console, str(err))
        return 2
    rank, world = process_index()
    mine = shard(items, rank, world)
    out = args.output_dir
    todo = [i for i in mine if args.overwrite or not (out / RECORDS_DIR / f"{i.name}.json").exists()]
    if models.untrained:
        from ..untrained import untrained_note

        print_note(err_console, untrained_note("world model"))
    model, prompts = None, {}
    if todo:
        from ..loading import default_dtype, quiet_hub_progress
        from .world_model import encode_prompts, load_world_model

        device = torch.device(args.device or models.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            with quiet_hub_progress(enabled=models.untrained):
                model = load_world_model(models, args.adapter, device, default_dtype(device), args.steps)
                texts = sorted({world_model_prompt(i.types) for i in todo})
                prompts = encode_prompts(models, texts, device)
        except RestorerInputError as err:
            print_error(err_console, str(err))
            return 2
        except Exception as err:  # noqa: BLE001 - one sentence, not a traceback
            print_error(err_console, f"The world model could not be loaded: {err}")
            return 1

    @functools.lru_cache(maxsize=1)  # a video's combinations are planned one after another: decode it once
    def clean_clip(video: Path) -> tuple[torch.Tensor, float, int]:
        from ..dba import largest_clip_length
        from ..pairs import conform_space
        from ..video_io import read_video

        clean, fps = read_video(video)
        frames = args.clip_frames or largest_clip_length(min(clean.shape[0], DEFAULT_MAX_CLIP_FRAMES))
        if clean.shape[0] < frames:
            raise InputError(f"the video has {clean.shape[0]} frames, fewer than the {frames} of a clip")
        return conform_space(clean[:frames], models.processing_max_side, models.processing_size), fps, frames

    def work(item: Planned) -> Outcome | Skip:
        from ..video_io import write_video
        from .gate import clip_measures

        record = out / RECORDS_DIR / f"{item.name}.json"
        if record.exists() and not args.overwrite:
            return Outcome.SKIPPED
        clean, fps, frames = clean_clip(item.video)
        degraded = model.degrade(clean, prompts[world_model_prompt(item.types)], item.seed)
        if not torch.isfinite(degraded).all():
            raise BatchAbort(
                f"the world model produced non-finite frames for {item.name}; check the adapter {args.adapter}"
            )
        measures = clip_measures(degraded, clean, lpips=False)
        metrics = {"psnr": measures["psnr"], "ssim": measures["ssim"]}
        write_video(out / "gt" / f"{item.name}.mp4", clean, fps, crf=args.crf)
        write_video(out / "artifact" / f"{item.name}.mp4", degraded, fps, crf=args.crf)
        label = _record(item, args, frames, fps, metrics, models.untrained)
        from ..atomic import atomic_path

        with atomic_path(record) as tmp:
            tmp.write_text(json.dumps(label.to_dict(), allow_nan=False) + "\n")
        return Outcome.DONE

    label = rank_label(rank, world)
    try:
        result = run_batch("aw-degrade", mine, work, name=str, console=console, description=f"aw-degrade{label}")
    except BatchAbort as err:
        print_error(err_console, str(err))
        return 1
    try:
        count = merge_records(out)
    except LabelError as err:
        print_error(err_console, str(err))
        return 2
    code = result.report(console, label)
    console.print(
        f"aw-degrade{label}: {out / 'labels.jsonl'} holds {count} generated clips.", highlight=False, markup=False
    )
    return code


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point of ``aw-degrade``."""
    return run(tyro.cli(DegradeArgs, args=argv))


if __name__ == "__main__":
    sys.exit(main())
