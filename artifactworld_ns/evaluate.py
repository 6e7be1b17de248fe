"""``aw-eval``: restoration and sparse-view metrics in the paper's layout (the metric maths is in ``metrics``).

* ``aw-eval video --pred DIR --gt DIR``: every ``NAME.mp4`` present in both folders is compared frame by
  frame (PSNR, SSIM, LPIPS with torchmetrics; CLIP-I and FVD where their weights are on this machine);
  paper Table 3.
* ``aw-eval scene --load-config CONFIG``: renders the loaded pipeline's eval views (the sparse-view
  protocol's held-out split) and scores them against their images; paper Table 1.

Conventions (see ``docs/render_and_eval.md``): a clip's PSNR is the mean of its per-frame PSNRs, with
the per-frame MSE floored at ``1e-10`` so identical frames score the cap, 100 dB (JSON has no infinity);
SSIM is torchmetrics' Gaussian-window SSIM averaged over frames; LPIPS is torchmetrics' AlexNet LPIPS
(inputs in ``[0, 1]``) averaged over frames; CLIP-I is the mean cosine similarity of CLIP image
embeddings of corresponding frames; FVD is the Fréchet distance between I3D features of the predicted
and ground-truth clip sets (a set-level number: it appears in the mean and the per-type rows only). A metric
whose weights are not on this machine is reported as unavailable with the reason; nothing is downloaded.

**Per artifact type.** When the data engine's ``labels.jsonl`` sits beside the GT folder (in it, or in its
parent as ``aw-simulate`` writes ``OUT/gt`` + ``OUT/labels.jsonl``), ``aw-eval video`` adds one row per artifact
type: the mean over the scored clips labelled with that type (a clip with several types counts in each of
its types' rows), and the mean of the labels' own artifact-vs-GT metrics over the same clips as ``input``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import tyro

from artifactworld_ns.metrics import (
    DEFAULT_CLIP_MODEL,
    FVD_MIN_CLIPS,
    PSNR_CAP_DB,
    MetricSuite,
    finite_or_none,
    frechet_distance,
)
from artifactworld_ns.restorer import (
    ARTIFACT_TYPES,
    ArtifactWorldError,
    ClipLabel,
    LabelError,
    VideoReadError,
    atomic_path,
    check_device,
    check_output_file,
    labels_beside,
    labels_by_name,
    print_error,
    print_note,
    read_labels,
    read_video,
)

METRIC_ORDER = ("psnr", "ssim", "lpips", "clip_i", "fvd")
METRIC_LABELS = {"psnr": "PSNR↑", "ssim": "SSIM↑", "lpips": "LPIPS↓", "clip_i": "CLIP-I↑", "fvd": "FVD↓"}

PAPER_TABLE3 = {"psnr": 24.20, "ssim": 0.7547, "lpips": 0.2893, "clip_i": 0.9663, "fvd": 33.92}
"""ArtifactWorld's row of the paper's Table 3 (2D artifact restoration, 1,284 clips)."""
PAPER_TABLE1 = {
    "DL3DV": {
        "5%": {"psnr": 24.56, "ssim": 0.8111, "lpips": 0.1970},
        "10%": {"psnr": 27.14, "ssim": 0.8722, "lpips": 0.1498},
        "15%": {"psnr": 28.27, "ssim": 0.8942, "lpips": 0.1341},
    },
    "Mip-NeRF-360": {
        "5%": {"psnr": 19.97, "ssim": 0.5276, "lpips": 0.4075},
        "10%": {"psnr": 22.56, "ssim": 0.6274, "lpips": 0.3100},
        "15%": {"psnr": 23.79, "ssim": 0.6693, "lpips": 0.2773},
    },
}
"""ArtifactWorld's rows of the paper's Table 1 (sparse-view reconstruction)."""


class EvalInputError(ArtifactWorldError, ValueError):
    """Bad user input for aw-eval; the message is one sentence."""


# ---------------------------------------------------------------------- reports


def mean_values(per_item: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    names = [m for m in METRIC_ORDER if any(m in v for v in per_item.values())]
    return {
        m: sum(v[m] for v in per_item.values()) / len(per_item) for m in names if all(m in v for v in per_item.values())
    }


def _fmt(metric: str, value: Optional[float]) -> str:
    if value is None:
        return "—"
    if metric in ("psnr", "fvd"):
        return f"{value:.2f}"
    return f"{value:.4f}"


def _row(label: str, cells) -> str:
    return f"| {label} | " + " | ".join(cells) + " |"


def _cells(mean: dict, metrics: Sequence[str], unavailable: dict) -> List[str]:
    return [_fmt(m, mean[m]) if mean.get(m) is not None else ("n/a" if m in unavailable else "—") for m in metrics]


def markdown_table(report: dict, compare_paper: bool = False) -> str:
    """The mean row in the paper's layout (Table 3 for videos, Table 1 for scenes), optionally with the paper's rows."""
    mean = report["mean"]
    unavailable = report.get("unavailable", {})
    video = report["kind"] == "video"
    metrics = list(METRIC_ORDER) if video else ["psnr", "ssim", "lpips"]
    lines = [
        _row("Method", [METRIC_LABELS[m] for m in metrics]),
        "|---" * (len(metrics) + 1) + "|",
        _row(f"this run ({report['count']} {'clips' if video else 'eval views'})", _cells(mean, metrics, unavailable)),
    ]
    for artifact_type, row in report.get("per_type", {}).items():
        count = f"{row['count']} clip{'s' if row['count'] != 1 else ''}"
        lines.append(_row(f"{artifact_type} ({count})", _cells(row["mean"], metrics, unavailable)))
    if compare_paper and video:
        lines.append(_row("ArtifactWorld, paper Table 3 (1,284 clips)", [_fmt(m, PAPER_TABLE3[m]) for m in metrics]))
    elif compare_paper:
        for dataset, rows in PAPER_TABLE1.items():
            for ratio, row in rows.items():
                label = f"ArtifactWorld, paper Table 1, {dataset} {ratio} views"
                lines.append(_row(label, [_fmt(m, row[m]) for m in metrics]))
    for metric, reason in unavailable.items():
        lines.append(f"\n{METRIC_LABELS.get(metric, metric)} unavailable: {reason}.")
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Optional[Path], compare_paper: bool) -> str:
    table = markdown_table(report, compare_paper)
    if out is not None:
        out = Path(out)
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(finite_or_none(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        with atomic_path(out.with_suffix(".md")) as tmp:
            tmp.write_text(table, encoding="utf-8")
    return table


# ---------------------------------------------------------------------- video


def read_clip_labels(gt_dir: Path) -> Optional[Tuple[Path, Dict[str, ClipLabel]]]:
    """The data engine's ``labels.jsonl`` beside the GT folder and its records by clip name; None without one."""

    path = labels_beside(gt_dir)
    if path is None:
        return None
    try:
        return path, labels_by_name(read_labels(path))
    except LabelError as err:
        raise EvalInputError(str(err)) from None


def per_type_rows(
    per_clip: Dict[str, Dict[str, float]],
    labels: Dict[str, ClipLabel],
    i3d_features: Optional[Dict[str, Tuple[torch.Tensor, torch.Tensor]]] = None,
) -> Dict[str, dict]:
    """One row per artifact type (the paper's order) that labels a scored clip: its clips, their mean metrics
    (FVD over the type's clips when I3D features are given and there are enough), and the mean of the labels'
    artifact-vs-GT metrics over the same clips (``input``; a metric missing from any of them is None)."""

    rows: Dict[str, dict] = {}
    for artifact_type in ARTIFACT_TYPES:
        names = [n for n in per_clip if Path(n).stem in labels and artifact_type in labels[Path(n).stem].types]
        if not names:
            continue
        mean = mean_values({n: per_clip[n] for n in names})
        if i3d_features is not None and len(names) >= FVD_MIN_CLIPS:
            pred = torch.cat([i3d_features[n][0] for n in names])
            gt = torch.cat([i3d_features[n][1] for n in names])
            mean["fvd"] = frechet_distance(pred, gt)
        inputs = [labels[Path(n).stem].metrics for n in names]
        input_mean = {
            m: (sum(v[m] for v in inputs) / len(inputs) if all(v.get(m) is not None for v in inputs) else None)
            for m in ("psnr", "ssim", "lpips")
        }
        rows[artifact_type] = {
            "count": len(names),
            "clips": names,
            "mean": {m: mean.get(m) for m in METRIC_ORDER},
            "input": input_mean,
        }
    return rows


def evaluate_videos(
    pred_dir: Path,
    gt_dir: Path,
    suite: MetricSuite,
    progress: Optional[Callable[[str], None]] = None,
) -> dict:
    """Score every ``NAME.mp4`` present in both folders; names in only one folder are listed, not scored."""

    for folder, what in ((pred_dir, "--pred"), (gt_dir, "--gt")):
        if not Path(folder).is_dir():
            raise EvalInputError(f"The {what} folder {folder} does not exist.")
    labelled = read_clip_labels(gt_dir)
    pred_names = {p.name for p in Path(pred_dir).glob("*.mp4")}
    gt_names = {p.name for p in Path(gt_dir).glob("*.mp4")}
    common = sorted(pred_names & gt_names)
    if not common:
        raise EvalInputError(f"The folders {pred_dir} and {gt_dir} have no .mp4 file name in common.")
    per_clip: Dict[str, Dict[str, float]] = {}
    failed: Dict[str, str] = {}
    features: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
    for name in common:
        if progress is not None:
            progress(name)
        try:
            pred, _ = read_video(Path(pred_dir) / name)
            gt, _ = read_video(Path(gt_dir) / name)
        except VideoReadError as err:
            failed[name] = str(err)
            continue
        if pred.shape != gt.shape:
            failed[name] = (
                f"{name}: the prediction has {pred.shape[0]} frames of {pred.shape[2]}x{pred.shape[1]} but the ground truth "
                f"{gt.shape[0]} frames of {gt.shape[2]}x{gt.shape[1]}."
            )
            continue
        per_clip[name] = suite.score(pred, gt)
        if suite.i3d is not None:
            features[name] = (suite.i3d(pred), suite.i3d(gt))
    unavailable = dict(suite.unavailable)
    mean = mean_values(per_clip) if per_clip else {}
    if suite.i3d is not None:
        if len(features) >= FVD_MIN_CLIPS:
            mean["fvd"] = frechet_distance(
                torch.cat([p for p, _ in features.values()]), torch.cat([g for _, g in features.values()])
            )
        else:
            unavailable["fvd"] = f"FVD needs at least {FVD_MIN_CLIPS} clips, got {len(features)}"
    labels_path, labels = labelled if labelled is not None else (None, {})
    return {
        "kind": "video",
        "pred": str(pred_dir),
        "gt": str(gt_dir),
        "count": len(per_clip),
        "per_clip": per_clip,
        "mean": {m: mean.get(m) for m in METRIC_ORDER},
        "unavailable": unavailable,
        "only_in_pred": sorted(pred_names - gt_names),
        "only_in_gt": sorted(gt_names - pred_names),
        "failed": failed,
        "psnr_cap_db": PSNR_CAP_DB,
        "labels": None if labels_path is None else str(labels_path),
        "per_type": per_type_rows(per_clip, labels, features if suite.i3d is not None else None),
        "unlabelled": sorted(n for n in per_clip if Path(n).stem not in labels) if labels_path is not None else [],
    }


# ---------------------------------------------------------------------- scene


def evaluate_scene(load_config: Path, suite: MetricSuite, progress: Optional[Callable[[str], None]] = None) -> dict:
    """Render the loaded pipeline's eval views and score them against their images (paper Table 1)."""
    if not Path(load_config).is_file():
        raise EvalInputError(f"The config file {load_config} does not exist.")
    from nerfstudio.utils.eval_utils import eval_setup

    import artifactworld_ns  # noqa: F401  (numpy scalars in checkpoints)

    _, pipeline, checkpoint, step = eval_setup(Path(load_config), test_mode="test")
    dataset = pipeline.datamanager.eval_dataset
    if dataset is None or len(dataset) == 0:
        raise EvalInputError(f"The run {load_config} has no eval views to score.")
    names = [Path(p).name for p in getattr(dataset, "image_filenames", [])] or [f"{i:05d}" for i in range(len(dataset))]
    per_view: Dict[str, Dict[str, float]] = {}
    model = pipeline.model
    model.eval()
    for i in range(len(dataset)):
        if progress is not None:
            progress(names[i])
        camera = dataset.cameras[i : i + 1].to(pipeline.device)
        with torch.no_grad():
            outputs = model.get_outputs_for_camera(camera)
        pred = outputs["rgb"][..., :3].float().clamp(0, 1).cpu()
        gt = dataset.get_image_float32(i).float()
        if gt.shape[-1] == 4:
            background = outputs.get("background")
            background = torch.ones(3) if background is None else background.float().cpu().reshape(-1)[:3]
            gt = gt[..., :3] * gt[..., 3:] + background * (1 - gt[..., 3:])
        gt = gt[..., :3].clamp(0, 1)
        if gt.shape[:2] != pred.shape[:2]:
            raise EvalInputError(
                f"Eval view {names[i]} renders at {tuple(pred.shape[:2])} but its image is {tuple(gt.shape[:2])}."
            )
        per_view[names[i]] = suite.score(pred[None], gt[None])
    mean = mean_values(per_view)
    return {
        "kind": "scene",
        "config": str(load_config),
        "checkpoint": str(checkpoint),
        "step": int(step),
        "count": len(per_view),
        "per_view": per_view,
        "mean": {m: mean.get(m) for m in ("psnr", "ssim", "lpips")},
        "unavailable": dict(suite.unavailable),
        "psnr_cap_db": PSNR_CAP_DB,
    }


# ---------------------------------------------------------------------- CLI


def check_outputs(out: Optional[Path], device: str) -> None:
    """``--out`` (a file in a writable folder, with its ``.md`` beside it) and ``--device``, before any scoring."""

    if out is not None:
        if Path(out).suffix.lower() != ".json":
            raise EvalInputError(f"--out {out} must name a .json file (the markdown table goes beside it as .md).")
        check_output_file(Path(out), "--out", example="eval.json")
    check_device(device)


@dataclass
class EvalVideo:
    """Score restored videos against ground truth (paper Table 3): PSNR, SSIM, LPIPS, CLIP-I, FVD."""

    pred: Path
    """Folder of predicted (restored) NAME.mp4 clips."""
    gt: Path
    """Folder of ground-truth NAME.mp4 clips."""
    out: Optional[Path] = None
    """Write the JSON report here (and the markdown table next to it, as .md)."""
    compare_paper: bool = False
    """Add the paper's Table 3 row to the markdown table."""
    clip_model: Optional[str] = DEFAULT_CLIP_MODEL
    """CLIP model for CLIP-I: a local folder or a hub id already in the local cache (never downloaded)."""
    fvd_model: Optional[Path] = None
    """I3D TorchScript detector file for FVD (StyleGAN-V's i3d_torchscript.pt); absent -> FVD unavailable."""
    device: str = "cpu"
    """Torch device for the networks."""

    def main(self) -> int:
        from rich.console import Console

        console = Console(stderr=True)
        check_outputs(self.out, self.device)
        read_clip_labels(self.gt)  # a bad labels.jsonl is reported before any network loads
        suite = MetricSuite.build(self.device, self.clip_model, self.fvd_model)
        with console.status("scoring") as status:
            report = evaluate_videos(self.pred, self.gt, suite, lambda name: status.update(f"scoring {name}"))
        for what, names in (("--pred", report["only_in_pred"]), ("--gt", report["only_in_gt"])):
            if names:
                print_note(console, f"{len(names)} file(s) only in {what}, not scored: {', '.join(names)}.")
        if report["unlabelled"]:
            print_note(
                console,
                f"{len(report['unlabelled'])} scored clip(s) have no record in {report['labels']}, so they count in "
                f"the overall mean only: {', '.join(report['unlabelled'])}.",
            )
        for message in report["failed"].values():
            print_error(console, message)
        print(write_report(report, self.out, self.compare_paper), end="")
        return 2 if report["failed"] else 0


@dataclass
class EvalScene:
    """Score a trained run on its eval views, the sparse-view protocol's held-out split (paper Table 1)."""

    load_config: Path
    """config.yml of the run."""
    out: Optional[Path] = None
    """Write the JSON report here (and the markdown table next to it, as .md)."""
    compare_paper: bool = False
    """Add the paper's Table 1 rows to the markdown table."""
    device: str = "cpu"
    """Torch device for LPIPS."""

    def main(self) -> int:
        from rich.console import Console

        console = Console(stderr=True)
        check_outputs(self.out, self.device)
        suite = MetricSuite.build(self.device, with_video_metrics=False)
        with console.status("scoring") as status:
            report = evaluate_scene(self.load_config, suite, lambda name: status.update(f"scoring {name}"))
        print(write_report(report, self.out, self.compare_paper), end="")
        return 0


Commands = Union[
    Annotated[EvalVideo, tyro.conf.subcommand(name="video")],
    Annotated[EvalScene, tyro.conf.subcommand(name="scene")],
]


def run(argv: Optional[Sequence[str]] = None) -> int:
    from rich.console import Console

    command = tyro.cli(Commands, args=argv)
    try:
        return command.main()
    except ArtifactWorldError as err:
        print_error(Console(stderr=True), str(err))
        return 2


def entrypoint() -> None:
    """Entry point of ``aw-eval``."""
    from artifactworld_ns.known_warnings import quiet_known_nerfstudio_warnings

    quiet_known_nerfstudio_warnings()
    sys.exit(run())


if __name__ == "__main__":
    entrypoint()
