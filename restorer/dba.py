"""Decoupled Boundary Anchoring (paper Sec. 4.2, Eq. 1): the reference video, and the clip-length rule.

The official release lays the reference out by *appending* the tail anchor (``tools/process_videos.py``
at commit ``681c9a9``)::

    reference = [first_anchor] + artifact[1 : T-1] + [last_anchor] * 9        (T + 8 frames)

so a ``T``-frame clip becomes a ``T + 8``-frame reference (89 -> 97, the trained length): frame 0 is
clean view A, the clip's own last frame and 8 more frames are clean view B, and the trailing 8
copies fill one whole LTX latent chunk (the VAE encodes frame 0 alone, then chunks of 8). Restored
videos and heatmaps come back ``T + 8`` frames long and are trimmed to the first ``T``
(:func:`trim_to_clip`).

**The clip-length rule, stated once.** LTX's VAE needs ``8n + 1`` frames, and ``T + 8`` is ``8n + 1``
exactly when ``T`` is, so clips are ``T = 8n + 1`` frames with ``n >= 1`` (9, 17, ..., 89 trained, ...):
:func:`is_clip_length`, :func:`check_clip_length`, :func:`nearest_clip_length`, :func:`largest_clip_length`,
:data:`MIN_CLIP_FRAMES`, :data:`TRAINED_CLIP_FRAMES`. :func:`has_anchor_tail` tells a reference (its last 9
frames one frame repeated) from a plain clip.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from .errors import RestorerInputError

TEMPORAL_COMPRESSION = 8
"""LTX VAE: frame 0 alone, then chunks of 8 frames per latent frame."""
ANCHOR_TAIL_FRAMES = 8
"""Frames appended after the clip: copies of the last anchor that fill one latent chunk."""
LAST_ANCHOR_REPEATS = ANCHOR_TAIL_FRAMES + 1
"""How many reference frames hold the last anchor: the clip's last frame plus the appended tail (9)."""
MIN_CLIP_FRAMES = 9
"""Shortest clip: ``8n + 1`` with ``n = 1``."""
TRAINED_CLIP_FRAMES = 89
"""The clip length the released adapters were trained on (reference 97 frames)."""


class ClipLengthError(RestorerInputError):
    """A clip length that is not ``8n + 1`` with ``n >= 1``."""


def is_clip_length(num_frames: int) -> bool:
    """True for ``8n + 1`` with ``n >= 1`` (9, 17, 25, ...)."""
    return (
        isinstance(num_frames, int)
        and not isinstance(num_frames, bool)
        and num_frames >= MIN_CLIP_FRAMES
        and (num_frames - 1) % TEMPORAL_COMPRESSION == 0
    )


def check_clip_length(num_frames: int) -> int:
    """Return ``num_frames`` or raise :class:`ClipLengthError` (one sentence) unless it is ``8n + 1 >= 9``."""
    if not is_clip_length(num_frames):
        raise ClipLengthError(
            f"Clip length {num_frames} is not 8n+1 (e.g. 17, 25, 33, or {TRAINED_CLIP_FRAMES} as trained); "
            "the restorer needs 8n+1 frames."
        )
    return num_frames


def nearest_clip_length(num_frames: int) -> int:
    """Smallest valid clip length ``>= num_frames`` (for resampling clips of other lengths)."""
    n = max(num_frames, MIN_CLIP_FRAMES)
    return ((n - 1 + TEMPORAL_COMPRESSION - 1) // TEMPORAL_COMPRESSION) * TEMPORAL_COMPRESSION + 1


def largest_clip_length(num_frames: int) -> int:
    """Longest valid clip length ``<= num_frames`` (for cutting ``num_frames >= 9`` frames into clips)."""
    if num_frames < MIN_CLIP_FRAMES:
        raise ClipLengthError(f"No clip of at least {MIN_CLIP_FRAMES} frames fits in {num_frames} frames.")
    return (num_frames - 1) // TEMPORAL_COMPRESSION * TEMPORAL_COMPRESSION + 1


def reference_length(clip_frames: int) -> int:
    """Frames of the DBA reference of a ``clip_frames`` clip: ``T + 8``."""
    return clip_frames + ANCHOR_TAIL_FRAMES


def clip_length(reference_frames: int) -> int:
    """Inverse of :func:`reference_length`: ``F - 8``."""
    return reference_frames - ANCHOR_TAIL_FRAMES


def build_reference_video(
    artifact_frames: Float[Tensor, "frames height width 3"],
    first_anchor: Float[Tensor, "height width 3"],
    last_anchor: Float[Tensor, "height width 3"],
) -> Float[Tensor, "frames_plus_8 height width 3"]:
    """Eq. 1 in the official layout: ``[A] + artifact[1:-1] + [B] * 9`` (``T + 8`` frames, pixel space).

    Args:
        artifact_frames: the degraded clip ``[T, H, W, 3]`` in ``[0, 1]``, ``T >= 2``.
        first_anchor: clean view A ``[H, W, 3]``, placed at frame 0.
        last_anchor: clean view B ``[H, W, 3]``, at frame ``T - 1`` and the 8 appended frames.

    Returns:
        A new tensor ``[T + 8, H, W, 3]``; the inputs are not modified.
    """
    if artifact_frames.ndim != 4 or artifact_frames.shape[-1] != 3:
        raise RestorerInputError(f"Artifact frames must have shape [T, H, W, 3], got {tuple(artifact_frames.shape)}.")
    num_frames, height, width, _ = artifact_frames.shape
    for name, anchor in (("first_anchor", first_anchor), ("last_anchor", last_anchor)):
        if tuple(anchor.shape) != (height, width, 3):
            raise RestorerInputError(
                f"The {name} must have shape {(height, width, 3)} to match the frames, got {tuple(anchor.shape)}."
            )
    if num_frames < 2:
        raise RestorerInputError(f"DBA needs a clip of at least 2 frames (anchor A and anchor B), got {num_frames}.")
    first = first_anchor.to(artifact_frames)[None]
    last = last_anchor.to(artifact_frames)[None].expand(LAST_ANCHOR_REPEATS, height, width, 3)
    return torch.cat([first, artifact_frames[1:-1], last]).clone()


ANCHOR_TAIL_TOLERANCE = 0.5 / 255
"""Largest mean absolute difference (per frame, values in ``[0, 1]``) between a tail frame and the last frame
for the tail to count as one frame repeated: H.264 at CRF 0 to 35 keeps the repeats within 0.04 / 255."""


def has_anchor_tail(video: Float[Tensor, "frames height width 3"], tolerance: float = ANCHOR_TAIL_TOLERANCE) -> bool:
    """True when ``video`` ends in the official layout's tail: its last 9 frames are one frame repeated (within
    codec noise), as in a reference of :func:`build_reference_video`. A plain video almost never does; one that
    holds still for its last 9 frames is taken for a reference."""
    if video.ndim != 4 or video.shape[0] <= LAST_ANCHOR_REPEATS:
        return False
    tail = video[-LAST_ANCHOR_REPEATS:].float()
    return bool((tail - tail[-1:]).abs().mean(dim=(1, 2, 3)).max() <= tolerance)


def trim_to_clip(video: Tensor, clip_frames: int) -> Tensor:
    """The first ``clip_frames`` frames of a ``T + 8``-frame output (drops the appended anchor tail)."""
    return video[:clip_frames]


def anchor_frame_mask(reference_frames: int) -> Tensor:
    """Boolean ``[F]`` mask of a ``F``-frame reference's anchor positions: frame 0 and the last 9."""
    mask = torch.zeros(reference_frames, dtype=torch.bool)
    mask[0] = True
    mask[max(reference_frames - LAST_ANCHOR_REPEATS, 0) :] = True
    return mask


def black_tail(heatmap_video: Float[Tensor, "frames height width 3"]) -> Float[Tensor, "frames height width 3"]:
    """Stage-1 -> stage-2 hand-off: the heatmap's last 9 frames (anchor B) set to black.

    The official stage-1 script replaces the last 9 decoded frames by black before stage 2 reads
    the heatmap (``stages/stage1/src/ltxv_trainer/trainer.py``, ``_sample_videos``).
    """
    out = heatmap_video.clone()
    out[-LAST_ANCHOR_REPEATS:] = 0.0
    return out
