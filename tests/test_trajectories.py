"""Restoration-round camera paths: reference-guided clips, anchor pairs and the progressive shift."""

from __future__ import annotations

import math

import pytest
import torch

from artifactworld_ns.geometry import (
    TrajectoryError,
    fit_sphere,
    look_at,
    quaternion_to_rotation,
    rotation_angle,
    rotation_to_quaternion,
)
from artifactworld_ns.restorer import ArtifactWorldError, ClipLengthError
from artifactworld_ns.trajectories import (
    ClipPlan,
    choose_anchor_pairs,
    nearest_train_indices,
    plan_clips,
    progressive_clips,
    progressive_shift_poses,
    reference_guided_clip,
)

CENTER = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
UP = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)


def sphere_pose(
    azimuth_deg: float, elevation_deg: float = 0.0, radius: float = 3.0, center: torch.Tensor = CENTER
) -> torch.Tensor:
    """Camera on a sphere about ``center`` looking at it, z up (OpenGL camera-to-world, [3, 4])."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    offset = torch.tensor([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)], dtype=torch.float64)
    return look_at(center + radius * offset, center, UP)


def ring(azimuths, elevation: float = 0.0, radius: float = 3.0) -> torch.Tensor:
    return torch.stack([sphere_pose(a, elevation, radius) for a in azimuths])


def assert_rotations_valid(poses: torch.Tensor, atol: float = 1e-6) -> None:
    rotations = poses[:, :3, :3].double()
    eye = torch.eye(3, dtype=torch.float64).expand_as(rotations)
    assert torch.allclose(rotations @ rotations.transpose(1, 2), eye, atol=atol)
    assert torch.allclose(torch.linalg.det(rotations), torch.ones(len(poses), dtype=torch.float64), atol=atol)


def looks_at(pose: torch.Tensor, target: torch.Tensor, atol: float = 1e-6) -> bool:
    direction = (target - pose[:3, 3].double()) / (target - pose[:3, 3].double()).norm()
    return torch.allclose(-pose[:3, 2].double(), direction, atol=atol)


def test_look_at_is_an_opengl_pose():
    pose = look_at(torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64), torch.zeros(3, dtype=torch.float64), UP)
    # looking along -x with z up: right is +y... camera x = forward x up = (-1,0,0) x (0,0,1) = (0,1,0)
    assert torch.allclose(pose[:, 0], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(pose[:, 1], UP)
    assert torch.allclose(pose[:, 2], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    # straight down: the up vector is parallel, a fallback axis still gives a proper rotation
    down = look_at(torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64), torch.zeros(3, dtype=torch.float64), UP)
    assert_rotations_valid(down[None])
    assert looks_at(down, torch.zeros(3, dtype=torch.float64))


def test_quaternion_round_trip():
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(64, 4, generator=generator, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[:, :1] < 0, -q, q)
    rotations = quaternion_to_rotation(q)
    assert torch.allclose(rotation_to_quaternion(rotations), q, atol=1e-10)
    assert rotation_angle(rotations[0], rotations[0]) == pytest.approx(0.0, abs=1e-6)


def test_fit_sphere_recovers_a_known_sphere():
    poses = torch.cat(
        [ring(range(0, 360, 40), elevation=20.0, radius=2.5), ring([10, 130, 250], elevation=-15.0, radius=2.5)]
    )
    center, radius = fit_sphere(poses.float())
    assert torch.allclose(center, CENTER, atol=1e-5)
    assert radius == pytest.approx(2.5, abs=1e-5)


def test_fit_sphere_center_is_nearest_to_the_axes_for_uneven_distances():
    # Cameras at different distances all looking at CENTER: the axes meet there; radius is the mean distance.
    poses = torch.stack([sphere_pose(0, 0, 2.0), sphere_pose(90, 10, 3.0), sphere_pose(200, -5, 4.0)])
    center, radius = fit_sphere(poses)
    assert torch.allclose(center, CENTER, atol=1e-9)
    assert radius == pytest.approx(3.0, abs=1e-9)


def test_fit_sphere_forward_facing_falls_back_along_the_viewing_direction():
    # Parallel axes (all looking down -z): depth is undetermined, so the centre sits at the cameras'
    # centroid + mean viewing direction x mean distance from the centroid = (0, 0, -sqrt(2)).
    poses = torch.zeros(4, 3, 4, dtype=torch.float64)
    poses[:, :3, :3] = torch.eye(3, dtype=torch.float64)
    poses[:, :2, 3] = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    center, radius = fit_sphere(poses)
    assert torch.allclose(center, torch.tensor([0.0, 0.0, -math.sqrt(2)], dtype=torch.float64), atol=1e-9)
    assert radius == pytest.approx(2.0, abs=1e-9)


def test_fit_sphere_rejects_degenerate_input():
    with pytest.raises(TrajectoryError, match="at least 2"):
        fit_sphere(ring([0]))
    with pytest.raises(TrajectoryError, match=r"\[N, 3, 4\]"):
        fit_sphere(torch.zeros(3, 3, 3))


@pytest.mark.parametrize("num_frames", [0, 1, 8, 16, 20, 24])
def test_clip_length_must_be_8n_plus_1(num_frames):
    with pytest.raises(ClipLengthError) as info:  # the restorer's rule and sentence, not re-wrapped
        reference_guided_clip(sphere_pose(0), sphere_pose(90), CENTER, 3.0, num_frames)
    assert (
        str(info.value)
        == f"Clip length {num_frames} is not 8n+1 (e.g. 17, 25, 33, or 89 as trained); the restorer needs 8n+1 frames."
    )


def test_clip_between_views_on_the_sphere_is_an_even_arc():
    # Both anchors on the sphere looking at the centre: legs (i) and (iii) are empty and the 17
    # frames step 90/16 degrees along the equator.
    a, b = sphere_pose(0), sphere_pose(90)
    clip = reference_guided_clip(a, b, CENTER, 3.0, 17)
    assert clip.shape == (17, 3, 4) and clip.dtype == torch.float64
    assert torch.equal(clip[0], a) and torch.equal(clip[-1], b)
    expected = ring([90 * k / 16 for k in range(17)])
    assert torch.allclose(clip, expected, atol=1e-9)


def test_clip_legs_split_by_length():
    # A sits 2r from the centre looking at it; B on the sphere 90 degrees round. Leg (i) is r long
    # (no rotation), leg (ii) is r*pi/2 of arc + r*pi/2 of turning; frames are uniform in length, so
    # frame k is at k/16 * (1 + pi) r: frames 0..3 on leg (i) at distance 2r - that, the rest on the sphere.
    r = 3.0
    a, b = sphere_pose(0, radius=2 * r), sphere_pose(90, radius=r)
    clip = reference_guided_clip(a, b, CENTER, r, 17)
    distances = (clip[:, :3, 3] - CENTER).norm(dim=-1)
    for k in range(4):
        assert distances[k].item() == pytest.approx(2 * r - k / 16 * (1 + math.pi) * r, abs=1e-9)
    assert torch.allclose(distances[4:], torch.full((13,), r, dtype=torch.float64), atol=1e-9)
    for pose in clip:
        assert looks_at(pose, CENTER)


def test_clip_from_arbitrary_views_starts_and_ends_exactly_and_stays_valid():
    r = 3.0
    tilt = look_at(torch.zeros(3, dtype=torch.float64), torch.tensor([0.3, 1.0, 0.2], dtype=torch.float64), UP)[:, :3]
    a = sphere_pose(-30, 25, 4.2)
    a[:, :3] = (
        a[:, :3]
        @ look_at(
            torch.zeros(3, dtype=torch.float64),
            torch.tensor([0.1, 0.2, -1.0], dtype=torch.float64),
            torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64),
        )[:, :3]
    )
    b = sphere_pose(150, -10, 1.7)
    b[:, :3] = b[:, :3] @ tilt  # B looks away from the centre
    a4 = torch.eye(4, dtype=torch.float32)
    a4[:3] = a.float()
    clip = reference_guided_clip(a4, b.float(), CENTER.float(), r, 33)
    assert clip.shape == (33, 3, 4) and clip.dtype == torch.float32
    assert torch.equal(clip[0], a.float()) and torch.equal(clip[-1], b.float())
    assert_rotations_valid(clip, atol=1e-5)
    distances = (clip[:, :3, 3].double() - CENTER).norm(dim=-1)
    on_sphere = (distances - r).abs() < 1e-4
    assert on_sphere[16]  # the middle of a 180-degree sweep is on the spherical path
    assert on_sphere.sum() >= 10
    for pose in clip[on_sphere]:
        assert looks_at(pose, CENTER, atol=1e-4)
    # no jumps: consecutive frames are close compared with the whole path
    steps = (clip[1:, :3, 3] - clip[:-1, :3, 3]).norm(dim=-1)
    assert steps.max() < 3 * steps.mean()


def test_antipodal_anchors_go_round_the_horizontal():
    clip = reference_guided_clip(sphere_pose(0), sphere_pose(180), CENTER, 3.0, 9)
    assert torch.allclose(clip[:, 2, 3], torch.full((9,), CENTER[2].item(), dtype=torch.float64), atol=1e-9)
    assert torch.allclose((clip[:, :3, 3] - CENTER).norm(dim=-1), torch.full((9,), 3.0, dtype=torch.float64), atol=1e-9)
    assert_rotations_valid(clip)


def test_anchor_pairs_are_ring_neighbours_covering_every_view():
    azimuths = [0, 240, 60, 300, 120, 180]  # indices shuffled around the ring
    poses = ring(azimuths, elevation=10.0)
    pairs = choose_anchor_pairs(poses, 6)
    # ring order by azimuth from camera 0: 0(0) 2(60) 4(120) 5(180) 1(240) 3(300)
    assert pairs == [(0, 2), (2, 4), (4, 5), (5, 1), (1, 3), (3, 0)]
    assert {i for pair in pairs for i in pair} == set(range(6))
    assert choose_anchor_pairs(poses, 6) == pairs  # deterministic


def test_fewer_pairs_are_spread_round_the_ring_and_more_add_second_neighbours():
    poses = ring([0, 240, 60, 300, 120, 180])
    assert choose_anchor_pairs(poses, 3) == [(2, 4), (5, 1), (3, 0)]  # neighbour pairs 1, 3, 5
    pairs = choose_anchor_pairs(poses, 10)
    assert pairs[:6] == [(0, 2), (2, 4), (4, 5), (5, 1), (1, 3), (3, 0)]
    assert pairs[6:] == [(0, 4), (2, 5), (4, 1), (5, 3)]
    assert len({frozenset(p) for p in pairs}) == 10 and all(i != j for i, j in pairs)
    assert len(choose_anchor_pairs(poses, 15)) == 15
    with pytest.raises(
        TrajectoryError, match="16 clips need 16 distinct anchor pairs, but 6 training views give only 15"
    ):
        choose_anchor_pairs(poses, 16)
    assert choose_anchor_pairs(ring([0, 90]), 1) == [(0, 1)]


def test_progressive_shift_lands_on_the_eval_poses_in_the_last_round():
    train = ring([0, 120, 240])
    evals = ring([30, 100, 200, 330], elevation=15.0, radius=2.0)
    last = progressive_shift_poses(train.float(), evals.float(), 3, 4)
    assert torch.equal(last, evals.float())


def test_progressive_shift_round_zero_is_a_fraction_of_the_way():
    train = ring([0, 120, 240])
    evals = ring([30, 100, 200, 330], elevation=15.0, radius=2.0)
    assert nearest_train_indices(train, evals).tolist() == [0, 1, 2, 0]
    shifted = progressive_shift_poses(train, evals, 0, 4)
    assert_rotations_valid(shifted)
    for k, j in enumerate([0, 1, 2, 0]):
        expected = train[j, :, 3] + 0.25 * (evals[k, :, 3] - train[j, :, 3])
        assert torch.allclose(shifted[k, :, 3], expected, atol=1e-12)
        total = rotation_angle(train[j, :, :3], evals[k, :, :3])
        assert rotation_angle(train[j, :, :3], shifted[k, :, :3]) == pytest.approx(0.25 * total, abs=1e-9)
        assert rotation_angle(shifted[k, :, :3], evals[k, :, :3]) == pytest.approx(0.75 * total, abs=1e-9)
    with pytest.raises(TrajectoryError, match="outside 0..3"):
        progressive_shift_poses(train, evals, 4, 4)


def test_progressive_clips_run_from_a_training_view_through_the_shifted_poses():
    train = ring([0, 120, 240])
    evals = ring([20, 40, 100, 200, 330], elevation=15.0, radius=2.0)
    shifted = progressive_shift_poses(train, evals, 1, 3)
    plans = progressive_clips(train, evals, 17, 1, 3)
    # train 0 owns evals 0, 1, 4; train 1 owns 2; train 2 owns 3
    assert [p.anchor_first for p in plans] == [0, 1, 2]
    rendered = torch.cat([p.camera_to_worlds for p in plans])
    for pose in shifted:  # every shifted pose is rendered exactly
        assert (rendered - pose).abs().amax(dim=(1, 2)).min() < 1e-12
    for plan in plans:
        assert plan.camera_to_worlds.shape == (17, 3, 4)
        assert plan.anchor_first != plan.anchor_last
        assert torch.equal(plan.camera_to_worlds[0], train[plan.anchor_first])
        assert torch.equal(plan.camera_to_worlds[-1], train[plan.anchor_last])
        assert_rotations_valid(plan.camera_to_worlds)


def test_progressive_clips_split_long_groups_into_8n_plus_1_chunks():
    train = ring([0, 180])
    evals = ring(list(range(-40, 41, 5)), elevation=10.0, radius=2.5)  # 17 poses, all nearest to view 0
    plans = progressive_clips(train, evals, 9, 0, 2)
    assert len(plans) == 9  # at most (9 - 1) // 4 = 2 shifted poses per clip: 8 x 2 + 1
    assert all(p.camera_to_worlds.shape == (9, 3, 4) for p in plans)
    assert all(p.anchor_first == 0 and p.anchor_last == 1 for p in plans)


def test_plan_clips_reference_guided():
    train = ring(range(0, 360, 45), elevation=12.0, radius=2.0).float()
    plans = plan_clips(train, 4, 25)
    assert len(plans) == 4 and all(isinstance(p, ClipPlan) for p in plans)
    assert [(p.anchor_first, p.anchor_last) for p in plans] == choose_anchor_pairs(train, 4)
    center, radius = fit_sphere(train)
    for plan in plans:
        assert plan.camera_to_worlds.shape == (25, 3, 4) and plan.camera_to_worlds.dtype == torch.float32
        assert torch.equal(plan.camera_to_worlds[0], train[plan.anchor_first])
        assert torch.equal(plan.camera_to_worlds[-1], train[plan.anchor_last])
        assert_rotations_valid(plan.camera_to_worlds, atol=1e-5)
        distances = (plan.camera_to_worlds[:, :3, 3].double() - center).norm(dim=-1)
        assert torch.allclose(distances, torch.full_like(distances, radius), atol=1e-4)
        assert (plan.camera_to_worlds[:, 2, 1] > 0).all()  # a consistent up: image up keeps pointing up


def test_plan_clips_caps_the_clips_at_the_distinct_pairs():
    plans = plan_clips(ring([0, 120, 240]), 5, 9)
    assert [(p.anchor_first, p.anchor_last) for p in plans] == [(0, 1), (1, 2), (2, 0)]


def test_plan_clips_progressive_and_errors():
    train = ring([0, 120, 240])
    evals = ring([20, 40, 100, 200, 330], elevation=15.0, radius=2.0)
    plans = plan_clips(train, 2, 17, mode="progressive", eval_poses=evals, round_index=0, num_rounds=2)
    assert [p.anchor_first for p in plans] == [0, 2]  # clips 0 and 2 of 3
    assert len(plan_clips(train, 5, 17, mode="progressive", eval_poses=evals)) == 3
    with pytest.raises(TrajectoryError, match="evaluation poses"):
        plan_clips(train, 2, 17, mode="progressive")
    with pytest.raises(TrajectoryError, match="'orbit' is unknown"):
        plan_clips(train, 2, 17, mode="orbit")  # type: ignore[arg-type]
    with pytest.raises(ClipLengthError, match="Clip length 10 is not 8n\\+1"):
        plan_clips(train, 2, 10)
    assert issubclass(TrajectoryError, ValueError) and issubclass(TrajectoryError, ArtifactWorldError)
    assert issubclass(ClipLengthError, ValueError) and issubclass(ClipLengthError, ArtifactWorldError)
