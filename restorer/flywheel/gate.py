"""The gatekeeper (paper Sec. 3.3): keep only the clips whose degradation is confirmed.

Two judges, each giving every clip of ``OUT`` (``OUT/gt/NAME.mp4`` + ``OUT/artifact/NAME.mp4``) a
:class:`GateRecord` -- kept or dropped, and why -- that ``aw-gate`` writes to ``OUT/gate.jsonl``:

* **Q-Align** (:func:`judge_qalign`, the paper's gatekeeper): the official labeler's answers for the clip's
  artifact video (:mod:`.qalign`). A clip is kept when *every* type its label record asks for (``types`` of
  ``labels.jsonl``: a generated clip's prompt, a simulated clip's recipe) is answered Yes with
  ``prob_yes >= --threshold`` (default 0.5, ours: the paper states no threshold).
* **Metrics, no model** (:func:`judge_metrics`): the artifact clip against its clean clip must be degraded
  enough but not destroyed -- PSNR in ``--psnr-band`` (default 15-35 dB), SSIM in ``--ssim-band`` (0.3-0.98) and,
  when torchvision's AlexNet weights are on the machine, LPIPS in ``--lpips-band`` (0.02-0.7) -- and show no
  temporal breakdown: no frame-to-frame jump the clean clip does not have (``max_t |A_t - A_{t-1}| - |G_t -
  G_{t-1}|``, mean absolute difference, above ``--max-excess-jump`` 0.08) and no frame whose PSNR falls more than
  ``--max-frame-drop`` (10 dB) below the clip's median (a frame collapsed to noise or black). Every band and
  threshold is our choice, stated here and in docs/data_engine.md.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from ..atomic import atomic_path
from .qalign import VideoJudgement

GATE_FILE = "gate.jsonl"
DEFAULT_THRESHOLD = 0.5
DEFAULT_PSNR_BAND = (15.0, 35.0)
DEFAULT_SSIM_BAND = (0.3, 0.98)
DEFAULT_LPIPS_BAND = (0.02, 0.7)
DEFAULT_MAX_EXCESS_JUMP = 0.08
DEFAULT_MAX_FRAME_DROP = 10.0


@dataclass
class GateRecord:
    """One line of ``gate.jsonl``."""

    name: str
    kept: bool
    judge: str
    """``q-align`` or ``metrics``."""
    reason: str
    types: list[str] = field(default_factory=list)
    measures: dict = field(default_factory=dict)


def write_gate(path: Path, records: list[GateRecord]) -> None:
    """``gate.jsonl``, atomically, one record per line in name order."""
    lines = [json.dumps(asdict(r), allow_nan=False) for r in sorted(records, key=lambda r: r.name)]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


# ---------------------------------------------------------------------------------------------- Q-Align


def judge_qalign(name: str, types: list[str], judgement: VideoJudgement, threshold: float) -> GateRecord:
    """Kept when every requested type is answered Yes with ``prob_yes >= threshold``."""
    scores = {t: j.prob_yes for t, j in judgement.types.items()}
    unasked = [t for t in types if t not in judgement.types]
    if unasked:
        return GateRecord(
            name, False, "q-align", f"the labeler was not asked about {', '.join(unasked)}", types, scores
        )
    failed = [t for t in types if not (judgement.types[t].prediction and judgement.types[t].prob_yes >= threshold)]
    if failed:
        detail = ", ".join(f"{t} (prob_yes {judgement.types[t].prob_yes:.2f})" for t in failed)
        return GateRecord(name, False, "q-align", f"not confirmed at {threshold:g}: {detail}", types, scores)
    detail = ", ".join(f"{t} {judgement.types[t].prob_yes:.2f}" for t in types)
    return GateRecord(name, True, "q-align", f"confirmed: {detail}", types, scores)


# ---------------------------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class MetricBands:
    psnr: tuple[float, float] = DEFAULT_PSNR_BAND
    ssim: tuple[float, float] = DEFAULT_SSIM_BAND
    lpips: tuple[float, float] = DEFAULT_LPIPS_BAND
    max_excess_jump: float = DEFAULT_MAX_EXCESS_JUMP
    max_frame_drop: float = DEFAULT_MAX_FRAME_DROP


def frame_psnr(a: Float[Tensor, "frames height width 3"], b: Float[Tensor, "frames height width 3"]) -> Tensor:
    """Per-frame PSNR (dB, peak 1); a frame equal to its GT gets 100 dB instead of infinity."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return torch.where(mse > 0, -10 * torch.log10(mse.clamp_min(1e-10)), torch.full_like(mse, 100.0))


def clip_measures(
    artifact: Float[Tensor, "frames height width 3"], clean: Float[Tensor, "frames height width 3"], lpips: bool
) -> dict:
    """PSNR (mean of the per-frame values), SSIM (torchmetrics), LPIPS (when ``lpips``), the worst frame drop
    below the median PSNR, and the largest excess frame-to-frame jump (see module doc)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    per_frame = frame_psnr(artifact, clean)
    nchw = artifact.permute(0, 3, 1, 2).float(), clean.permute(0, 3, 1, 2).float()
    ssim = float(torch.stack([structural_similarity_index_measure(a[None], b[None]) for a, b in zip(*nchw)]).mean())
    jumps = (artifact[1:] - artifact[:-1]).abs().flatten(1).mean(1) - (clean[1:] - clean[:-1]).abs().flatten(1).mean(1)
    out = {
        "psnr": float(per_frame.mean()),
        "ssim": ssim,
        "frame_drop_db": float(per_frame.median() - per_frame.min()),
        "worst_frame": int(per_frame.argmin()),
        "excess_jump": float(jumps.max()) if len(jumps) else 0.0,
        "jump_frame": int(jumps.argmax()) + 1 if len(jumps) else 0,
    }
    if lpips:
        from ..pseudo_heatmaps import heatmap_map

        out["lpips"] = float(heatmap_map(artifact.float(), clean.float(), "lpips").mean())
    return out


def judge_metrics(name: str, types: list[str], measures: dict, bands: MetricBands) -> GateRecord:
    """Kept when every measure is inside its band and there is no temporal breakdown."""
    problems = []
    for key, unit in (("psnr", " dB"), ("ssim", ""), ("lpips", "")):
        if key not in measures:
            continue
        low, high = getattr(bands, key)
        value = measures[key]
        if not low <= value <= high:
            side = "too weak" if (key != "lpips") == (value > high) else "destructive"
            problems.append(f"{key.upper()} {value:.3g}{unit} outside [{low:g}, {high:g}] ({side})")
    if measures["excess_jump"] > bands.max_excess_jump:
        problems.append(
            f"temporal breakdown: a jump of {measures['excess_jump']:.3f} at frame {measures['jump_frame']} "
            f"that the clean clip does not have (limit {bands.max_excess_jump:g})"
        )
    if measures["frame_drop_db"] > bands.max_frame_drop:
        problems.append(
            f"temporal breakdown: frame {measures['worst_frame']} is {measures['frame_drop_db']:.1f} dB below the "
            f"clip's median PSNR (limit {bands.max_frame_drop:g} dB)"
        )
    if problems:
        return GateRecord(name, False, "metrics", "; ".join(problems), types, measures)
    summary = ", ".join(f"{k.upper()} {measures[k]:.3g}" for k in ("psnr", "ssim", "lpips") if k in measures)
    return GateRecord(
        name, True, "metrics", f"degraded within the bands ({summary}), no temporal breakdown", types, measures
    )
