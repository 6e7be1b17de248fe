"""``aw-eval``: restoration and sparse-view metrics in the paper's layout.

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
and ground-truth clip sets (a set-level number: it appears in the mean only). A metric whose weights are
not on this machine is reported as unavailable with the reason; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Dict, Optional, Sequence, Union

import torch
import tyro
from torch import Tensor

PSNR_CAP_DB = 100.0
"""PSNR of identical frames: the per-frame MSE is floored at 10^(-PSNR_CAP_DB / 10) = 1e-10."""
ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
FVD_MIN_CLIPS = 2

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


class EvalInputError(ValueError):
    """Bad user input for aw-eval; the message is one sentence."""


# ---------------------------------------------------------------------- metrics


def psnr_per_frame(pred: Tensor, gt: Tensor) -> Tensor:
    """PSNR in dB of each frame ``[T, H, W, 3]`` (data range 1), capped at :data:`PSNR_CAP_DB`."""
    mse = ((pred.double() - gt.double()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp(min=10 ** (-PSNR_CAP_DB / 10)))


def ssim_per_frame(pred: Tensor, gt: Tensor) -> Tensor:
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(
        _nchw(pred), _nchw(gt), data_range=1.0, reduction="none"
    ).double()


def _nchw(frames: Tensor) -> Tensor:
    return frames.permute(0, 3, 1, 2).float().contiguous()


def lpips_unavailable_reason() -> Optional[str]:
    """Why LPIPS cannot be computed here, or None when torchvision's AlexNet weights are in the hub cache."""
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if not (checkpoints / ALEXNET_WEIGHTS).is_file():
        return f"torchvision's AlexNet weights ({ALEXNET_WEIGHTS}) are not in {checkpoints}"
    return None


class LpipsMetric:
    """torchmetrics' AlexNet LPIPS on frames in ``[0, 1]`` (built only from local weights)."""

    def __init__(self, device: torch.device) -> None:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        self.metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True, reduction="mean").to(device)
        self.device = device

    def __call__(self, pred: Tensor, gt: Tensor) -> Tensor:
        values = []
        with torch.no_grad():
            for p, g in zip(pred, gt):
                self.metric.reset()
                values.append(float(self.metric(_nchw(p[None]).to(self.device), _nchw(g[None]).to(self.device))))
        return torch.tensor(values, dtype=torch.float64)


def resolve_local_model(name_or_path: str) -> Path:
    """A local folder, or a hub id resolved from the local Hugging Face cache only (never downloaded)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name_or_path, local_files_only=True))
    except Exception:  # noqa: BLE001 -- any failure means "not on this machine"
        raise FileNotFoundError(f"{name_or_path} is neither a local folder nor in the local Hugging Face cache") from None


class ClipImageMetric:
    """CLIP-I: cosine similarity of CLIP image embeddings of corresponding frames (local weights only)."""

    MEAN = (0.48145466, 0.4578275, 0.40821073)
    STD = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, model_dir: Path, device: torch.device) -> None:
        from transformers import CLIPVisionModelWithProjection

        self.model = CLIPVisionModelWithProjection.from_pretrained(str(model_dir), local_files_only=True).to(device).eval()
        self.size = int(self.model.config.image_size)
        self.device = device

    def embed(self, frames: Tensor) -> Tensor:
        x = _nchw(frames)
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        x = torch.nn.functional.interpolate(
            x, size=(max(self.size, round(h * scale)), max(self.size, round(w * scale))), mode="bicubic", align_corners=False, antialias=True
        )
        top, left = (x.shape[-2] - self.size) // 2, (x.shape[-1] - self.size) // 2
        x = x[..., top : top + self.size, left : left + self.size]
        mean = torch.tensor(self.MEAN).view(1, 3, 1, 1)
        std = torch.tensor(self.STD).view(1, 3, 1, 1)
        x = ((x.clamp(0, 1) - mean) / std).to(self.device)
        with torch.no_grad():
            emb = self.model(pixel_values=x).image_embeds
        return torch.nn.functional.normalize(emb.double().cpu(), dim=-1)

    def __call__(self, pred: Tensor, gt: Tensor) -> Tensor:
        return (self.embed(pred) * self.embed(gt)).sum(-1)


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to ``[N, D]`` feature sets (N >= 2 each)."""
    a, b = feats_a.double(), feats_b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], a.shape[1]), torch.cov(b.T).reshape(b.shape[1], b.shape[1])
    vals, vecs = torch.linalg.eigh(cov_a)
    sqrt_a = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T
    middle = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu_a - mu_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * trace_sqrt
    return float(value.clamp(min=0))


class I3dFeatures:
    """I3D features of a clip from a local TorchScript detector (StyleGAN-V's ``i3d_torchscript.pt`` convention).

    Frames are resized to 224x224 and scaled to ``[-1, 1]``; the detector is called with
    ``rescale=False, resize=False, return_features=True`` and returns ``[1, D]``.
    """

    def __init__(self, path: Path, device: torch.device) -> None:
        self.model = torch.jit.load(str(path), map_location=device).eval()
        self.device = device

    def __call__(self, frames: Tensor) -> Tensor:
        x = torch.nn.functional.interpolate(_nchw(frames), size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        x = (x.clamp(0, 1) * 2 - 1).permute(1, 0, 2, 3)[None].to(self.device)  # [1, 3, T, 224, 224]
        with torch.no_grad():
            feats = self.model(x, rescale=False, resize=False, return_features=True)
        return feats.reshape(1, -1).double().cpu()


@dataclass
class MetricSuite:
    """The metrics this machine can compute, and why the others are unavailable."""

    lpips: Optional[LpipsMetric] = None
    clip: Optional[ClipImageMetric] = None
    i3d: Optional[I3dFeatures] = None
    unavailable: Dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        device: str = "cpu",
        clip_model: Optional[str] = DEFAULT_CLIP_MODEL,
        fvd_model: Optional[Path] = None,
        with_video_metrics: bool = True,
    ) -> "MetricSuite":
        dev = torch.device(device)
        suite = cls()
        reason = lpips_unavailable_reason()
        if reason is None:
            try:
                suite.lpips = LpipsMetric(dev)
            except Exception as err:  # noqa: BLE001
                reason = f"torchmetrics could not build LPIPS from the local weights ({err})"
        if reason is not None:
            suite.unavailable["lpips"] = reason
        if not with_video_metrics:
            return suite
        if clip_model is None:
            suite.unavailable["clip_i"] = "no CLIP model given (--clip-model DIR or a hub id in the local cache)"
        else:
            try:
                suite.clip = ClipImageMetric(resolve_local_model(clip_model), dev)
            except Exception as err:  # noqa: BLE001
                suite.unavailable["clip_i"] = f"CLIP weights not available locally: {err}"
        if fvd_model is None:
            suite.unavailable["fvd"] = "no I3D TorchScript detector given (--fvd-model FILE, e.g. i3d_torchscript.pt)"
        elif not Path(fvd_model).is_file():
            suite.unavailable["fvd"] = f"the I3D detector {fvd_model} does not exist"
        else:
            try:
                suite.i3d = I3dFeatures(Path(fvd_model), dev)
            except Exception as err:  # noqa: BLE001
                suite.unavailable["fvd"] = f"the I3D detector {fvd_model} could not be loaded ({err})"
        return suite

    def score(self, pred: Tensor, gt: Tensor) -> Dict[str, float]:
        """Per-clip values (means over frames) of the frame metrics."""
        values = {
            "psnr": float(psnr_per_frame(pred, gt).mean()),
            "ssim": float(ssim_per_frame(pred, gt).mean()),
        }
        if self.lpips is not None:
            values["lpips"] = float(self.lpips(pred, gt).mean())
        if self.clip is not None:
            values["clip_i"] = float(self.clip(pred, gt).mean())
        return values


# ---------------------------------------------------------------------- reports


def mean_values(per_item: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    names = [m for m in METRIC_ORDER if any(m in v for v in per_item.values())]
    return {m: sum(v[m] for v in per_item.values()) / len(per_item) for m in names if all(m in v for v in per_item.values())}


def _fmt(metric: str, value: Optional[float]) -> str:
    if value is None:
        return "—"
    if metric in ("psnr", "fvd"):
        return f"{value:.2f}"
    return f"{value:.4f}"


def markdown_table(report: dict, compare_paper: bool = False) -> str:
    """The mean row in the paper's layout (Table 3 for videos, Table 1 for scenes), optionally with the paper's rows."""
    mean = report["mean"]
    unavailable = report.get("unavailable", {})
    if report["kind"] == "video":
        metrics = list(METRIC_ORDER)
        lines = ["| Method | " + " | ".join(METRIC_LABELS[m] for m in metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        cells = [_fmt(m, mean[m]) if mean.get(m) is not None else ("n/a" if m in unavailable else "—") for m in metrics]
        lines.append(f"| this run ({report['count']} clips) | " + " | ".join(cells) + " |")
        if compare_paper:
            lines.append("| ArtifactWorld, paper Table 3 (1,284 clips) | " + " | ".join(_fmt(m, PAPER_TABLE3[m]) for m in metrics) + " |")
    else:
        metrics = ["psnr", "ssim", "lpips"]
        lines = ["| Method | " + " | ".join(METRIC_LABELS[m] for m in metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        cells = [_fmt(m, mean[m]) if mean.get(m) is not None else ("n/a" if m in unavailable else "—") for m in metrics]
        lines.append(f"| this run ({report['count']} eval views) | " + " | ".join(cells) + " |")
        if compare_paper:
            for dataset, rows in PAPER_TABLE1.items():
                for ratio, row in rows.items():
                    lines.append(f"| ArtifactWorld, paper Table 1, {dataset} {ratio} views | " + " | ".join(_fmt(m, row[m]) for m in metrics) + " |")
    for metric, reason in unavailable.items():
        lines.append(f"\n{METRIC_LABELS.get(metric, metric)} unavailable: {reason}.")
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Optional[Path], compare_paper: bool) -> str:
    table = markdown_table(report, compare_paper)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(tmp, out)
        out.with_suffix(".md").write_text(table, encoding="utf-8")
    return table


# ---------------------------------------------------------------------- video


def evaluate_videos(
    pred_dir: Path,
    gt_dir: Path,
    suite: MetricSuite,
    progress: Optional[Callable[[str], None]] = None,
) -> dict:
    """Score every ``NAME.mp4`` present in both folders; names in only one folder are listed, not scored."""
    from artifactworld_ns.restorer import VideoReadError, read_video

    for folder, what in ((pred_dir, "--pred"), (gt_dir, "--gt")):
        if not Path(folder).is_dir():
            raise EvalInputError(f"The {what} folder {folder} does not exist.")
    pred_names = {p.name for p in Path(pred_dir).glob("*.mp4")}
    gt_names = {p.name for p in Path(gt_dir).glob("*.mp4")}
    common = sorted(pred_names & gt_names)
    if not common:
        raise EvalInputError(f"The folders {pred_dir} and {gt_dir} have no .mp4 file name in common.")
    per_clip: Dict[str, Dict[str, float]] = {}
    failed: Dict[str, str] = {}
    pred_feats, gt_feats = [], []
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
            pred_feats.append(suite.i3d(pred))
            gt_feats.append(suite.i3d(gt))
    unavailable = dict(suite.unavailable)
    mean = mean_values(per_clip) if per_clip else {}
    if suite.i3d is not None:
        if len(pred_feats) >= FVD_MIN_CLIPS:
            mean["fvd"] = frechet_distance(torch.cat(pred_feats), torch.cat(gt_feats))
        else:
            unavailable["fvd"] = f"FVD needs at least {FVD_MIN_CLIPS} clips, got {len(pred_feats)}"
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
            raise EvalInputError(f"Eval view {names[i]} renders at {tuple(pred.shape[:2])} but its image is {tuple(gt.shape[:2])}.")
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

        from artifactworld_ns.restorer import print_error, print_note

        console = Console(stderr=True)
        suite = MetricSuite.build(self.device, self.clip_model, self.fvd_model)
        with console.status("scoring") as status:
            report = evaluate_videos(self.pred, self.gt, suite, lambda name: status.update(f"scoring {name}"))
        for what, names in (("--pred", report["only_in_pred"]), ("--gt", report["only_in_gt"])):
            if names:
                print_note(console, f"{len(names)} file(s) only in {what}, not scored: {', '.join(names)}.")
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

    from artifactworld_ns.restorer import print_error

    command = tyro.cli(Commands, args=argv)
    try:
        return command.main()
    except EvalInputError as err:
        print_error(Console(stderr=True), str(err))
        return 2


def entrypoint() -> None:
    """Entry point of ``aw-eval``."""
    sys.exit(run())


if __name__ == "__main__":
    entrypoint()
