import pytest
import torch

from restorer import ANCHOR_TAIL_FRAMES, RestorerInputError, build_reference_video
from restorer.dba import anchor_frame_mask


def _frames(num_frames, height=2, width=3):
    # frame i is filled with the value i / 100 so every frame is identifiable
    return torch.arange(num_frames, dtype=torch.float32).div(100).view(-1, 1, 1, 1).expand(num_frames, height, width, 3).clone()


def test_anchor_tail_is_one_latent_chunk():
    assert ANCHOR_TAIL_FRAMES == 8


def test_reference_layout_matches_eq1_for_17_frames():
    frames = _frames(17)
    a = torch.full((2, 3, 3), 0.9)
    b = torch.full((2, 3, 3), 0.7)
    ref = build_reference_video(frames, a, b)
    # expected, built by hand: [A, art1 .. art8, B x 8]
    expected_values = [0.9] + [i / 100 for i in range(1, 9)] + [0.7] * 8
    assert ref.shape == (17, 2, 3, 3)
    assert torch.allclose(ref[:, 0, 0, 0], torch.tensor(expected_values))
    assert torch.equal(frames, _frames(17)), "input must not be modified"


def test_reference_layout_49_frames_and_custom_k():
    frames = _frames(49)
    a, b = torch.ones(2, 3, 3), torch.zeros(2, 3, 3)
    ref = build_reference_video(frames, a, b, k=8)
    assert ref[0].eq(1).all()
    assert ref[41:].eq(0).all() and ref[41:].shape[0] == 8
    assert torch.equal(ref[1:41], frames[1:41])
    ref4 = build_reference_video(frames, a, b, k=4)
    assert ref4[45:].eq(0).all() and torch.equal(ref4[1:45], frames[1:45])


def test_anchor_mask():
    assert anchor_frame_mask(17).tolist() == [True] + [False] * 8 + [True] * 8


@pytest.mark.parametrize("num_frames", [1, 8])
def test_too_short_for_dba(num_frames):
    with pytest.raises(RestorerInputError, match="at least k \\+ 1 = 9 frames"):
        build_reference_video(_frames(num_frames), torch.zeros(2, 3, 3), torch.zeros(2, 3, 3))


def test_anchor_shape_mismatch():
    with pytest.raises(RestorerInputError, match="last_anchor must have shape"):
        build_reference_video(_frames(17), torch.zeros(2, 3, 3), torch.zeros(3, 3, 3))
