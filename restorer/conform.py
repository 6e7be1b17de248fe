"""Conforming arbitrary clips to the model's grid and back.

LTX-Video's VAE compresses 8x in time and 32x in space, so the model only sees clips of
``8n + 1`` frames whose sides are multiples of 32. The restorer accepts any clip of at least 2
frames and any size, and conforms it as follows:

* **Time** -- a clip of ``T = 8n + 1 >= 9`` frames passes through untouched (its DBA reference is
  ``T + 8`` frames, :mod:`artifactworld_ns.restorer.dba`); any other length is resampled by nearest index to the
  next valid length, ``src = round(i (T-1) / (T'-1))``, which keeps the first and the last frame in
  place, and back with ``round(j (T'-1) / (T-1))``.
* **Space, official size** (``size=(H, W)``, the full preset's 544 x 960) -- as the official
  pipeline does: resize to *cover* ``H x W`` keeping the aspect (bilinear, antialiased,
  ``int()`` of the scaled side) and center-crop (torchvision's ``resize`` / ``center_crop``), when
  the crop removes at most :data:`MAX_CROP_FRACTION` of the covered frame -- so the benchmark's
  960x540 clips are processed exactly as the official code processes them. Inputs of other aspect
  ratios would lose a large part of the frame to that crop, so they are resized instead (no crop)
  to the same token budget at their own aspect: sides the nearest multiples of 32 of
  ``sqrt(H W aspect)`` and ``sqrt(H W / aspect)``; the whole frame stays usable.
* **Space, native** (``size=None``) -- each side is the nearest multiple of 32 (at least 32) of the
  side scaled by ``min(1, max_side / max(H, W))`` (the tiny preset's ``max_side=256``).

Outputs come back at exactly the input's frame count and resolution: cropped margins are filled by
replicating the restored border (a few pixels for 960x540), then everything is resized back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from .dba import is_clip_length, nearest_clip_length

SPATIAL_COMPRESSION = 32
OFFICIAL_SIZE = (544, 960)
"""The official ``video_dims`` (960 x 544, 97 frames), as (height, width)."""
MAX_CROP_FRACTION = 0.02
"""Largest share of the covered frame the official center crop may remove before we resize instead."""


@dataclass(frozen=True)
class ConformPlan:
    """Input clip size, the internal (model) clip size, and how space is mapped between them."""

    in_frames: int
    in_height: int
    in_width: int
    frames: int
    height: int
    width: int
    cover: tuple[int, int] | None = None
    """``(height, width)`` of the cover resize before the official center crop; None = plain resize."""


def internal_side(side: int, scale: float) -> int:
    """Nearest multiple of 32 (at least 32) of ``side * scale``."""
    return max(SPATIAL_COMPRESSION, int(round(side * scale / SPATIAL_COMPRESSION)) * SPATIAL_COMPRESSION)


def cover_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """The official cover resize: the side that fits is set to the target, the other keeps the aspect (``int``)."""
    target_h, target_w = target
    aspect = width / height
    if aspect > target_w / target_h:
        return target_h, int(target_h * aspect)
    return int(target_w / aspect), target_w


def plan_spatial(
    height: int, width: int, size: tuple[int, int] | None = None, max_side: int | None = None
) -> tuple[int, int, tuple[int, int] | None]:
    """``(model height, model width, cover)`` for an input frame (see module doc)."""
    if size is None:
        scale = 1.0 if max_side is None else min(1.0, max_side / max(height, width))
        return internal_side(height, scale), internal_side(width, scale), None
    cover = cover_size(height, width, size)
    cropped = 1.0 - (size[0] * size[1]) / (cover[0] * cover[1])
    if cropped <= MAX_CROP_FRACTION:
        return size[0], size[1], cover
    area, aspect = size[0] * size[1], width / height
    return (
        internal_side(round(math.sqrt(area / aspect)), 1.0),
        internal_side(round(math.sqrt(area * aspect)), 1.0),
        None,
    )


def plan_conform(
    num_frames: int, height: int, width: int, max_side: int | None = None, size: tuple[int, int] | None = None
) -> ConformPlan:
    """Decide the internal clip size for an input clip of ``num_frames x height x width``."""
    frames = num_frames if is_clip_length(num_frames) else nearest_clip_length(num_frames)
    model_h, model_w, cover = plan_spatial(height, width, size=size, max_side=max_side)
    return ConformPlan(num_frames, height, width, frames, model_h, model_w, cover)


def resample_indices(src_frames: int, dst_frames: int) -> torch.Tensor:
    """Nearest-index map that keeps the first and last frames at the boundaries."""
    if dst_frames == 1 or src_frames == 1:
        return torch.zeros(dst_frames, dtype=torch.long)
    positions = torch.arange(dst_frames, dtype=torch.float64) * (src_frames - 1) / (dst_frames - 1)
    return torch.round(positions).long()


def resize_frames(video: Float[Tensor, "frames height width channels"], height: int, width: int) -> Tensor:
    """Bilinear resize of a channels-last video (antialiased when shrinking)."""
    if video.shape[1] == height and video.shape[2] == width:
        return video
    shrinking = height < video.shape[1] or width < video.shape[2]
    x = video.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking)
    return x.permute(0, 2, 3, 1).to(video.dtype)


def _crop_offsets(cover: tuple[int, int], height: int, width: int) -> tuple[int, int]:
    """torchvision ``center_crop``'s top/left offsets."""
    return int(round((cover[0] - height) / 2.0)), int(round((cover[1] - width) / 2.0))


def to_model_space(video: Float[Tensor, "frames height width channels"], plan: ConformPlan) -> Tensor:
    """Resize (and, for the official size, cover-resize and center-crop) a video to the model's frame size."""
    if plan.cover is None:
        return resize_frames(video, plan.height, plan.width)
    from torchvision.transforms.functional import center_crop, resize

    x = video.permute(0, 3, 1, 2).float()
    if tuple(x.shape[-2:]) != plan.cover:
        x = resize(x, list(plan.cover), antialias=True)
    x = center_crop(x, [plan.height, plan.width])
    return x.permute(0, 2, 3, 1).to(video.dtype)


def from_model_space(video: Float[Tensor, "frames height width channels"], plan: ConformPlan) -> Tensor:
    """Inverse of :func:`to_model_space` (cropped margins filled by replicating the border)."""
    if plan.cover is not None and (plan.cover[0], plan.cover[1]) != (plan.height, plan.width):
        top, left = _crop_offsets(plan.cover, plan.height, plan.width)
        pad = (left, plan.cover[1] - plan.width - left, top, plan.cover[0] - plan.height - top)
        video = F.pad(video.permute(0, 3, 1, 2).float(), pad, mode="replicate").permute(0, 2, 3, 1).to(video.dtype)
    return resize_frames(video, plan.in_height, plan.in_width)


def to_model(video: Float[Tensor, "frames height width channels"], plan: ConformPlan) -> Tensor:
    """Conform an input-size clip to the internal size of ``plan`` (time, then space)."""
    video = video[resample_indices(video.shape[0], plan.frames).to(video.device)]
    return to_model_space(video, plan)


def from_model(video: Float[Tensor, "frames height width channels"], plan: ConformPlan) -> Tensor:
    """Bring an internal-size clip back to exactly the input's frames and resolution."""
    video = video[resample_indices(video.shape[0], plan.in_frames).to(video.device)]
    return from_model_space(video, plan)


def resize_image(image: Float[Tensor, "height width channels"], plan: ConformPlan) -> Tensor:
    """Conform a single channels-last image (an anchor) to the model's frame size."""
    return to_model_space(image[None], plan)[0]
