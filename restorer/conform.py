"""Conforming arbitrary clips to the LTX latent grid and back.

LTX-Video's VAE compresses 8x in time (frame 0 alone, then chunks of 8) and 32x
in space, so the model only sees clips of ``8n + 1`` frames whose sides are
multiples of 32. The restorer accepts any clip of at least 2 frames and any
size, and conforms it as follows:

* **Time** -- the internal frame count is the smallest ``8n + 1`` that is at
  least the input's and at least 17 (anchor A, one artifact chunk, one anchor-B
  chunk). Frames are resampled by nearest index, ``src = round(i (T-1) / (T'-1))``,
  which keeps the first and the last frame in place (DBA anchors stay at the
  boundaries); going back picks ``round(j (T'-1) / (T-1))``. A clip that is
  already ``8n + 1 >= 17`` frames long passes through untouched.
* **Space** -- the frames are resized (bilinear, antialiased when shrinking) so
  that each side is the nearest multiple of 32 (at least 32) of the side scaled
  by ``min(1, max_side / max(H, W))``; ``max_side=None`` keeps the native scale
  (e.g. 960x540 -> 960x544). Outputs are resized back to the input size. We
  resize rather than pad so the model never sees invented border content.

Output always has exactly the input's frame count and resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

TEMPORAL_COMPRESSION = 8
SPATIAL_COMPRESSION = 32
MIN_INTERNAL_FRAMES = 17


@dataclass(frozen=True)
class ConformPlan:
    """Input clip size and the internal (model) clip size it is conformed to."""

    in_frames: int
    in_height: int
    in_width: int
    frames: int
    height: int
    width: int


def internal_frame_count(num_frames: int) -> int:
    """Smallest ``8n + 1`` that is ``>= num_frames`` and ``>= 17``."""
    n = max(num_frames, MIN_INTERNAL_FRAMES)
    return ((n - 1 + TEMPORAL_COMPRESSION - 1) // TEMPORAL_COMPRESSION) * TEMPORAL_COMPRESSION + 1


def internal_side(side: int, scale: float) -> int:
    """Nearest multiple of 32 (at least 32) of ``side * scale``."""
    return max(SPATIAL_COMPRESSION, int(round(side * scale / SPATIAL_COMPRESSION)) * SPATIAL_COMPRESSION)


def plan_conform(num_frames: int, height: int, width: int, max_side: int | None = None) -> ConformPlan:
    """Decide the internal clip size for an input of ``num_frames x height x width``."""
    scale = 1.0 if max_side is None else min(1.0, max_side / max(height, width))
    return ConformPlan(
        in_frames=num_frames,
        in_height=height,
        in_width=width,
        frames=internal_frame_count(num_frames),
        height=internal_side(height, scale),
        width=internal_side(width, scale),
    )


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


def to_model(video: Float[Tensor, "frames height width channels"], plan: ConformPlan) -> Tensor:
    """Conform an input-size video to the internal size of ``plan``."""
    video = video[resample_indices(video.shape[0], plan.frames).to(video.device)]
    return resize_frames(video, plan.height, plan.width)


def from_model(video: Float[Tensor, "frames height width channels"], plan: ConformPlan) -> Tensor:
    """Bring an internal-size video back to exactly the input's frames and resolution."""
    video = video[resample_indices(video.shape[0], plan.in_frames).to(video.device)]
    return resize_frames(video, plan.in_height, plan.in_width)


def resize_image(image: Float[Tensor, "height width channels"], height: int, width: int) -> Tensor:
    """Resize a single channels-last image."""
    return resize_frames(image[None], height, width)[0]
