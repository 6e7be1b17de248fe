"""Window planning, overlap blending and bridges of aw-render's restoration post-pass (no scene needed)."""

from __future__ import annotations

import pytest
import torch

from artifactworld_ns.geometry import look_at
from artifactworld_ns.windows import (
    WindowPlanError,
    blend_weights,
    blend_windows,
    bridge_lengths,
    bridge_window,
    plan_windows,
)

CASES = [(n, w, o) for n in (1, 5, 9, 10, 16, 17, 33, 34, 60, 61, 100, 241) for w in (9, 17, 33) for o in (0, 2, 4)]


@pytest.mark.parametrize("num_frames,window_frames,overlap", CASES)
def test_windows_cover_every_frame_with_8n_plus_1_lengths(num_frames, window_frames, overlap):
    windows = plan_windows(num_frames, window_frames, overlap)
    covered = torch.zeros(num_frames, dtype=torch.int64)
    for win in windows:
        assert 0 <= win.start < win.stop <= num_frames
        covered[win.start : win.stop] += 1
        if num_frames >= 9:
            assert (win.length - 1) % 8 == 0 and 9 <= win.length <= window_frames
        else:
            assert win.length == num_frames
    assert bool((covered >= 1).all())
    assert windows[0].start == 0 and windows[-1].stop == num_frames
    for a, b in zip(windows, windows[1:]):
        assert a.start < b.start
        assert a.stop - b.start >= min(overlap, (a.length - 1) // 2)


@pytest.mark.parametrize("num_frames,window_frames,overlap", CASES)
def test_blend_weights_are_a_partition_of_unity(num_frames, window_frames, overlap):
    windows = plan_windows(num_frames, window_frames, overlap)
    weights = blend_weights(windows, num_frames)
    assert torch.allclose(weights.sum(0), torch.ones(num_frames, dtype=weights.dtype), atol=1e-12)
    assert bool((weights >= 0).all())
    for i, win in enumerate(windows):
        outside = torch.ones(num_frames, dtype=torch.bool)
        outside[win.start : win.stop] = False
        assert bool((weights[i][outside] == 0).all())


def test_overlap_cross_fade_is_linear():
    windows = plan_windows(60, 33, 8)
    assert len(windows) >= 2
    weights = blend_weights(windows, 60)
    a, b = windows[0], windows[1]
    length = a.stop - b.start
    later = weights[1, b.start : a.stop]
    expected = torch.arange(1, length + 1, dtype=torch.float64) / (length + 1)
    if len(windows) == 2 or windows[2].start >= a.stop:
        assert torch.allclose(later, expected)
        assert torch.allclose(weights[0, b.start : a.stop], 1 - expected)
    # Outside any overlap a window has weight exactly one.
    assert bool((weights[0, : b.start] == 1).all())


def test_blending_constant_windows_reproduces_the_constant_and_shape():
    windows = plan_windows(61, 17, 4)
    restored = [torch.full((w.length, 4, 6, 3), 0.25) for w in windows]
    out = blend_windows(windows, restored, 61)
    assert out.shape == (61, 4, 6, 3)
    assert torch.allclose(out, torch.full_like(out, 0.25))


def test_blending_takes_each_frame_from_its_windows():
    """A window whose restored frames equal the frame index blends back to the frame index."""
    windows = plan_windows(50, 17, 6)
    restored = [torch.arange(w.start, w.stop, dtype=torch.float64).view(-1, 1) for w in windows]
    out = blend_windows(windows, restored, 50)
    assert torch.allclose(out[:, 0], torch.arange(50, dtype=torch.float64))


@pytest.mark.parametrize(
    "window_frames,overlap,match",
    [(10, 2, "8n \\+ 1"), (8, 2, "8n \\+ 1"), (1, 0, "8n \\+ 1"), (17, 9, "--overlap"), (17, -1, "--overlap")],
)
def test_bad_window_options_are_one_sentence(window_frames, overlap, match):
    with pytest.raises(WindowPlanError, match=match) as info:
        plan_windows(40, window_frames, overlap)
    assert str(info.value).count(". ") == 0 and str(info.value).endswith(".")


def _circle_poses(n: int, radius: float = 2.0, start: float = 0.0, stop: float = 3.0) -> torch.Tensor:
    angles = torch.linspace(start, stop, n, dtype=torch.float64)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    return torch.stack(
        [
            look_at(
                torch.stack([radius * a.cos(), radius * a.sin(), torch.tensor(0.3, dtype=torch.float64)]),
                torch.zeros(3, dtype=torch.float64),
                up,
            )
            for a in angles
        ]
    )


@pytest.mark.parametrize("length,bridge", [(33, 8), (17, 8), (9, 12), (5, 8), (1, 8)])
def test_bridge_lengths_make_8m_plus_1_clips(length, bridge):
    n_in, n_out = bridge_lengths(length, bridge)
    assert n_out == bridge >= 8 and n_in >= bridge
    assert (n_in + length + n_out - 1) % 8 == 0


def test_bridges_start_and_end_at_the_nearest_training_views():
    path = _circle_poses(40, start=0.2, stop=2.2)
    train = _circle_poses(6, radius=2.3, start=0.0, stop=3.0)
    window = plan_windows(40, 17, 4)[1]
    bridged = bridge_window(window, path, train, bridge_frames=8)
    poses = bridged.poses
    assert poses.shape[0] == bridged.bridge_in + window.length + bridged.bridge_out
    assert (poses.shape[0] - 1) % 8 == 0
    # Anchors are the training views nearest (by camera centre) to the window's first and last poses.
    d_first = (train[:, :3, 3] - path[window.start, :3, 3]).norm(dim=-1)
    d_last = (train[:, :3, 3] - path[window.stop - 1, :3, 3]).norm(dim=-1)
    assert bridged.first_train == int(d_first.argmin()) and bridged.last_train == int(d_last.argmin())
    assert torch.allclose(poses[0], train[bridged.first_train], atol=1e-9)
    assert torch.allclose(poses[-1], train[bridged.last_train], atol=1e-9)
    assert torch.equal(poses[bridged.window_slice], path[window.start : window.stop])
    # The bridges move steadily: camera centres approach the window along the in-bridge.
    centres = poses[: bridged.bridge_in + 1, :3, 3]
    gaps = (centres - path[window.start, :3, 3]).norm(dim=-1)
    assert bool((gaps[1:] <= gaps[:-1] + 1e-12).all())


def test_too_short_bridges_are_refused():
    with pytest.raises(WindowPlanError, match="--bridge-frames"):
        bridge_lengths(17, 7)
