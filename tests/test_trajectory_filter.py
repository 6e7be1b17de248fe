"""data_engine.trajectory_filter: the paper's smoothness filter (Sec. 3.2) on synthetic camera paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from artifactworld_ns.data_engine.trajectory_filter import (
    TrajectoryFilterConfig,
    TrajectoryFilterError,
    TrajectoryReport,
    filter_trajectory,
)

N = 200
JERK, ANGULAR, DIRECTION = "translational jerk", "angular acceleration", "direction change"


def _look_at(position: np.ndarray, roll: float) -> np.ndarray:
    """OpenGL camera-to-world rotation looking from ``position`` at the origin, rolled by ``roll`` radians."""
    forward = -position / np.linalg.norm(position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return np.stack([right, up, -forward], axis=1) @ Rotation.from_rotvec([0.0, 0.0, roll]).as_matrix()


def _path(kind: str, n: int = N) -> np.ndarray:
    """A smooth [n, 4, 4] capture path looking at the origin with a slow roll."""
    u = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    if kind == "circle":
        positions = np.stack([2 * np.cos(u), 2 * np.sin(u), np.full(n, 0.3)], axis=1)
    elif kind == "spline":  # uneven speed, changing curvature and height
        t = u + 0.3 * np.sin(u)
        positions = np.stack([2 * np.cos(t) + 0.3 * np.cos(3 * t), 1.5 * np.sin(t), 0.3 + 0.2 * np.sin(2 * t)], axis=1)
    else:  # an accelerating dolly past the object along a gentle arc
        s = np.linspace(-1.0, 1.0, n)
        positions = np.stack([1.5 * s + 0.5 * s**3, np.full(n, -2.0) + 0.3 * s**2, np.full(n, 0.4)], axis=1)
    c2w = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        c2w[i, :3, :3] = _look_at(positions[i], 0.1 * np.sin(u[i]))
        c2w[i, :3, 3] = positions[i]
    return c2w


def _median_step(c2w: np.ndarray) -> float:
    return float(np.median(np.linalg.norm(np.diff(c2w[:, :3, 3], axis=0), axis=1)))


@pytest.mark.parametrize("kind", ["circle", "spline", "dolly"])
def test_a_smooth_path_loses_no_frame(kind: str) -> None:
    report = filter_trajectory(_path(kind))
    assert report.kept.all() and report.reasons == {}
    assert report.summary() == f"kept {N} of {N} frames (jerk 0, angular acceleration 0, direction 0)"


@pytest.mark.parametrize("kind", ["circle", "spline"])
def test_jerks_along_the_path_lose_exactly_those_frames(kind: str) -> None:
    c2w = _path(kind)
    frames = [12, 57, 60, 103, 160]
    for k, size in zip(frames, [0.4, 0.6, -0.5, 0.8, 0.4]):  # the camera surges ahead (or lags) for one frame
        c2w[k, :3, 3] += size * (c2w[k + 1, :3, 3] - c2w[k - 1, :3, 3]) / 2  # a fraction of the local step
    report = filter_trajectory(c2w)
    assert report.pruned == frames
    assert set(report.reasons.values()) == {JERK}


def test_rotation_spikes_lose_exactly_those_frames() -> None:
    c2w = _path("spline")
    frames = [5, 33, 90, 91, 150]
    axes = np.random.default_rng(0).normal(size=(len(frames), 3))
    for k, axis, degrees in zip(frames, axes, [1.5, 3.0, 2.0, 10.0, 1.5]):
        spike = Rotation.from_rotvec(np.radians(degrees) * axis / np.linalg.norm(axis)).as_matrix()
        c2w[k, :3, :3] = spike @ c2w[k, :3, :3]
    report = filter_trajectory(c2w)
    assert report.pruned == frames
    assert set(report.reasons.values()) == {ANGULAR}


def test_direction_flips_lose_exactly_the_frames_where_the_camera_turns_back() -> None:
    c2w = _path("spline")
    # The camera walks to frame 70, back to frame 20 (capture index 120), then forward again.
    order = np.r_[np.arange(0, 71), np.arange(69, 19, -1), np.arange(21, 100)]
    report = filter_trajectory(c2w[order])
    assert report.pruned == [70, 120]
    assert set(report.reasons.values()) == {DIRECTION}
    assert report.segments(min_length=9) == [(0, 70), (71, 120), (121, len(order))]


def test_a_large_single_frame_spike_is_blamed_on_that_frame_not_its_neighbours() -> None:
    # Every window around a displaced frame is an outlier, its neighbours' too: only the frame itself may go.
    c2w = _path("circle")
    frames = [0, 45, 46 + 4, 120, N - 1]
    directions = np.random.default_rng(1).normal(size=(len(frames), 3))
    step = _median_step(c2w)
    for k, d in zip(frames, directions):
        c2w[k, :3, 3] += 8 * step * d / np.linalg.norm(d)
    report = filter_trajectory(c2w)
    assert report.pruned == frames


def test_mixed_faults_are_counted_by_reason() -> None:
    c2w = _path("circle")
    step = _median_step(c2w)
    for k in (30, 100):
        along = c2w[k + 1, :3, 3] - c2w[k - 1, :3, 3]
        c2w[k, :3, 3] += 0.5 * step * along / np.linalg.norm(along)
    c2w[150, :3, :3] = Rotation.from_rotvec(np.radians([0.0, 2.0, 0.0])).as_matrix() @ c2w[150, :3, :3]
    report = filter_trajectory(c2w[:, :3, :])  # [n, 3, 4] works as [n, 4, 4]
    assert report.reasons == {30: JERK, 100: JERK, 150: ANGULAR}
    assert report.summary() == f"kept {N - 3} of {N} frames (jerk 2, angular acceleration 1, direction 0)"
    assert report.segments(min_length=60) == [(31, 100)]


def test_a_higher_threshold_keeps_a_mild_fault() -> None:
    c2w = _path("circle")
    along = c2w[81, :3, 3] - c2w[79, :3, 3]
    c2w[80, :3, 3] += 0.4 * _median_step(c2w) * along / np.linalg.norm(along)
    assert filter_trajectory(c2w).pruned == [80]
    assert filter_trajectory(c2w, TrajectoryFilterConfig(mad_threshold=100.0)).pruned == []


def test_torch_poses_are_accepted() -> None:
    c2w = _path("circle")
    c2w[77, :3, 3] += 5 * _median_step(c2w)
    assert filter_trajectory(torch.from_numpy(c2w).float()).pruned == [77]


def test_a_nan_pose_is_one_sentence_naming_the_frame() -> None:
    c2w = _path("circle")
    c2w[37, 1, 2] = np.nan
    with pytest.raises(TrajectoryFilterError) as info:
        filter_trajectory(c2w)
    message = str(info.value)
    assert "frame 37" in message and "NaN" in message and "\n" not in message


@pytest.mark.parametrize(
    ("poses", "fragment"),
    [
        (np.zeros((10, 4)), "shape [n, 3, 4] or [n, 4, 4]"),
        (np.zeros((10, 3, 3)), "shape [n, 3, 4] or [n, 4, 4]"),
        (np.concatenate([_path("circle", 10)[:4], np.zeros((1, 4, 4))]), "frame 4 has no proper rotation"),
    ],
)
def test_bad_poses_are_one_sentence(poses: np.ndarray, fragment: str) -> None:
    with pytest.raises(TrajectoryFilterError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        filter_trajectory(poses)


def test_bad_options_are_one_sentence() -> None:
    with pytest.raises(TrajectoryFilterError, match="mad_threshold must be a non-negative number"):
        TrajectoryFilterConfig(mad_threshold=float("nan"))
    with pytest.raises(TrajectoryFilterError, match="direction_window must be at least 1"):
        TrajectoryFilterConfig(direction_window=0)


def test_a_very_short_path_keeps_everything() -> None:
    report = filter_trajectory(_path("circle", 3))
    assert report.kept.tolist() == [True, True, True] and report.summary().startswith("kept 3 of 3 frames")


def test_segments_are_the_runs_of_kept_frames() -> None:
    report = TrajectoryReport(np.array([True, True, False, True, False, False, True, True, True]), {})
    assert report.segments() == [(0, 2), (3, 4), (6, 9)]
    assert report.segments(min_length=3) == [(6, 9)]
