"""``aw-make-pairs``: clean / degraded video pairs -> LoRA training pairs (see :mod:`artifactworld_ns.restorer.pairs`).

For every ``NAME.mp4`` present in both ``--gt-dir`` (clean) and ``--artifact-dir`` (degraded), a clip of
``T = 8n + 1`` frames, it writes the ``T + 8``-frame DBA reference, clean target and pseudo-GT heatmap
(videos, for inspection) and their latents sampled with ``--preset``'s VAE (for ``aw-train-lora``), plus
the stage prompts' T5 embeddings. Resumable (pairs whose latents exist are skipped), atomic, and split
over the processes of an ``accelerate launch`` / ``torchrun`` job.

When the data engine's ``labels.jsonl`` sits beside the GT folder (``aw-simulate`` writes ``OUT/gt``,
``OUT/artifact`` and ``OUT/labels.jsonl``), each pair's artifact types, source and recipe are kept in the
pairs' ``meta.json`` (:func:`artifactworld_ns.restorer.pairs.pair_labels_meta`); pairs without a record are built as
before.

``--sources DIR [DIR ...]`` (instead of the two folders) reads several such folders at once -- simulated
(``aw-simulate``) and generated (``aw-degrade``) -- keeping each pair's source and types, and leaves out the clips
that ``aw-gate`` dropped (``DIR/gate.jsonl``; :mod:`artifactworld_ns.restorer.flywheel.sources`); a ``gate.jsonl``
beside ``--gt-dir`` is honoured too. The counts per source and per type are printed at the end.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import tyro
from rich.console import Console

from .batch import (
    BatchAbort,
    InputError,
    Outcome,
    VideoPairs,
    pair_videos,
    print_error,
    process_index,
    rank_label,
    require_pair_folders,
    run_batch,
    shard,
)
from .errors import RestorerInputError
from .labels import labels_beside, labels_by_name, read_labels
from .loading import quiet_hub_progress
from .option_checks import check_crf, check_device, check_output_folder
from .untrained import untrained_note
from .video_io import DEFAULT_CRF, read_video


@dataclass
class MakePairsArgs:
    """Build LoRA training pairs (DBA references, clean targets, pseudo-GT heatmaps, cached latents)."""

    gt_dir: Path | None = None
    """Folder of clean videos (benchmark gt/, or a nerfstudio run's held-out GT views); NAME.mp4 pairs with artifact-dir/NAME.mp4."""
    artifact_dir: Path | None = None
    """Folder of degraded videos (benchmark artifact/, or sparse-view renders at the same poses), same names."""
    output_dir: Path | None = None
    """Folder for the training pairs (created if missing); pass it to aw-train-lora --data. Required."""
    heatmap_metric: Literal["lpips", "l1", "ssim"] = "lpips"
    """Pseudo-GT heatmap metric: lpips (the paper's; needs torchvision's AlexNet weights), l1 or ssim (no weights)."""
    preset: Literal["tiny", "full"] = "full"
    """Restorer preset whose VAE encodes the latents and whose processing size the clips are conformed to."""
    device: str | None = None
    """Torch device for the VAE (default: the preset's; full uses cuda when available)."""
    crf: int = DEFAULT_CRF
    """x264 constant rate factor of the written videos (the latents are encoded from the exact frames)."""
    overwrite: bool = False
    """Rebuild pairs whose latents already exist instead of skipping them."""
    seed: int = 42
    """Seed of the VAE posterior sampling (each pair's generator is seeded from it and the pair's name)."""
    sources: tuple[Path, ...] = ()
    """Instead of --gt-dir/--artifact-dir: folders written by aw-simulate or aw-degrade (gt/, artifact/,
    labels.jsonl, gate.jsonl), mixed into one pairs folder; each pair keeps its source and types."""


@dataclass
class _Inputs:
    """What the model-free checks of ``aw-make-pairs`` found: the paired videos and the output's meta."""

    videos: VideoPairs
    models: object
    meta: dict
    meta_path: Path
    unlabelled: list[str] = field(default_factory=list)
    """Pairs without a record in the labels beside the GT folder (empty when there is no label file)."""
    labels_file: Path | list[Path] | None = None
    gated_out: dict[str, str] = field(default_factory=dict)
    """Clips that aw-gate dropped (left out)."""
    extra_notes: list[str] = field(default_factory=list)


def _check_inputs(args: MakePairsArgs) -> _Inputs:
    """Folders, pairing and the output folder's meta, before any model loads; raises :class:`InputError`."""
    from . import pairs as P
    from . import presets as M
    from .flywheel import sources as S

    if args.output_dir is None:
        raise InputError("--output-dir is required: the folder the training pairs are written to.")
    if bool(args.sources) == (args.gt_dir is not None or args.artifact_dir is not None):
        raise InputError("Give either --gt-dir and --artifact-dir, or --sources DIR [DIR ...], not both or neither.")
    if not args.sources and (args.gt_dir is None or args.artifact_dir is None):
        raise InputError("--gt-dir and --artifact-dir go together; give both.")
    if args.sources:
        if any(args.output_dir.resolve() == Path(d).resolve() for d in args.sources):
            raise InputError(f"The output folder {args.output_dir} must differ from every source folder.")
        found = S.collect_sources(list(args.sources))
        videos, records, labels_file = (
            VideoPairs(found.gt, found.artifact, found.names),
            found.records,
            found.label_files,
        )
        gated_out, where, extra_notes = found.gated_out, " ".join(str(d) for d in args.sources), found.unpaired
    else:
        gt_dir, artifact_dir = require_pair_folders(args.gt_dir, args.artifact_dir, args.output_dir)
        videos, where = pair_videos(gt_dir, artifact_dir), f"{gt_dir} and {artifact_dir}"
        labels_file = labels_beside(gt_dir)
        # LabelError: one sentence naming the file and line
        records = labels_by_name(read_labels(labels_file)) if labels_file is not None else {}
        gate_file = gt_dir.parent / S.GATE_FILE
        gate = S.read_gate(gate_file) if gate_file.is_file() else {}
        gated_out = {
            Path(n).stem: str(gate[Path(n).stem].get("reason", ""))
            for n in videos.names
            if not gate.get(Path(n).stem, {"kept": True})["kept"]
        }
        videos.names = [n for n in videos.names if Path(n).stem not in gated_out]
        extra_notes = []
    check_crf(args.crf)
    check_device(args.device)
    check_output_folder(args.output_dir, "--output-dir")
    if args.heatmap_metric == "lpips":
        P.check_lpips_weights()
    if not videos.names:
        raise InputError(f"No same-named mp4 pairs found in {where}, so the dataset would be empty.")
    unlabelled: list[str] = []
    models = M.resolve_preset(args.preset)
    meta = P.pairs_meta(models, args.heatmap_metric, args.seed)
    if labels_file:
        stems = [Path(n).stem for n in videos.names]
        meta[P.LABELS_META_KEY] = P.pair_labels_meta(labels_file, {s: records[s] for s in stems if s in records})
        unlabelled = [n for n in videos.names if Path(n).stem not in records]
    meta_path = args.output_dir / P.META_FILE
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        settings, old_settings = P.build_settings(meta), P.build_settings(old)
        if old_settings != settings and not args.overwrite:
            changed = sorted(k for k in settings if old_settings.get(k) != settings[k])
            raise InputError(
                f"The output folder {args.output_dir} holds pairs built with a different {changed[0]} "
                f"({old.get(changed[0])!r}); use a new folder or --overwrite."
            )
        if old_settings == settings:
            meta = P.merge_pairs_meta(old, meta)  # pairs labelled by an earlier run keep their labels
    return _Inputs(videos, models, meta, meta_path, unlabelled, labels_file, gated_out, extra_notes)


def _skipped_notes(inputs: _Inputs) -> list[str]:
    """One note per unpaired video, and the untrained note on the tiny preset."""
    notes = inputs.videos.unpaired_notes("it was skipped") + inputs.extra_notes
    if inputs.gated_out:
        notes.append(
            f"{len(inputs.gated_out)} clip(s) dropped by aw-gate were left out: {', '.join(sorted(inputs.gated_out))}."
        )
    if inputs.unlabelled:
        notes.append(
            f"{len(inputs.unlabelled)} pair(s) have no record in {inputs.labels_file}, so their artifact types are "
            f"unknown: {', '.join(inputs.unlabelled)}."
        )
    if inputs.models.untrained:
        notes.append(untrained_note("VAE"))
    return notes


def run(args: MakePairsArgs, console: Console | None = None) -> int:
    import torch

    from . import pairs as P
    from . import presets as M

    console = console or Console()
    err_console = Console(stderr=True)
    try:
        inputs = _check_inputs(args)
    except RestorerInputError as err:
        print_error(err_console, str(err))
        return 2
    models = inputs.models
    rank, world = process_index()
    device = torch.device(args.device or models.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        with quiet_hub_progress(enabled=models.untrained):
            vae = M.load_vae(models, device)
            prompts = M.prompt_embeddings(models, device)
    except Exception as err:  # noqa: BLE001 - one sentence, not a traceback
        print_error(err_console, f"The {args.preset} preset's VAE or text encoder could not be loaded: {err}")
        return 1
    header: list[bool] = []

    def write_header() -> None:
        """meta.json and prompts.pt, written with this process's first pair (never for a folder without pairs;
        every process writes the same content atomically)."""
        if not header:
            P.write_json_atomic(inputs.meta_path, inputs.meta)
            P.save_prompts(args.output_dir, prompts)
            header.append(True)

    def work(name: str) -> Outcome:
        stem = Path(name).stem
        if (args.output_dir / P.LATENTS_DIR / f"{stem}.pt").exists() and not args.overwrite:
            write_header()  # the folder holds pairs: its meta takes the labels a later run brings
            return Outcome.SKIPPED
        clean, fps = read_video(inputs.videos.gt[name])
        artifact, _ = read_video(inputs.videos.artifact[name])
        try:
            pair = P.build_pair(
                clean, artifact, args.heatmap_metric, models.processing_max_side, models.processing_size
            )
        except RestorerInputError as err:
            if "AlexNet" in str(err):
                raise BatchAbort(str(err)) from None
            raise
        latents = P.encode_pair(vae, pair, P.pair_generator(stem, args.seed), fps)
        write_header()
        P.write_pair(args.output_dir, stem, pair, latents, fps, args.crf)
        return Outcome.DONE

    label = rank_label(rank, world)
    try:
        result = run_batch(
            "aw-make-pairs",
            shard(inputs.videos.names, rank, world),
            work,
            console=console,
            description=f"aw-make-pairs{label}",
        )
    except BatchAbort as err:
        print_error(err_console, str(err))
        return 2
    if rank == 0:
        result.notes.extend(_skipped_notes(inputs))
    code = result.report(console, label)
    if rank == 0:
        from .flywheel.sources import count_lines

        labels = inputs.meta.get(P.LABELS_META_KEY, {}).get("pairs", {})
        for line in count_lines(labels, [Path(n).stem for n in inputs.videos.names]):
            console.print(f"aw-make-pairs: {line}", highlight=False, markup=False, soft_wrap=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point of ``aw-make-pairs``."""
    return run(tyro.cli(MakePairsArgs, args=argv))


if __name__ == "__main__":
    sys.exit(main())
