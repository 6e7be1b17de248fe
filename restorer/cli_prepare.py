"""``aw-prepare``: turn benchmark GT / artifact video pairs into DBA reference videos.

This is the release's ``tools/process_videos.py`` job. For every ``NAME.mp4`` present in both
``--gt-dir`` and ``--artifact-dir`` it writes ``--output-dir/NAME.mp4`` in the official layout
(Decoupled Boundary Anchoring, paper Eq. 1, :func:`artifactworld_ns.restorer.dba.build_reference_video`): the GT first
frame, the artifact frames ``1 .. T-2``, then the GT last frame 9 times, so a ``T``-frame pair gives a
``T + 8``-frame reference (89 -> 97, the trained length). The outputs are the inputs of ``aw-restore``,
which trims its results back to ``T``.

Resumable (existing outputs are skipped), atomic (no partial files), and splits the pairs across the
processes of an ``accelerate launch`` / ``torchrun`` job.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import tyro
from rich.console import Console

from .batch import (
    Outcome,
    pair_videos,
    print_error,
    process_index,
    rank_label,
    require_pair_folders,
    run_batch,
    shard,
)
from .errors import RestorerInputError
from .option_checks import check_crf, check_output_folder
from .video_io import DEFAULT_CRF, read_video, write_video


@dataclass
class PrepareArgs:
    """Merge same-named GT / artifact mp4 pairs into DBA reference videos for aw-restore."""

    gt_dir: Path
    """Folder of ground-truth videos (the benchmark's gt/ folder); NAME.mp4 pairs with artifact-dir/NAME.mp4."""
    artifact_dir: Path
    """Folder of artifact (degraded) videos with the same file names as the GT videos."""
    output_dir: Path
    """Folder for the reference videos (created if missing); each output keeps its pair's file name."""
    crf: int = DEFAULT_CRF
    """x264 constant rate factor of the written videos (0 = lossless, 18 = visually lossless)."""
    overwrite: bool = False
    """Rewrite outputs that already exist instead of skipping them."""


def prepare_pair(gt_path: Path, artifact_path: Path, out_path: Path, *, crf: int = DEFAULT_CRF) -> None:
    """Build and write the ``T + 8``-frame reference video of one ``T``-frame GT / artifact pair.

    The pair is checked as ``aw-make-pairs`` checks it (:func:`artifactworld_ns.restorer.pairs.check_pair`): same length and
    size, ``T = 8n + 1`` frames, so that the reference is ``8n + 1`` frames too and no later step resamples
    it in time (which would move its tail anchor)."""
    from .dba import build_reference_video
    from .pairs import check_pair

    gt, fps = read_video(gt_path)
    artifact, _ = read_video(artifact_path)
    check_pair(gt, artifact, ("GT", "artifact"))
    reference = build_reference_video(artifact, gt[0], gt[-1])
    write_video(out_path, reference, fps, crf=crf)


def run(args: PrepareArgs, console: Console | None = None) -> int:
    console = console or Console()
    err_console = Console(stderr=True)
    try:
        gt_dir, artifact_dir = require_pair_folders(args.gt_dir, args.artifact_dir, args.output_dir)
        check_crf(args.crf)
        check_output_folder(args.output_dir, "--output-dir")
        rank, world = process_index()
    except RestorerInputError as err:
        print_error(err_console, str(err))
        return 2

    videos = pair_videos(gt_dir, artifact_dir)
    if not videos.names:
        print_error(err_console, f"No same-named mp4 pairs found in {gt_dir} and {artifact_dir}.")
        return 2

    mine = shard(videos.names, rank, world)
    args.output_dir.mkdir(parents=True, exist_ok=True)

    def work(name: str) -> Outcome:
        out_path = args.output_dir / name
        if out_path.exists() and not args.overwrite:
            return Outcome.SKIPPED
        prepare_pair(videos.gt[name], videos.artifact[name], out_path, crf=args.crf)
        return Outcome.DONE

    label = rank_label(rank, world)
    result = run_batch("aw-prepare", mine, work, console=console, description=f"aw-prepare{label}")
    if rank == 0:
        result.notes.extend(videos.unpaired_notes("it was not prepared"))
    return result.report(console, label)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point of ``aw-prepare``."""
    args = tyro.cli(PrepareArgs, args=argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
