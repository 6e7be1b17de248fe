import pytest
import torch

from artifactworld_ns.restorer import RestorerInputError, build_reference_video
from artifactworld_ns.restorer.dba import (
    ANCHOR_TAIL_FRAMES,
    ClipLengthError,
    anchor_frame_mask,
    black_tail,
    check_clip_length,
    nearest_clip_length,
    reference_length,
    trim_to_clip,
)


def _frames(num_frames, height=2, width=3):
    # frame i is filled with the value i / 100 so every frame is identifiable
    return (
        torch.arange(num_frames, dtype=torch.float32)
        .div(100)
        .view(-1, 1, 1, 1)
        .expand(num_frames, height, width, 3)
        .clone()
    )


def test_reference_appends_the_tail_anchor_official_layout():
    # tools/process_videos.py: [gt_first] + artifact[1:-1] + [gt_last] + [gt_last] * 8
    frames = _frames(9)
    a, b = torch.full((2, 3, 3), 0.9), torch.full((2, 3, 3), 0.7)
    ref = build_reference_video(frames, a, b)
    expected_values = [0.9] + [i / 100 for i in range(1, 8)] + [0.7] * 9  # built by hand
    assert ref.shape == (17, 2, 3, 3)
    assert torch.allclose(ref[:, 0, 0, 0], torch.tensor(expected_values))
    assert torch.equal(frames, _frames(9)), "input must not be modified"


def test_trained_length_89_becomes_97_and_trims_back():
    frames = _frames(89)
    ref = build_reference_video(frames, torch.ones(2, 3, 3), torch.zeros(2, 3, 3))
    assert ref.shape[0] == reference_length(89) == 97
    assert ref[0].eq(1).all() and ref[88:].eq(0).all() and torch.equal(ref[1:88], frames[1:88])
    assert torch.equal(trim_to_clip(ref, 89), ref[:89])


def test_clip_length_rule_is_8n_plus_1():
    assert ANCHOR_TAIL_FRAMES == 8
    for good in (9, 17, 89):
        assert check_clip_length(good) == good
    for bad in (1, 8, 10, 20, 96, True):
        with pytest.raises(ClipLengthError, match="is not 8n\\+1"):
            check_clip_length(bad)
    assert [nearest_clip_length(n) for n in (2, 9, 10, 20, 89)] == [9, 9, 17, 25, 89]


def test_anchor_mask_and_black_tail():
    assert anchor_frame_mask(17).tolist() == [True] + [False] * 7 + [True] * 9
    heatmap = torch.ones(17, 2, 2, 3)
    tailed = black_tail(heatmap)
    assert tailed[:8].eq(1).all() and tailed[8:].eq(0).all() and heatmap.eq(1).all()


def test_too_short_and_shape_mismatch():
    with pytest.raises(RestorerInputError, match="at least 2 frames"):
        build_reference_video(_frames(1), torch.zeros(2, 3, 3), torch.zeros(2, 3, 3))
    with pytest.raises(RestorerInputError, match="last_anchor must have shape"):
        build_reference_video(_frames(17), torch.zeros(2, 3, 3), torch.zeros(3, 3, 3))
