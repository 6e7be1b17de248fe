"""The metrics of ``aw-eval`` (paper Tables 1 and 3): PSNR, SSIM, LPIPS, CLIP-I and FVD.

A clip's PSNR is the mean of its per-frame PSNRs (torchmetrics), capped at 100 dB for identical frames
(JSON has no infinity); SSIM is torchmetrics' Gaussian-window SSIM; LPIPS is torchmetrics' AlexNet
LPIPS (inputs in ``[0, 1]``); CLIP-I is the mean cosine similarity of CLIP image embeddings of
corresponding frames; FVD is the Fréchet distance between I3D features of two clip sets. Weights are
only ever read from this machine: a metric whose weights are missing is reported unavailable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import torch
from torch import Tensor

from artifactworld_ns.restorer import missing_alexnet_weights

PSNR_CAP_DB = 100.0
"""PSNR of identical frames: the per-frame MSE is floored at 10^(-PSNR_CAP_DB / 10) = 1e-10."""
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
FVD_MIN_CLIPS = 2


def psnr_per_frame(pred: Tensor, gt: Tensor) -> Tensor:
    """PSNR in dB of each frame ``[T, H, W, 3]`` (data range 1), capped at :data:`PSNR_CAP_DB`.

    torchmetrics' functional PSNR in float64; identical frames give infinity, capped like an MSE floor of 1e-10.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio

    psnr = peak_signal_noise_ratio(pred.double(), gt.double(), data_range=1.0, reduction="none", dim=(1, 2, 3))
    return psnr.clamp(max=PSNR_CAP_DB)


SSIM_CHUNK_FRAMES = 8
"""Frames scored by one SSIM call: torchmetrics keeps about 40 float32 copies of its input alive, which for a whole
89-frame 960x544 clip is over 19 GB (measured: killed for memory on a 24 GB machine); per-frame values are the same."""


def ssim_per_frame(pred: Tensor, gt: Tensor) -> Tensor:
    from torchmetrics.functional.image import structural_similarity_index_measure

    return torch.cat(
        [
            structural_similarity_index_measure(nchw(p), nchw(g), data_range=1.0, reduction="none").reshape(-1)
            for p, g in zip(pred.split(SSIM_CHUNK_FRAMES), gt.split(SSIM_CHUNK_FRAMES))
        ]
    ).double()


def finite_or_none(value):
    """``value`` with every non-finite float (NaN: a metric without its weights) replaced by None, in nested dicts
    and lists, so that JSON gets ``null`` where strict parsers refuse a bare ``NaN``."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def nchw(frames: Tensor) -> Tensor:
    return frames.permute(0, 3, 1, 2).float().contiguous()


class LpipsMetric:
    """torchmetrics' AlexNet LPIPS on frames in ``[0, 1]`` (built only from local weights)."""

    def __init__(self, device: torch.device) -> None:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        self.metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True, reduction="mean").to(
            device
        )
        self.device = device

    def __call__(self, pred: Tensor, gt: Tensor) -> Tensor:
        values = []
        with torch.no_grad():
            for p, g in zip(pred, gt):
                self.metric.reset()
                values.append(float(self.metric(nchw(p[None]).to(self.device), nchw(g[None]).to(self.device))))
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
        raise FileNotFoundError(
            f"{name_or_path} is neither a local folder nor in the local Hugging Face cache"
        ) from None


class ClipImageMetric:
    """CLIP-I: cosine similarity of CLIP image embeddings of corresponding frames (local weights only)."""

    MEAN = (0.48145466, 0.4578275, 0.40821073)
    STD = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, model_dir: Path, device: torch.device) -> None:
        from transformers import CLIPVisionModelWithProjection

        self.model = (
            CLIPVisionModelWithProjection.from_pretrained(str(model_dir), local_files_only=True).to(device).eval()
        )
        self.size = int(self.model.config.image_size)
        self.device = device

    def embed(self, frames: Tensor) -> Tensor:
        x = nchw(frames)
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        x = torch.nn.functional.interpolate(
            x,
            size=(max(self.size, round(h * scale)), max(self.size, round(w * scale))),
            mode="bicubic",
            align_corners=False,
            antialias=True,
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
        x = torch.nn.functional.interpolate(
            nchw(frames), size=(224, 224), mode="bilinear", align_corners=False, antialias=True
        )
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

        reason = missing_alexnet_weights()  # None when torchvision's AlexNet weights are in the hub cache
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
