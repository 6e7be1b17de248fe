"""Restoring long renders in overlapping windows (``aw-render``).

The restorer works on ``8n + 1``-frame clips with a clean anchor view at each end (DBA, paper Eq. 1).
A long render is split into overlapping windows of ``8n + 1`` frames; each window is bracketed by two
short *bridge* paths: from the nearest training view to the window's first pose, and from its last pose
to the nearest training view. The clip handed to the restorer is ``[bridge in, window, bridge out]``
with the two training images as anchors; the bridge frames are dropped afterwards and the windows are
blended linearly in their overlaps (weights that sum to one on every frame).

Pure tensor code: no nerfstudio import, so it is tested without a trained scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence

import torch
from torch import Tensor

from artifactworld_ns.geometry import interpolate_poses, nearest_train_indices
from artifactworld_ns.restorer import (
    MIN_CLIP_FRAMES,
    ArtifactWorldError,
    is_clip_length,
    largest_clip_length,
    nearest_clip_length,
)

#: DBA replaces the restorer clip's last 8 frames by the tail anchor, so the out-bridge needs at least 8.
MIN_BRIDGE_FRAMES = 8


class WindowPlanError(ArtifactWorldError, ValueError):
    """Bad window options; the message is one sentence for the user."""


@dataclass(frozen=True)
class Window:
    """Frames ``[start, stop)`` of the render."""

    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start


def check_window_frames(window_frames: int) -> None:

    if not is_clip_length(window_frames):
        raise WindowPlanError(f"--window-frames must be 8n + 1 with n >= 1 (9, 17, 25, 33, ...), got {window_frames}.")


def check_overlap(window_frames: int, overlap: int) -> None:
    if not 0 <= overlap <= (window_frames - 1) // 2:
        raise WindowPlanError(
            f"--overlap must be between 0 and {(window_frames - 1) // 2} for {window_frames}-frame windows, got {overlap}."
        )


def check_bridge_frames(bridge_frames: int) -> None:
    if bridge_frames < MIN_BRIDGE_FRAMES:
        raise WindowPlanError(
            f"--bridge-frames must be at least {MIN_BRIDGE_FRAMES} (one latent chunk), got {bridge_frames}."
        )


def check_window_options(window_frames: int, overlap: int, bridge_frames: int) -> None:
    """One sentence for the first bad option of ``aw-render``'s windows, before anything is loaded."""
    check_window_frames(window_frames)
    check_overlap(window_frames, overlap)
    check_bridge_frames(bridge_frames)


def plan_windows(num_frames: int, window_frames: int, overlap: int) -> List[Window]:
    """Overlapping windows covering ``[0, num_frames)``, each ``window_frames`` long (``8n + 1``).

    The number of windows is the smallest that keeps every overlap at least ``overlap`` frames; their
    starts are spread evenly, so the actual overlaps may be a little larger. A render shorter than
    ``window_frames`` gets one window of the largest ``8n + 1`` that fits, repeated as needed; a render
    shorter than 9 frames is one window of its own length (the bridges pad the restorer's clip).
    """

    check_window_frames(window_frames)
    if num_frames < 1:
        raise WindowPlanError(f"Nothing to restore: the render has {num_frames} frames.")
    check_overlap(window_frames, overlap)
    if num_frames < MIN_CLIP_FRAMES:
        return [Window(0, num_frames)]
    length = min(window_frames, largest_clip_length(num_frames))
    overlap = min(overlap, (length - 1) // 2)
    if num_frames <= length:
        return [Window(0, num_frames)]
    count = 1 + math.ceil((num_frames - length) / (length - overlap))
    span = num_frames - length
    starts = [round(i * span / (count - 1)) for i in range(count)]
    return [Window(s, s + length) for s in starts]


def blend_weights(windows: Sequence[Window], num_frames: int) -> Tensor:
    """``[len(windows), num_frames]`` weights: linear cross-fades in the overlaps, zero outside a window.

    In an overlap of ``L`` frames between consecutive windows the earlier window's weight falls as
    ``(L - j) / (L + 1)`` and the later one's rises as ``(j + 1) / (L + 1)``; every column sums to one.
    """
    raw = torch.zeros(len(windows), num_frames, dtype=torch.float64)
    for i, win in enumerate(windows):
        left = windows[i - 1].stop - win.start if i > 0 else 0
        right = win.stop - windows[i + 1].start if i + 1 < len(windows) else 0
        t = torch.arange(win.start, win.stop, dtype=torch.float64)
        rise = (t - win.start + 1) / (max(left, 0) + 1)
        fall = (win.stop - t) / (max(right, 0) + 1)
        raw[i, win.start : win.stop] = torch.minimum(rise, fall).clamp(max=1.0)
    total = raw.sum(0)
    if bool((total <= 0).any()):
        missing = int(torch.nonzero(total <= 0)[0])
        raise WindowPlanError(f"The windows leave frame {missing} uncovered.")
    return raw / total


def blend_windows(windows: Sequence[Window], restored: Sequence[Tensor], num_frames: int) -> Tensor:
    """Combine per-window restored frames ``[length, H, W, C]`` into ``[num_frames, H, W, C]``."""
    weights = blend_weights(windows, num_frames).to(restored[0].dtype)
    out = torch.zeros((num_frames, *restored[0].shape[1:]), dtype=restored[0].dtype)
    for i, (win, frames) in enumerate(zip(windows, restored)):
        if frames.shape[0] != win.length:
            raise WindowPlanError(f"Window {i} has {frames.shape[0]} restored frames, expected {win.length}.")
        w = weights[i, win.start : win.stop].view(-1, *([1] * (frames.ndim - 1)))
        out[win.start : win.stop] += w * frames
    return out


@dataclass(frozen=True)
class BridgedWindow:
    """One restorer clip: ``bridge_in`` + window + ``bridge_out`` poses and the two anchor training views."""

    window: Window
    poses: Tensor
    """``[bridge_in + length + bridge_out, 3, 4]``: frame 0 is training view ``first_train``, the last frame ``last_train``."""
    bridge_in: int
    bridge_out: int
    first_train: int
    last_train: int

    @property
    def window_slice(self) -> slice:
        return slice(self.bridge_in, self.bridge_in + self.window.length)


def bridge_lengths(window_length: int, bridge_frames: int) -> tuple[int, int]:
    """(in, out) bridge lengths: ``bridge_frames`` each, the in-bridge padded so the clip is ``8m + 1`` frames."""

    check_bridge_frames(bridge_frames)
    total = 2 * bridge_frames + window_length
    return bridge_frames + nearest_clip_length(total) - total, bridge_frames


def bridge_window(
    window: Window, path_poses: Tensor, train_poses: Tensor, bridge_frames: int = MIN_BRIDGE_FRAMES
) -> BridgedWindow:
    """Bridge a window of ``path_poses`` ``[N, 3, 4]`` to its nearest training views ``train_poses`` ``[M, 3, 4]``.

    The in-bridge starts exactly at the training pose nearest to the window's first pose and stops one
    step short of it; the out-bridge starts one step after the window's last pose and ends exactly at the
    training pose nearest to it.
    """
    path_poses = path_poses[..., :3, :4].to(torch.float64)
    train_poses = train_poses[..., :3, :4].to(torch.float64)
    first, last = path_poses[window.start], path_poses[window.stop - 1]
    nearest = nearest_train_indices(train_poses, torch.stack([first, last]))
    a, b = int(nearest[0]), int(nearest[1])
    n_in, n_out = bridge_lengths(window.length, bridge_frames)
    into = interpolate_poses(train_poses[a], first, torch.arange(n_in, dtype=torch.float64) / n_in)
    out = interpolate_poses(last, train_poses[b], torch.arange(1, n_out + 1, dtype=torch.float64) / n_out)
    poses = torch.cat([into, path_poses[window.start : window.stop], out])
    return BridgedWindow(window, poses, n_in, n_out, a, b)
