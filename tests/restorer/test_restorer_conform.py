import pytest
import torch

from artifactworld_ns.restorer.conform import OFFICIAL_SIZE, from_model, plan_conform, resample_indices, to_model


@pytest.mark.parametrize("given,expected", [(2, 9), (9, 9), (10, 17), (17, 17), (18, 25), (89, 89), (90, 97)])
def test_clip_frames_are_the_next_8n_plus_1(given, expected):
    assert plan_conform(given, 64, 64).frames == expected


def test_plan_native_and_capped():
    native = plan_conform(49, 540, 960)
    assert (native.frames, native.height, native.width, native.cover) == (49, 544, 960, None)
    capped = plan_conform(49, 540, 960, max_side=256)
    # 540 * 256/960 = 144 -> nearest multiple of 32 is 128 (144/32 = 4.5 rounds to even)
    assert (capped.frames, capped.height, capped.width) == (49, 128, 256)
    tiny = plan_conform(3, 10, 20)
    assert (tiny.frames, tiny.height, tiny.width) == (9, 32, 32)


def test_official_size_covers_and_center_crops_benchmark_clips():
    assert OFFICIAL_SIZE == (544, 960)
    plan = plan_conform(89, 540, 960, size=OFFICIAL_SIZE)
    # official: aspect 960/540 > 960/544, so resize_height = 544, resize_width = int(544 * 960 / 540) = 967
    assert (plan.height, plan.width, plan.cover) == (544, 960, (544, 967))
    video = torch.rand(2, 540, 960, 3)
    from torchvision.transforms.functional import center_crop, resize

    official = center_crop(resize(video.permute(0, 3, 1, 2), [544, 967], antialias=True), [544, 960]).permute(
        0, 2, 3, 1
    )
    assert torch.equal(to_model(video[[0, 1]], plan_conform(2, 540, 960, size=OFFICIAL_SIZE))[[0, -1]], official)
    back = from_model(
        to_model(video, plan_conform(2, 540, 960, size=OFFICIAL_SIZE)), plan_conform(2, 540, 960, size=OFFICIAL_SIZE)
    )
    assert back.shape == video.shape


def test_other_aspect_ratios_keep_the_whole_frame_at_the_same_token_budget():
    plan = plan_conform(17, 480, 640, size=OFFICIAL_SIZE)  # 4:3 would lose 24% to the official crop
    assert plan.cover is None
    assert (plan.height, plan.width) == (640, 832)  # sqrt(544*960*3/4) = 625.9 -> 640, sqrt(544*960*4/3) = 834.4 -> 832
    portrait = plan_conform(17, 960, 540, size=OFFICIAL_SIZE)
    assert portrait.cover is None and (portrait.height, portrait.width) == (960, 544)


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
