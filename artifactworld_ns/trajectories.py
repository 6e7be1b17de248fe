"""Camera paths for the closed loop's restoration rounds (ArtifactWorld paper Sec. 4.4).

Poses are nerfstudio camera-to-world matrices (OpenGL convention: the camera looks along its -z
axis, +y is up, +x is right), ``[N, 3, 4]`` or ``[N, 4, 4]``; outputs are always ``[.., 3, 4]`` in
the dtype of the input. All maths runs in float64.

Two ways to place the novel views a round renders and restores:

- **Reference-guided sampling** (GSFixer, used by ArtifactWorld): a clip starts exactly at training
  view A, moves to the nearest pose on a sphere fitted to the training cameras (looking at its
  centre), follows the great-circle arc on that sphere, and moves on to end exactly at training view
  B. See :func:`fit_sphere`, :func:`reference_guided_clip`, :func:`choose_anchor_pairs`.
- **Progressive pose shift** (Difix3D's alternative): every evaluation pose's nearest training pose
  is moved toward it by ``(round + 1) / rounds``, so later rounds render closer to the evaluation
  views. See :func:`progressive_shift_poses` and :func:`progressive_clips`.

:func:`plan_clips` ties both together into :class:`ClipPlan` objects of ``8n+1`` frames whose first
frame is a training view and whose last frame is a training view, as the restorer's boundary
anchors (DBA) need.

The pose maths (slerp, look-at, the fitted sphere, ring order, nearest poses) lives in :mod:`artifactworld_ns.geometry`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Literal, Optional, Sequence, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from artifactworld_ns.geometry import (
    TrajectoryError,
    arc_points,
    as_poses,
    fit_sphere,
    interpolate_poses,
    look_at,
    mean_up_vector,
    nearest_train_indices,
    on_sphere,
    project_to_rotation,
    ring_order,
    rotation_angle,
)
from artifactworld_ns.restorer import check_clip_length

ClipMode = Literal["reference_guided", "progressive"]


def reference_guided_clip(
    pose_a: Float[Tensor, "3 4"],
    pose_b: Float[Tensor, "3 4"],
    center: Float[Tensor, "3"],
    radius: float,
    num_frames: int,
    up: Optional[Float[Tensor, "3"]] = None,
) -> Float[Tensor, "num_frames 3 4"]:
    """GSFixer's reference-guided trajectory from training view A to training view B (paper Sec. 4.4).

    Three legs: (i) from A to ``S_A``, the nearest point of the sphere looking at ``center``;
    (ii) along the great-circle arc from ``S_A`` to ``S_B`` with look-at rotations (consistent ``up``);
    (iii) from ``S_B`` to B. Legs (i) and (iii) interpolate positions linearly and rotations by slerp.

    Frames are spaced uniformly in path length, where a leg's length is the distance its camera
    travels plus ``radius`` times the angle its rotation turns; so each leg gets frames in proportion
    to its length, and a camera already on the sphere and looking at the centre adds no frames for
    its leg. Frame 0 is exactly ``pose_a`` and the last frame exactly ``pose_b`` (copied, in the
    input dtype).

    Args:
        pose_a, pose_b: the anchor training views' camera-to-world matrices (``[3, 4]`` or ``[4, 4]``).
        center, radius: the spherical path, e.g. from :func:`fit_sphere`.
        num_frames: clip length, ``8n+1``.
        up: world up of the look-at poses; defaults to the mean up axis of A and B.

    Raises:
        ClipLengthError: ``num_frames`` not ``8n+1``.
        TrajectoryError: bad shapes or a non-positive radius.
    """
    check_clip_length(num_frames)
    if not radius > 0:
        raise TrajectoryError(f"The spherical path's radius must be positive, got {radius}.")
    out_dtype = pose_a.dtype if pose_a.is_floating_point() else torch.float32
    a = as_poses(pose_a, "first anchor pose")[0]
    b = as_poses(pose_b, "last anchor pose")[0]
    a[:, :3], b[:, :3] = project_to_rotation(a[:, :3]), project_to_rotation(b[:, :3])
    c = center.detach().to(device="cpu", dtype=torch.float64).reshape(3)
    up_vec = (
        mean_up_vector(torch.stack([a, b]))
        if up is None
        else up.detach().to(device="cpu", dtype=torch.float64).reshape(3)
    )
    up_vec = up_vec / up_vec.norm()

    sphere_a = look_at(on_sphere(a[:, 3], c, radius, up_vec), c, up_vec)
    sphere_b = look_at(on_sphere(b[:, 3], c, radius, up_vec), c, up_vec)

    def leg_length(p: Tensor, q: Tensor) -> float:
        return float((p[:, 3] - q[:, 3]).norm()) + radius * rotation_angle(p[:, :3], q[:, :3])

    arc_angle = math.acos(max(-1.0, min(1.0, float(((sphere_a[:, 3] - c) @ (sphere_b[:, 3] - c)) / radius**2))))
    lengths = [
        leg_length(a, sphere_a),
        radius * arc_angle + radius * rotation_angle(sphere_a[:, :3], sphere_b[:, :3]),
        leg_length(sphere_b, b),
    ]
    total = sum(lengths)
    along = torch.linspace(0.0, 1.0, num_frames, dtype=torch.float64) * total
    frames = torch.empty(num_frames, 3, 4, dtype=torch.float64)
    bounds = [0.0, lengths[0], lengths[0] + lengths[1], total]
    leg_of = torch.bucketize(along, torch.tensor(bounds[1:3], dtype=torch.float64), right=True)
    for leg in range(3):
        mask = leg_of == leg
        if not mask.any():
            continue
        fraction = (along[mask] - bounds[leg]) / max(lengths[leg], 1e-300)
        fraction = fraction.clamp(0.0, 1.0)
        if leg == 0:
            frames[mask] = interpolate_poses(a, sphere_a, fraction)
        elif leg == 2:
            frames[mask] = interpolate_poses(sphere_b, b, fraction)
        else:
            points = arc_points(sphere_a[:, 3], sphere_b[:, 3], c, radius, up_vec, fraction)
            frames[mask] = torch.stack([look_at(p, c, up_vec) for p in points])
    result = frames.to(out_dtype)
    result[0] = pose_a[:3, :4].detach().to(device="cpu", dtype=out_dtype)
    result[-1] = pose_b[:3, :4].detach().to(device="cpu", dtype=out_dtype)
    return result


def choose_anchor_pairs(
    camera_to_worlds: Float[Tensor, "n 3 4"],
    num_clips: int,
    center: Optional[Float[Tensor, "3"]] = None,
    up: Optional[Float[Tensor, "3"]] = None,
) -> List[Tuple[int, int]]:
    """Pairs ``(i, j)`` of training views whose reference-guided clips sweep around the scene.

    The training cameras are ordered by azimuth about the sphere's up axis (``center`` defaults to
    :func:`fit_sphere`, ``up`` to :func:`mean_up_vector`), starting at camera 0. Candidate pairs are
    ring neighbours ``(o_k, o_{k+1})`` for ``k = 0..N-1`` (the last wraps to the first), then
    second neighbours ``(o_k, o_{k+2})``, and so on, skipping pairs already taken in either
    direction. The first ``num_clips`` candidates are used, except that when fewer than ``N``
    neighbour pairs are wanted they are spread evenly round the ring (pair ``floor((2m+1) N / (2 num_clips))``
    for ``m = 0..num_clips-1``). With ``num_clips >= N`` every training view is an anchor.

    Raises:
        TrajectoryError: fewer than 2 cameras, ``num_clips < 1``, or more clips than distinct pairs.
    """
    poses = as_poses(camera_to_worlds, "training poses")
    n = poses.shape[0]
    if n < 2:
        raise TrajectoryError(f"Anchor pairs need at least 2 training views, got {n}.")
    if isinstance(num_clips, bool) or not isinstance(num_clips, int) or num_clips < 1:
        raise TrajectoryError(f"The number of clips must be a positive whole number, got {num_clips!r}.")
    distinct = n * (n - 1) // 2
    if num_clips > distinct:
        raise TrajectoryError(
            f"{num_clips} clips need {num_clips} distinct anchor pairs, but {n} training views give only {distinct}."
        )
    if center is None:
        center, _ = fit_sphere(poses)
    c = center.detach().to(device="cpu", dtype=torch.float64).reshape(3)
    up_vec = mean_up_vector(poses) if up is None else up.detach().to(device="cpu", dtype=torch.float64).reshape(3)
    up_vec = up_vec / up_vec.norm()
    order = ring_order(poses[:, :3, 3], c, up_vec)

    candidates: List[Tuple[int, int]] = []
    seen = set()
    for step in range(1, n):
        for k in range(n):
            pair = (order[k], order[(k + step) % n])
            key = frozenset(pair)
            if key not in seen:
                seen.add(key)
                candidates.append(pair)
    neighbours = candidates[: n if n > 2 else 1]  # ring neighbours (a single pair for two views)
    if num_clips < len(neighbours):
        return [neighbours[((2 * m + 1) * len(neighbours)) // (2 * num_clips)] for m in range(num_clips)]
    return candidates[:num_clips]


# -------------------------------------------------------------------------------- progressive pose shift (Difix3D)


def _check_round(round_index: int, num_rounds: int) -> None:
    if isinstance(num_rounds, bool) or not isinstance(num_rounds, int) or num_rounds < 1:
        raise TrajectoryError(f"The number of rounds must be a positive whole number, got {num_rounds!r}.")
    if isinstance(round_index, bool) or not isinstance(round_index, int) or not 0 <= round_index < num_rounds:
        raise TrajectoryError(f"Round index {round_index!r} is outside 0..{num_rounds - 1} for {num_rounds} rounds.")


def progressive_shift_poses(
    train_poses: Float[Tensor, "n 3 4"],
    eval_poses: Float[Tensor, "m 3 4"],
    round_index: int,
    num_rounds: int,
) -> Float[Tensor, "m 3 4"]:
    """Difix3D's progressive pose shift: each evaluation pose's nearest training pose, moved toward it.

    The shift is the fraction ``(round_index + 1) / num_rounds`` of the way (positions lerp, rotations
    slerp), so round 0 of 4 is a quarter of the way and the last round lands exactly on the
    evaluation poses (returned as copies). Output order follows ``eval_poses``; dtype follows
    ``train_poses``.
    """
    _check_round(round_index, num_rounds)
    train = as_poses(train_poses, "training poses")
    evals = as_poses(eval_poses, "evaluation poses")
    if train.shape[0] < 1:
        raise TrajectoryError("The progressive pose shift needs at least 1 training view.")
    out_dtype = train_poses.dtype if train_poses.is_floating_point() else torch.float32
    if round_index == num_rounds - 1:
        return eval_poses[..., :3, :4].detach().to(device="cpu", dtype=out_dtype).reshape(-1, 3, 4).clone()
    fraction = torch.tensor([(round_index + 1) / num_rounds], dtype=torch.float64)
    nearest = nearest_train_indices(train, evals)
    shifted = [interpolate_poses(train[j], evals[i], fraction)[0] for i, j in enumerate(nearest.tolist())]
    if not shifted:
        return torch.empty(0, 3, 4, dtype=out_dtype)
    return torch.stack(shifted).to(out_dtype)


def _allocate(extra: int, lengths: Sequence[float]) -> List[int]:
    """Split ``extra`` frames over segments in proportion to ``lengths`` (largest remainder, ties: first)."""
    total = sum(lengths)
    if total <= 0:
        shares = [extra / len(lengths)] * len(lengths)
    else:
        shares = [extra * length / total for length in lengths]
    counts = [int(math.floor(s)) for s in shares]
    remainders = sorted(range(len(lengths)), key=lambda i: (-(shares[i] - counts[i]), i))
    for i in remainders[: extra - sum(counts)]:
        counts[i] += 1
    return counts


def _through_keys(keys: Float[Tensor, "k 3 4"], num_frames: int, radius: float) -> Float[Tensor, "num_frames 3 4"]:
    """A clip of ``num_frames`` that passes exactly through every key pose in order.

    The ``num_frames - k`` in-between frames are split over the ``k - 1`` segments in proportion to
    their lengths (distance + ``radius`` x rotation angle) and placed evenly inside each segment.
    """
    segments = len(keys) - 1
    lengths = [
        float((keys[s + 1, :, 3] - keys[s, :, 3]).norm()) + radius * rotation_angle(keys[s, :, :3], keys[s + 1, :, :3])
        for s in range(segments)
    ]
    counts = _allocate(num_frames - len(keys), lengths)
    frames = [keys[0]]
    for s in range(segments):
        inner = counts[s]
        if inner:
            fractions = torch.arange(1, inner + 1, dtype=torch.float64) / (inner + 1)
            frames.extend(interpolate_poses(keys[s], keys[s + 1], fractions))
        frames.append(keys[s + 1])
    return torch.stack(frames)


@dataclass
class ClipPlan:
    """One clip for a restoration round: render these poses, restore with the two anchors' images.

    ``camera_to_worlds[0]`` is training view ``anchor_first`` and ``camera_to_worlds[-1]`` is
    training view ``anchor_last`` (indices into the training poses given to :func:`plan_clips`).
    """

    anchor_first: int
    anchor_last: int
    camera_to_worlds: Float[Tensor, "num_frames 3 4"]


def progressive_clips(
    train_poses: Float[Tensor, "n 3 4"],
    eval_poses: Float[Tensor, "m 3 4"],
    num_frames: int,
    round_index: int,
    num_rounds: int,
) -> List[ClipPlan]:
    """Group Difix3D's shifted poses into restorer clips anchored by training views.

    Each shifted pose belongs to its evaluation pose's nearest training view. Per training view
    (in index order), its shifted poses are chained greedily nearest-first starting from that view
    and cut into chunks of at most ``(num_frames - 1) // 4`` (4 for 17 frames), so that about three
    quarters of a clip's frames are interpolated and consecutive frames stay close. A chunk's clip starts exactly at the training
    view nearest to its first shifted pose, passes exactly through every shifted pose in chain order
    and ends exactly at the training view nearest to its last shifted pose other than the first anchor;
    the remaining frames are interpolated between consecutive poses (see :func:`_through_keys`).

    Raises:
        ClipLengthError: ``num_frames`` not ``8n+1``.
        TrajectoryError: fewer than 2 training views, or a bad round.
    """
    check_clip_length(num_frames)
    _check_round(round_index, num_rounds)
    train = as_poses(train_poses, "training poses")
    evals = as_poses(eval_poses, "evaluation poses")
    n = train.shape[0]
    if n < 2:
        raise TrajectoryError(f"Progressive clips need at least 2 training views to anchor both ends, got {n}.")
    out_dtype = train_poses.dtype if train_poses.is_floating_point() else torch.float32
    shifted = progressive_shift_poses(train, evals, round_index, num_rounds)
    owner = nearest_train_indices(train, evals).tolist()
    positions = train[:, :, 3]
    scale = float((positions - positions.mean(0)).norm(dim=-1).mean()) or 1.0  # weighs rotation against distance
    plans: List[ClipPlan] = []
    for anchor in range(n):
        members = [i for i, o in enumerate(owner) if o == anchor]
        chain: List[int] = []
        position = train[anchor, :, 3]
        while members:
            nxt = min(members, key=lambda i: (float((shifted[i, :, 3] - position).norm()), i))
            chain.append(nxt)
            members.remove(nxt)
            position = shifted[nxt, :, 3]
        per_clip = max(1, (num_frames - 1) // 4)
        for start in range(0, len(chain), per_clip):
            chunk = shifted[chain[start : start + per_clip]]
            first = int(nearest_train_indices(train, chunk[:1])[0])
            others = [j for j in range(n) if j != first]
            last = others[int(nearest_train_indices(train[others], chunk[-1:])[0])]
            keys = torch.cat([train[first : first + 1], chunk, train[last : last + 1]])
            clip = _through_keys(keys, num_frames, scale).to(out_dtype)
            clip[0] = train_poses[first, :3, :4].detach().to(device="cpu", dtype=out_dtype)
            clip[-1] = train_poses[last, :3, :4].detach().to(device="cpu", dtype=out_dtype)
            plans.append(ClipPlan(first, last, clip))
    return plans


def plan_clips(
    train_poses: Float[Tensor, "n 3 4"],
    num_clips: int,
    num_frames: int,
    mode: ClipMode = "reference_guided",
    eval_poses: Optional[Float[Tensor, "m 3 4"]] = None,
    round_index: int = 0,
    num_rounds: int = 1,
) -> List[ClipPlan]:
    """The clips one restoration round renders.

    ``"reference_guided"``: :func:`fit_sphere` on the training poses, :func:`choose_anchor_pairs` for
    ``num_clips`` pairs (at most the ``N (N - 1) / 2`` distinct pairs of ``N`` training views, so
    3 views give at most 3 clips), and :func:`reference_guided_clip` for each (``eval_poses`` and
    the round arguments are unused). ``"progressive"``: :func:`progressive_clips` for ``eval_poses`` at this
    round; when that gives more than ``num_clips`` clips, an evenly spread subset is kept (clip
    ``floor((2m+1) C / (2 num_clips))`` of the ``C`` clips).

    Raises:
        TrajectoryError: bad arguments (see the functions above), an unknown mode, or progressive
            mode without ``eval_poses``.
    """
    check_clip_length(num_frames)
    if isinstance(num_clips, bool) or not isinstance(num_clips, int) or num_clips < 1:
        raise TrajectoryError(f"The number of clips must be a positive whole number, got {num_clips!r}.")
    train = as_poses(train_poses, "training poses")
    out_dtype = train_poses.dtype if train_poses.is_floating_point() else torch.float32
    if mode == "reference_guided":
        center, radius = fit_sphere(train)
        up = mean_up_vector(train)
        distinct = train.shape[0] * (train.shape[0] - 1) // 2
        pairs = choose_anchor_pairs(train, min(num_clips, distinct), center=center, up=up)
        return [
            ClipPlan(
                i,
                j,
                reference_guided_clip(
                    train_poses[i, :3, :4].to(out_dtype),
                    train_poses[j, :3, :4].to(out_dtype),
                    center,
                    radius,
                    num_frames,
                    up=up,
                ),
            )
            for i, j in pairs
        ]
    if mode == "progressive":
        if eval_poses is None:
            raise TrajectoryError("Progressive clips need the evaluation poses to shift toward, but none were given.")
        plans = progressive_clips(train_poses, eval_poses, num_frames, round_index, num_rounds)
        if len(plans) > num_clips:
            plans = [plans[((2 * m + 1) * len(plans)) // (2 * num_clips)] for m in range(num_clips)]
        return plans
    raise TrajectoryError(f"Clip mode {mode!r} is unknown; use 'reference_guided' or 'progressive'.")
