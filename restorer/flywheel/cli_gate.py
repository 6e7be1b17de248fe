"""``aw-gate OUT [--labels-json FILE]``: keep only the clips whose degradation is confirmed (paper Sec. 3.3).

    aw-gate generated                                  # the metric gate: PSNR/SSIM/LPIPS bands, temporal check
    aw-gate generated --labels-json q_align.json       # the official Q-Align labeler's answers (tools/infer_q_align.py)

``OUT`` is a folder written by ``aw-degrade`` or ``aw-simulate`` (``gt/``, ``artifact/``, ``labels.jsonl``).
Writes ``OUT/gate.jsonl`` (atomically): one record per clip, kept or dropped, the judge and the reason
(:mod:`.gate`). ``aw-make-pairs`` leaves the dropped clips out. A clip that cannot be judged (unreadable video,
no labeler entry) is dropped, listed at the end, and the exit status is 2.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import tyro
from rich.console import Console

from ..batch import InputError, Outcome, pair_videos, print_error, run_batch
from ..errors import RestorerInputError
from ..labels import LABELS_FILE, labels_by_name, read_labels
from . import gate as G


@dataclass
class GateArgs:
    """Keep only the generated (or simulated) clips whose degradation is confirmed; writes OUT/gate.jsonl."""

    out: tyro.conf.Positional[Path]
    """A folder written by aw-degrade or aw-simulate (gt/, artifact/, labels.jsonl)."""
    labels_json: Path | None = None
    """The official Q-Align labeler's output (tools/infer_q_align.py; weights buaadwxl/Q-Align-Artifacts); without
    it the model-free metric gate judges."""
    threshold: float = G.DEFAULT_THRESHOLD
    """Q-Align: every requested type must be answered Yes with prob_yes at least this."""
    psnr_band: tuple[float, float] = G.DEFAULT_PSNR_BAND
    """Metric gate: PSNR (dB) of artifact vs clean must lie in this band (above: too weak; below: destructive)."""
    ssim_band: tuple[float, float] = G.DEFAULT_SSIM_BAND
    lpips_band: tuple[float, float] = G.DEFAULT_LPIPS_BAND
    """Applied when torchvision's AlexNet weights are on the machine (as aw-eval's LPIPS)."""
    max_excess_jump: float = G.DEFAULT_MAX_EXCESS_JUMP
    """Temporal check: largest frame-to-frame change (mean |difference|, 0-1) beyond the clean clip's."""
    max_frame_drop: float = G.DEFAULT_MAX_FRAME_DROP
    """Temporal check: no frame's PSNR more than this many dB below the clip's median."""


def _check(args: GateArgs):
    """Everything that needs no video decoded: folders, labels, the labeler file, the options."""
    from ..batch import require_folder

    out = require_folder(args.out, "folder OUT")
    if not (out / "gt").is_dir() or not (out / "artifact").is_dir():
        raise InputError(
            f"The folder {out} has no gt/ and artifact/ folders; give a folder written by aw-degrade or aw-simulate."
        )
    videos = pair_videos(out / "gt", out / "artifact")
    if not videos.names:
        raise InputError(f"The folder {out} holds no clip with both gt/NAME.mp4 and artifact/NAME.mp4.")
    for flag, (low, high) in (
        ("--psnr-band", args.psnr_band),
        ("--ssim-band", args.ssim_band),
        ("--lpips-band", args.lpips_band),
    ):
        if not low < high:
            raise InputError(f"{flag} needs LOW < HIGH, got {low:g} {high:g}.")
    if not 0 <= args.threshold <= 1:
        raise InputError(f"--threshold must be a probability between 0 and 1, got {args.threshold:g}.")
    labels = labels_by_name(read_labels(out / LABELS_FILE)) if (out / LABELS_FILE).is_file() else {}
    judgements = None
    if args.labels_json is not None:
        if not labels:
            raise InputError(
                f"The Q-Align gate needs {out / LABELS_FILE} (each clip's requested types), and there is none."
            )
        from .qalign import match_clips, read_qalign_labels

        judgements = match_clips(read_qalign_labels(args.labels_json), [Path(n).stem for n in videos.names])
    return out, videos, labels, judgements


def run(args: GateArgs, console: Console | None = None) -> int:
    console = console or Console()
    err_console = Console(stderr=True)
    try:
        out, videos, labels, judgements = _check(args)
    except (InputError, RestorerInputError) as err:
        print_error(err_console, str(err))
        return 2
    records: list[G.GateRecord] = []
    notes: list[str] = []
    bands = G.MetricBands(args.psnr_band, args.ssim_band, args.lpips_band, args.max_excess_jump, args.max_frame_drop)
    lpips = False
    if judgements is None:
        from ..pseudo_heatmaps import missing_alexnet_weights

        missing = missing_alexnet_weights()
        lpips = missing is None
        if missing:
            notes.append(f"LPIPS was not measured ({missing}); the PSNR and SSIM bands and the temporal check judged.")
    matched, stray = judgements if judgements is not None else ({}, [])

    def work(name: str) -> Outcome:
        from ..video_io import read_video

        stem = Path(name).stem
        types = list(labels[stem].types) if stem in labels else []
        if judgements is not None:
            if stem not in matched:
                records.append(G.GateRecord(stem, False, "q-align", "the labeler file has no entry for it", types))
                raise InputError(f"the labeler file {args.labels_json} has no entry for artifact/{name}")
            if not types:
                records.append(G.GateRecord(stem, False, "q-align", f"no record in {LABELS_FILE}", types))
                raise InputError(f"{LABELS_FILE} has no record of it, so its requested types are unknown")
            records.append(G.judge_qalign(stem, types, matched[stem], args.threshold))
            return Outcome.DONE
        try:
            artifact, _ = read_video(videos.artifact[name])
            clean, _ = read_video(videos.gt[name])
        except Exception:
            records.append(G.GateRecord(stem, False, "metrics", "its videos could not be read", types))
            raise
        if artifact.shape != clean.shape:
            records.append(G.GateRecord(stem, False, "metrics", "its GT and artifact videos differ in size", types))
            raise InputError(
                f"the GT is {tuple(clean.shape)} and the artifact {tuple(artifact.shape)} frames x H x W x 3"
            )
        records.append(G.judge_metrics(stem, types, G.clip_measures(artifact, clean, lpips), bands))
        return Outcome.DONE

    result = run_batch("aw-gate", videos.names, work, console=console, description="aw-gate")
    G.write_gate(out / G.GATE_FILE, records)
    kept = sum(r.kept for r in records)
    if stray:
        notes.append(f"{len(stray)} labeler entries match no clip of {out} and were ignored (e.g. {stray[0]}).")
    notes.extend(videos.unpaired_notes("it was not judged"))
    result.notes.extend(notes)
    code = result.report(console)
    judge = "Q-Align labels" if judgements is not None else "metrics"
    console.print(
        f"aw-gate: kept {kept} of {len(records)} clips ({judge}); {out / G.GATE_FILE} lists each with its reason.",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    return code


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point of ``aw-gate``."""
    return run(tyro.cli(GateArgs, args=argv))


if __name__ == "__main__":
    sys.exit(main())
