"""Where a capture's clips come from: the sparse training frames, the held-out frames, and clip windows.

The trajectory filter (:mod:`artifactworld_ns.data_engine.trajectory_filter`) marks frames kept or pruned.
Training frames are every ``frame_step``-th kept frame in capture order (paper Sec. 3.2: "8x frame
skipping"); every other kept frame is held out. A clip is ``clip_frames`` consecutive held-out frames of
one smooth stretch: a pruned frame ends a stretch, so no clip spans one. Windows do not overlap; they
are laid from the start of each stretch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SparseSplit:
    """Training and held-out frames of one capture, and its clip windows (capture frame indices)."""

    kept: np.ndarray
    """bool [frames]: kept by the trajectory filter."""
    frame_step: int
    clip_frames: int
    train: list[int] = field(default_factory=list)
    held_out: list[int] = field(default_factory=list)
    windows: list[list[int]] = field(default_factory=list)
    longest_stretch: int = 0
    """Held-out frames in the longest stretch without a pruned frame."""


def stretches(kept: np.ndarray) -> list[list[int]]:
    """Maximal runs of consecutive kept frames."""
    runs, current = [], []
    for index, keep in enumerate(np.asarray(kept, dtype=bool).tolist()):
        if keep:
            current.append(index)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def sparse_split(kept: np.ndarray, frame_step: int, clip_frames: int) -> SparseSplit:
    """Training frames = every ``frame_step``-th kept frame; clip windows over the held-out ones."""
    kept = np.asarray(kept, dtype=bool)
    kept_indices = np.flatnonzero(kept).tolist()
    train = kept_indices[::frame_step]
    train_set = set(train)
    split = SparseSplit(kept, frame_step, clip_frames, train=train)
    split.held_out = [i for i in kept_indices if i not in train_set]
    for stretch in stretches(kept):
        held = [i for i in stretch if i not in train_set]
        split.longest_stretch = max(split.longest_stretch, len(held))
        for start in range(0, len(held) - clip_frames + 1, clip_frames):
            split.windows.append(held[start : start + clip_frames])
    return split
