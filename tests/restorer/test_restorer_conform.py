import pytest
import torch

from restorer.conform import from_model, internal_frame_count, plan_conform, resample_indices, to_model


@pytest.mark.parametrize("given,expected", [(2, 17), (9, 17), (17, 17), (18, 25), (49, 49), (50, 57), (121, 121)])
def test_internal_frame_count(given, expected):
    assert internal_frame_count(given) == expected


def test_plan_native_and_capped():
    native = plan_conform(49, 540, 960)
    assert (native.frames, native.height, native.width) == (49, 544, 960)
    capped = plan_conform(49, 540, 960, max_side=256)
    # 540 * 256/960 = 144 -> nearest multiple of 32 is 128 (144/32 = 4.5 rounds to even)
    assert (capped.frames, capped.height, capped.width) == (49, 128, 256)
    tiny = plan_conform(3, 10, 20)
    assert (tiny.frames, tiny.height, tiny.width) == (17, 32, 32)


def test_resample_indices_keep_boundaries():
    assert resample_indices(2, 17).tolist() == [0] * 9 + [1] * 8
    assert resample_indices(17, 2).tolist() == [0, 16]
    assert resample_indices(10, 17).tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 6, 6, 7, 7, 8, 8, 9]
    assert resample_indices(49, 49).tolist() == list(range(49))


def test_round_trip_restores_exact_shape():
    video = torch.rand(10, 50, 70, 3)
    plan = plan_conform(10, 50, 70)
    inner = to_model(video, plan)
    assert inner.shape == (17, 64, 64, 3)
    back = from_model(inner, plan)
    assert back.shape == video.shape


def test_conforming_clip_passes_through_unchanged():
    video = torch.rand(17, 64, 96, 3)
    plan = plan_conform(17, 64, 96)
    assert torch.equal(to_model(video, plan), video)
    assert torch.equal(from_model(video, plan), video)
