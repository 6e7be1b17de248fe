"""The physics-grounded trajectory smoothness filter (ArtifactWorld paper Sec. 3.2).

A capture's camera path, in capture order, is judged by three statistics, each computed on short
*windows* of consecutive frames:

* **translational jerk** -- the third finite difference of the camera positions,
  ``|p[i+2] - 3 p[i+1] + 3 p[i] - p[i-1]|`` on the 4-frame window ``i-1 .. i+2``;
* **angular acceleration** -- the second difference of the orientation on the 3-frame window
  ``i-1 .. i+1``: ``|w[i] - w[i-1]|`` where ``w[i]`` is the rotation vector (world frame) taking frame
  ``i``'s rotation to frame ``i+1``'s, i.e. the change of the rotation between consecutive frames;
* **direction consistency** -- the angle at frame ``i`` between the translation directions
  ``p[i] - p[i-1]`` and ``p[i+1] - p[i]``, less the median of that angle over the ``direction_window``
  frames around ``i`` (a steady turn changes direction at every frame, consistently; only a change that
  departs from its neighbours' counts). Undefined, and skipped, where either step is shorter than
  ``min_step_fraction`` of the median step: a camera at rest has no direction.

Each statistic's windows get a one-sided robust z-score ``0.6745 (x - median) / MAD`` (Iglewicz and
Hoaglin's modified z-score; only unusually *large* values are faults), and a window is an outlier above
``mad_threshold``. The MAD is floored (``*_floor`` options) so that a perfectly regular synthetic path, whose
MAD is zero, does not turn float rounding into outliers.

**Which frame is to blame.** A single displaced frame ``k`` disturbs every window that contains it, so its
neighbours' windows are outliers too: thresholding per-frame values would prune ``k - 1`` and ``k + 1`` as
well (and a symmetric third difference centred on ``k`` even has weight 0 at ``k``). The filter therefore
attributes outlier windows greedily, like a matched filter: frame ``c``'s score is, per statistic, the
correlation of the windows' z-scores with the weights ``c`` has in them (the stencil magnitudes, ``1 3 3 1``
for the jerk and ``1 2 1`` for the other two), divided by the norm of those weights, summed over the
statistics. The frame with the highest score among those in an outlier window is pruned, every window that
contains it is dropped (a clip never spans a pruned frame, so those windows no longer matter), and the
search repeats until no outlier window is left. A spike at ``k`` weighs most in ``k``'s own pattern, and once
``k`` is pruned its neighbours' disturbed windows are gone with it; a kink (the camera turning back at ``k``)
disturbs only windows containing ``k`` and is likewise pruned at ``k``. Frames within two of either end of
the path take part in fewer windows and are judged on less evidence.

The paper names the three constraints and MAD but no threshold, window or floor: every default below is
our choice. Pure numpy / scipy (no nerfstudio): it is tested on synthetic paths.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from jaxtyping import Bool, Float
from scipy.spatial.transform import Rotation

from artifactworld_ns.restorer import ArtifactWorldError

JERK = "translational jerk"
ANGULAR = "angular acceleration"
DIRECTION = "direction change"
REASONS = (JERK, ANGULAR, DIRECTION)
_SHORT = {JERK: "jerk", ANGULAR: "angular acceleration", DIRECTION: "direction"}

MAD_TO_SIGMA = 0.6745
"""``Phi^-1(3/4)``: the MAD of a normal distribution is 0.6745 sigma (Iglewicz and Hoaglin's modified z-score)."""


class TrajectoryFilterError(ArtifactWorldError, ValueError):
    """Camera poses the filter cannot judge; the message is one sentence for the user."""


@dataclass
class TrajectoryFilterConfig:
    """Options of :func:`filter_trajectory`. The paper (Sec. 3.2) fixes none of these values: all are our choice."""

    mad_threshold: float = 3.5
    """Robust z-score ``0.6745 (x - median) / MAD`` above which a window is an outlier (Iglewicz and Hoaglin's
    usual cut-off)."""
    jerk_floor: float = 0.05
    """Lower bound of the jerk's MAD, as a fraction of the median step length between consecutive frames."""
    angular_floor_deg: float = 0.1
    """Lower bound of the angular acceleration's MAD, in degrees per frame squared."""
    direction_floor_deg: float = 1.0
    """Lower bound of the direction change's MAD, in degrees."""
    min_step_fraction: float = 0.1
    """Direction changes are measured only where both steps are at least this fraction of the median step."""
    direction_window: int = 9
    """A direction change is measured against the median of the changes at this many frames around it, so a
    steady turn is consistent and only a change that departs from its neighbours' counts."""

    def __post_init__(self) -> None:
        for name in (
            "mad_threshold",
            "jerk_floor",
            "angular_floor_deg",
            "direction_floor_deg",
            "min_step_fraction",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise TrajectoryFilterError(
                    f"The trajectory filter's {name} must be a non-negative number, not {value}."
                )
        if self.direction_window < 1:
            raise TrajectoryFilterError(
                f"The trajectory filter's direction_window must be at least 1, not {self.direction_window}."
            )


@dataclass
class TrajectoryReport:
    """What :func:`filter_trajectory` kept, and why it pruned the rest."""

    kept: Bool[np.ndarray, " n"]
    """True where the frame is kept."""
    reasons: dict[int, str] = field(default_factory=dict)
    """Pruned frame index -> ``"translational jerk"``, ``"angular acceleration"`` or ``"direction change"``."""

    @property
    def pruned(self) -> list[int]:
        return sorted(self.reasons)

    def summary(self) -> str:
        """One line, e.g. ``kept 187 of 200 frames (jerk 8, angular acceleration 3, direction 2)``."""
        counts = ", ".join(f"{_SHORT[r]} {sum(v == r for v in self.reasons.values())}" for r in REASONS)
        return f"kept {int(self.kept.sum())} of {len(self.kept)} frames ({counts})"

    def segments(self, min_length: int = 1) -> list[tuple[int, int]]:
        """Runs of consecutive kept frames, ``[(start, stop), ...]`` with ``stop`` exclusive, at least ``min_length`` long."""
        runs: list[tuple[int, int]] = []
        start = None
        for i, keep in enumerate([*self.kept.tolist(), False]):
            if keep and start is None:
                start = i
            elif not keep and start is not None:
                if i - start >= min_length:
                    runs.append((start, i))
                start = None
        return runs


@dataclass
class _Statistic:
    """One statistic on windows of ``len(weights)`` consecutive frames; window ``w`` covers frames ``w .. w + L - 1``."""

    reason: str
    values: np.ndarray  # [m]; NaN where undefined
    weights: np.ndarray  # [L]: how strongly each frame of a window moves its value (stencil magnitudes)
    floor: float  # lower bound of the MAD
    threshold: float  # robust z above which a window is an outlier

    def __post_init__(self) -> None:
        valid = np.isfinite(self.values)
        self.alive = valid.copy()
        self.z = np.zeros_like(self.values)
        if valid.any():
            x = self.values[valid]
            median = float(np.median(x))
            mad = float(np.median(np.abs(x - median)))
            scale = max(mad, self.floor, 1e-12 * max(1.0, abs(median)))
            self.z[valid] = MAD_TO_SIGMA * (x - median) / scale
        self.outlier = valid & (self.z > self.threshold)

    def frame_scores(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Per frame: the normalized correlation of the alive windows' z-scores with the frame's weights in them,
        and whether the frame lies in an alive outlier window."""
        corr = np.zeros(n)
        norm = np.zeros(n)
        in_outlier = np.zeros(n, dtype=bool)
        z = np.where(self.alive, np.maximum(self.z, 0.0), 0.0)
        alive = self.alive.astype(float)
        live_outlier = self.alive & self.outlier
        m = len(self.values)
        for offset, weight in enumerate(self.weights):
            corr[offset : offset + m] += weight * z
            norm[offset : offset + m] += weight**2 * alive
            in_outlier[offset : offset + m] |= live_outlier
        score = np.divide(corr, np.sqrt(norm), out=np.zeros(n), where=norm > 0)
        return score, in_outlier

    def drop_frame(self, frame: int) -> None:
        """Drop every window containing ``frame``."""
        length = len(self.weights)
        self.alive[max(0, frame - length + 1) : frame + 1] = False


def _check_poses(camera_to_worlds) -> np.ndarray:
    if hasattr(camera_to_worlds, "detach"):  # a torch tensor, possibly on the GPU
        camera_to_worlds = camera_to_worlds.detach().cpu().numpy()
    poses = np.asarray(camera_to_worlds, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1] not in (3, 4) or poses.shape[2] != 4:
        raise TrajectoryFilterError(
            f"Camera poses must be camera-to-world matrices of shape [n, 3, 4] or [n, 4, 4], got {list(poses.shape)}."
        )
    poses = poses[:, :3, :4]
    bad = np.flatnonzero(~np.isfinite(poses).all(axis=(1, 2)))
    if len(bad):
        raise TrajectoryFilterError(
            f"The camera pose of frame {int(bad[0])} contains NaN or infinite values; fix or remove that frame."
        )
    bad = np.flatnonzero(np.linalg.det(poses[:, :, :3]) <= 1e-9)
    if len(bad):
        raise TrajectoryFilterError(
            f"The camera pose of frame {int(bad[0])} has no proper rotation (its 3x3 part has determinant "
            f"{np.linalg.det(poses[bad[0], :, :3]):.3g}); fix or remove that frame."
        )
    return poses


def _rolling_median(values: Float[np.ndarray, " m"], window: int) -> Float[np.ndarray, " m"]:
    """Median of the ``window`` values centred on each (NaNs ignored; truncated at the ends)."""
    half = max(int(window), 1) // 2
    padded = np.pad(values, half, constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows give NaN, as they should
        return np.nanmedian(windows, axis=1)


def _statistics(
    positions: Float[np.ndarray, "n 3"], rotations: Rotation, config: TrajectoryFilterConfig
) -> list[_Statistic]:
    steps = np.diff(positions, axis=0)  # [n-1]: step i goes from frame i to i+1
    step_len = np.linalg.norm(steps, axis=1)
    median_step = float(np.median(step_len))
    extent = float(np.ptp(positions, axis=0).max()) if len(positions) else 0.0
    jerk = positions[3:] - 3 * positions[2:-1] + 3 * positions[1:-2] - positions[:-3]  # window w: frames w .. w+3
    omega = (rotations[1:] * rotations[:-1].inv()).as_rotvec()  # [n-1] world-frame rotation from frame i to i+1
    angular = np.linalg.norm(omega[1:] - omega[:-1], axis=1)  # window w: frames w .. w+2
    d1, d2 = steps[:-1], steps[1:]
    direction = np.arctan2(np.linalg.norm(np.cross(d1, d2), axis=1), np.einsum("ij,ij->i", d1, d2))
    min_step = max(config.min_step_fraction * median_step, 1e-12 * max(1.0, extent))
    direction[(step_len[:-1] <= min_step) | (step_len[1:] <= min_step)] = np.nan
    direction = direction - _rolling_median(direction, config.direction_window)
    thr = config.mad_threshold
    return [
        _Statistic(
            JERK, np.linalg.norm(jerk, axis=1), np.array([1.0, 3.0, 3.0, 1.0]), config.jerk_floor * median_step, thr
        ),
        _Statistic(ANGULAR, angular, np.array([1.0, 2.0, 1.0]), math.radians(config.angular_floor_deg), thr),
        _Statistic(DIRECTION, direction, np.array([1.0, 2.0, 1.0]), math.radians(config.direction_floor_deg), thr),
    ]


def filter_trajectory(
    camera_to_worlds: Float[np.ndarray, "n 3|4 4"], config: TrajectoryFilterConfig | None = None
) -> TrajectoryReport:
    """Prune the frames whose translational jerk, angular acceleration or change of direction is a MAD outlier
    (paper Sec. 3.2; see the module doc for the statistics and how an outlier is attributed to one frame).

    ``camera_to_worlds`` are in capture order. Raises :class:`TrajectoryFilterError` naming the first frame
    whose pose is not finite.
    """
    config = config or TrajectoryFilterConfig()
    poses = _check_poses(camera_to_worlds)
    n = len(poses)
    kept = np.ones(n, dtype=bool)
    reasons: dict[int, str] = {}
    if n < 4:
        return TrajectoryReport(kept, reasons)  # too short for a jerk window, let alone a clip
    stats = _statistics(poses[:, :, 3], Rotation.from_matrix(poses[:, :, :3]), config)
    for _ in range(n):
        scores, in_outlier = zip(*(stat.frame_scores(n) for stat in stats))
        candidates = np.logical_or.reduce(in_outlier) & kept
        if not candidates.any():
            break
        total = np.where(candidates, np.sum(scores, axis=0), -np.inf)
        frame = int(np.argmax(total))
        # The reason: the statistic weighing most in this frame's score among those with an outlier window on it.
        reason = max(
            (s for s, inside in zip(range(len(stats)), in_outlier) if inside[frame]), key=lambda s: scores[s][frame]
        )
        kept[frame] = False
        reasons[frame] = stats[reason].reason
        for stat in stats:
            stat.drop_frame(frame)
    return TrajectoryReport(kept, dict(sorted(reasons.items())))


__all__ = [
    "TrajectoryFilterConfig",
    "TrajectoryFilterError",
    "TrajectoryReport",
    "filter_trajectory",
]
