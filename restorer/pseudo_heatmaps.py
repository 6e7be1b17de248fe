"""Pseudo-GT heatmaps, the stage-1 training targets (paper Sec. 4.3): per-pixel severity between an
artifact clip and its clean clip, LPIPS spatial map by default (torchmetrics' AlexNet LPIPS), L1 or SSIM."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from .dba import anchor_frame_mask, black_tail
from .errors import RestorerInputError

HeatmapMetric = Literal["lpips", "l1", "ssim"]
HEATMAP_METRICS = ("lpips", "l1", "ssim")
ALEXNET_WEIGHTS_FILE = "alexnet-owt-7be5be79.pth"


def alexnet_weights_path() -> Path:
    """Where torchvision looks for the AlexNet weights that LPIPS needs (the one place that knows it; the
    glue's LPIPS metrics ask here too)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS_FILE


def missing_alexnet_weights() -> str | None:
    """A phrase naming the missing AlexNet weight file and its folder, or None when it is there."""
    path = alexnet_weights_path()
    if path.is_file():
        return None
    return f"torchvision's AlexNet weights ({path.name}) are not in {path.parent}"


def check_lpips_weights() -> None:
    """Raise one sentence naming the missing AlexNet weight file and its folder (no download is attempted)."""
    missing = missing_alexnet_weights()
    if missing is not None:
        raise RestorerInputError(
            f"The LPIPS heatmap cannot be computed: {missing}; put the file there (or set TORCH_HOME), "
            "or use --heatmap-metric l1 or ssim."
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

            _, full = structural_similarity_index_measure(
                x, y, data_range=1.0, return_full_image=True, reduction="none"
            )
            m = ((1.0 - full) / 2.0).mean(dim=1)
        else:
            m = net(x, y, normalize=True)[:, 0]
        if m.shape[-2:] != x.shape[-2:]:
            m = F.interpolate(m[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        maps.append(m)
    return torch.cat(maps).clamp(0.0, 1.0)


def heatmap_video(
    reference: Float[Tensor, "frames height width 3"],
    target: Float[Tensor, "frames height width 3"],
    metric: HeatmapMetric = "lpips",
) -> Float[Tensor, "frames height width 3"]:
    """The pseudo-GT heatmap of a ``T + 8``-frame pair as an RGB video with black anchor frames.

    Frame 0 and the last 9 show clean anchors in the reference, so they are black; the tail is
    blackened with :func:`artifactworld_ns.restorer.dba.black_tail`, as the official stage 1 does before stage 2.
    """
    gray = heatmap_map(reference, target, metric)
    gray[anchor_frame_mask(gray.shape[0])] = 0.0
    return black_tail(gray[..., None].expand(*gray.shape, 3).contiguous())
