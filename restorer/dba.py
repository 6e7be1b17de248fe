"""Decoupled Boundary Anchoring (paper Sec. 4.2, Eq. 1): the reference video.

The reference video keeps the artifact frames in the middle and replaces its
temporal boundaries by clean anchors::

    ref[0]            = first_anchor                 (clean view A)
    ref[T-k .. T-1]   = last_anchor                  (clean view B, k frames)
    ref[i]            = artifact_frames[i]           otherwise

With ``k = 8`` the trailing anchor fills exactly one LTX latent chunk (the VAE
encodes frame 0 alone, then chunks of 8 frames), so after encoding
``z_ref[0]`` is the latent of anchor A and ``z_ref[-1]`` the latent of anchor B.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from restorer.errors import RestorerInputError

ANCHOR_TAIL_FRAMES = 8
"""The paper's ``k``: how many trailing frames the last anchor occupies."""


def build_reference_video(
    artifact_frames: Float[Tensor, "frames height width 3"],
    first_anchor: Float[Tensor, "height width 3"],
    last_anchor: Float[Tensor, "height width 3"],
    k: int = ANCHOR_TAIL_FRAMES,
) -> Float[Tensor, "frames height width 3"]:
    """Build the DBA reference video of Eq. 1 (pixel space, before VAE encoding).

    Args:
        artifact_frames: the degraded clip, ``[T, H, W, 3]`` in ``[0, 1]``; needs ``T >= k + 1``
            so that the first anchor and the ``k`` trailing anchor frames fit.
        first_anchor: clean frame placed at index 0, ``[H, W, 3]``.
        last_anchor: clean frame repeated over indices ``[T - k, T - 1]``, ``[H, W, 3]``.
        k: trailing anchor window (8 in the paper, one latent chunk).

    Returns:
        A new tensor ``[T, H, W, 3]``; the inputs are not modified.
    """
    if artifact_frames.ndim != 4 or artifact_frames.shape[-1] != 3:
        raise RestorerInputError(
            f"Artifact frames must have shape [T, H, W, 3], got {tuple(artifact_frames.shape)}."
        )
    num_frames, height, width, _ = artifact_frames.shape
    for name, anchor in (("first_anchor", first_anchor), ("last_anchor", last_anchor)):
        if tuple(anchor.shape) != (height, width, 3):
            raise RestorerInputError(
                f"The {name} must have shape {(height, width, 3)} to match the frames, got {tuple(anchor.shape)}."
            )
    if k < 1:
        raise RestorerInputError(f"The trailing anchor window k must be at least 1, got {k}.")
    if num_frames < k + 1:
        raise RestorerInputError(
            f"DBA needs at least k + 1 = {k + 1} frames (anchor A plus {k} frames of anchor B), got {num_frames}."
        )
    reference = artifact_frames.clone()
    reference[0] = first_anchor.to(reference)
    reference[num_frames - k :] = last_anchor.to(reference)
    return reference


def anchor_frame_mask(num_frames: int, k: int = ANCHOR_TAIL_FRAMES) -> torch.Tensor:
    """Boolean ``[T]`` mask of the DBA anchor positions (frame 0 and the last ``k`` frames)."""
    mask = torch.zeros(num_frames, dtype=torch.bool)
    mask[0] = True
    mask[max(num_frames - k, 0) :] = True
    return mask
