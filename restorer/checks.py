"""Input checks of :class:`artifactworld_ns.restorer.pipeline.ArtifactRestorer`: one sentence per bad tensor (shape, dtype, range)."""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import RestorerInputError


def check_video(video, name: str) -> Tensor:
    video = torch.as_tensor(video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise RestorerInputError(f"The {name} must be a [T, H, W, 3] tensor, got shape {tuple(video.shape)}.")
    if video.shape[0] < 2:
        raise RestorerInputError(f"The {name} clip must have at least 2 frames, got {video.shape[0]}.")
    return check_range(video, name)


def check_image(image, name: str, size: tuple[int, int]) -> Tensor:
    image = torch.as_tensor(image)
    if tuple(image.shape) != (*size, 3):
        raise RestorerInputError(f"The {name} must have shape {(*size, 3)} like the frames, got {tuple(image.shape)}.")
    return check_range(image, name)


def check_heatmap(heatmap, shape: tuple[int, int, int]) -> Tensor:
    heatmap = torch.as_tensor(heatmap)
    if heatmap.ndim == 4 and heatmap.shape[-1] == 3 and tuple(heatmap.shape[:3]) == shape:
        return check_range(heatmap, "heatmap")
    return check_opacity(heatmap, shape, name="heatmap")


def check_opacity(opacity, shape: tuple[int, int, int], name: str = "opacity") -> Tensor | None:
    if opacity is None:
        return None
    opacity = torch.as_tensor(opacity)
    if opacity.ndim == 4 and opacity.shape[-1] == 1:
        opacity = opacity[..., 0]
    if tuple(opacity.shape) != shape:
        raise RestorerInputError(f"The {name} must have shape {shape} or {(*shape, 1)}, got {tuple(opacity.shape)}.")
    return check_range(opacity, name)


def check_range(x: Tensor, name: str) -> Tensor:
    if not torch.is_floating_point(x):
        raise RestorerInputError(f"The {name} must be a float tensor in [0, 1], got dtype {x.dtype}.")
    x = x.float()
    if x.numel() and (x.min() < -1e-3 or x.max() > 1 + 1e-3 or not torch.isfinite(x).all()):
        raise RestorerInputError(f"The {name} values must lie in [0, 1], got [{x.min():.3g}, {x.max():.3g}].")
    return x.clamp(0, 1).cpu()
