"""Pose and rotation maths for the restoration rounds' camera paths (float64).

Poses are nerfstudio camera-to-world matrices (OpenGL convention: the camera looks along its -z
axis, +y is up, +x is right), ``[N, 3, 4]`` or ``[N, 4, 4]``. Rotations convert to and from
quaternions ``(w, x, y, z)`` and interpolate by slerp with scipy's ``Rotation`` and ``Slerp``.
Interpolation between two poses: positions linearly, rotations by slerp; every output rotation is a
proper rotation (orthonormal, determinant +1). :func:`fit_sphere` and the great-circle helpers serve the spherical path of
reference-guided sampling (see :mod:`artifactworld_ns.trajectories`).
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
from jaxtyping import Float
from scipy.spatial.transform import Rotation, Slerp
from torch import Tensor

from artifactworld_ns.restorer import ArtifactWorldError


class TrajectoryError(ArtifactWorldError, ValueError):
    """Bad arguments for a restoration-round camera path; the message is one sentence for the user."""


def as_poses(camera_to_worlds: Tensor, name: str = "poses") -> Float[Tensor, "n 3 4"]:
    """``[N, 3|4, 4]`` (or a single ``[3|4, 4]``) to float64 ``[N, 3, 4]``."""
    if camera_to_worlds.ndim == 2:
        camera_to_worlds = camera_to_worlds[None]
    if camera_to_worlds.ndim != 3 or camera_to_worlds.shape[-2] not in (3, 4) or camera_to_worlds.shape[-1] != 4:
        raise TrajectoryError(
            f"The {name} must be camera-to-world matrices of shape [N, 3, 4] or [N, 4, 4], got {list(camera_to_worlds.shape)}."
        )
    poses = camera_to_worlds[:, :3, :4].detach().to(device="cpu", dtype=torch.float64).clone()
    if not torch.isfinite(poses).all():
        raise TrajectoryError(f"The {name} contain NaN or infinite values.")
    return poses


def project_to_rotation(matrix: Float[Tensor, "*b 3 3"]) -> Float[Tensor, "*b 3 3"]:
    """Nearest proper rotation (SVD), so slightly non-orthonormal inputs still give valid rotations."""
    # Kept by hand: scipy's Rotation.from_matrix refuses matrices with determinant <= 0, which this still projects.
    u, _, vh = torch.linalg.svd(matrix)
    d = torch.sign(torch.linalg.det(u @ vh))
    d = torch.where(d == 0, torch.ones_like(d), d)
    fix = torch.ones(matrix.shape[:-2] + (3,), dtype=matrix.dtype)
    fix[..., 2] = d
    return u @ torch.diag_embed(fix) @ vh


def rotation_to_quaternion(rotation: Float[Tensor, "*b 3 3"]) -> Float[Tensor, "*b 4"]:
    """Unit quaternion ``(w, x, y, z)`` of a rotation matrix (``w >= 0``), by scipy's ``Rotation.from_matrix``."""
    matrices = rotation.detach().cpu().double().reshape(-1, 3, 3).numpy()
    q = Rotation.from_matrix(matrices).as_quat(canonical=True, scalar_first=True)
    return torch.from_numpy(q).to(rotation.dtype).reshape(*rotation.shape[:-2], 4)


def quaternion_to_rotation(q: Float[Tensor, "*b 4"]) -> Float[Tensor, "*b 3 3"]:
    """Rotation matrix of a quaternion ``(w, x, y, z)`` (normalised first), by scipy's ``Rotation.from_quat``."""
    matrices = Rotation.from_quat(q.detach().cpu().double().reshape(-1, 4).numpy(), scalar_first=True).as_matrix()
    return torch.from_numpy(matrices).to(q.dtype).reshape(*q.shape[:-1], 3, 3)


def slerp_rotations(
    rot_a: Float[Tensor, "3 3"], rot_b: Float[Tensor, "3 3"], fractions: Float[Tensor, " t"]
) -> Float[Tensor, "t 3 3"]:
    """Rotations at ``fractions`` (in ``[0, 1]``) of the shortest arc from ``rot_a`` to ``rot_b`` (scipy's ``Slerp``)."""
    ends = torch.stack([project_to_rotation(rot_a.to(torch.float64)), project_to_rotation(rot_b.to(torch.float64))])
    slerp = Slerp([0.0, 1.0], Rotation.from_matrix(ends.numpy()))
    return torch.from_numpy(slerp(fractions.detach().cpu().double().numpy()).as_matrix())


def rotation_angle(rot_a: Float[Tensor, "3 3"], rot_b: Float[Tensor, "3 3"]) -> float:
    """Angle in radians of the rotation taking ``rot_a`` to ``rot_b``."""
    # Kept by hand: scipy's magnitude() re-orthogonalises (and refuses det <= 0), so raw float32 poses would measure differently.
    cos = (float(torch.trace(rot_a.T @ rot_b)) - 1) / 2
    return math.acos(max(-1.0, min(1.0, cos)))


def interpolate_poses(
    pose_a: Float[Tensor, "3 4"], pose_b: Float[Tensor, "3 4"], fractions: Float[Tensor, " t"]
) -> Float[Tensor, "t 3 4"]:
    """Poses at ``fractions`` of the way from ``pose_a`` to ``pose_b``: positions lerp, rotations slerp."""
    pose_a, pose_b = pose_a.to(torch.float64), pose_b.to(torch.float64)
    t = fractions.to(torch.float64)
    rotations = slerp_rotations(pose_a[:3, :3], pose_b[:3, :3], t)
    positions = (1 - t)[:, None] * pose_a[:3, 3] + t[:, None] * pose_b[:3, 3]
    return torch.cat([rotations, positions[:, :, None]], -1)


def look_at(position: Float[Tensor, "3"], target: Float[Tensor, "3"], up: Float[Tensor, "3"]) -> Float[Tensor, "3 4"]:
    """OpenGL camera-to-world pose at ``position`` looking at ``target`` with ``up`` as the image's up.

    When the viewing direction is (nearly) parallel to ``up``, the world axis least aligned with the
    viewing direction serves as up instead, so the result is always a proper rotation.
    """
    # Kept by hand: nerfstudio's camera_utils.viewmatrix gives the same pose but has no fallback for a
    # viewing direction parallel to up, and its torch.cross without dim warns (deprecated) on every call.
    forward = target - position
    norm = forward.norm()
    if norm < 1e-12:
        raise TrajectoryError(
            "A camera sits exactly at the point it should look at, so its viewing direction is undefined."
        )
    forward = forward / norm
    right = torch.linalg.cross(forward, up)
    if right.norm() < 1e-6:
        fallback = torch.zeros(3, dtype=torch.float64)
        fallback[int(forward.abs().argmin())] = 1.0
        right = torch.linalg.cross(forward, fallback)
    right = right / right.norm()
    camera_up = torch.linalg.cross(right, forward)
    return torch.stack([right, camera_up, -forward, position], -1)


def mean_up_vector(camera_to_worlds: Float[Tensor, "n 3 4"]) -> Float[Tensor, "3"]:
    """Normalised mean of the cameras' up axes (their +y columns): the consistent up of generated poses."""
    poses = as_poses(camera_to_worlds)
    up = poses[:, :3, 1].mean(0)
    if up.norm() < 1e-9:
        up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    return up / up.norm()


def fit_sphere(camera_to_worlds: Float[Tensor, "n 3 4"]) -> Tuple[Float[Tensor, "3"], float]:
    """Sphere through the training cameras for the spherical path of reference-guided sampling.

    Centre: the point nearest to all optical axes in the least-squares sense, i.e. the solution of
    ``sum_i (I - d_i d_i^T) c = sum_i (I - d_i d_i^T) o_i`` (camera centre ``o_i``, viewing direction
    ``d_i = -z_i``). Along directions the axes leave undetermined (eigenvalues of the left-hand side
    below ``1e-3 * N``, e.g. the depth direction of a forward-facing capture whose axes are nearly
    parallel) the centre falls back to ``p0 = mean(o) + mean(d) * mean |o - mean(o)|``: the
    minimum-norm correction from ``p0``. Radius: the mean distance of the cameras to the centre.

    Returns:
        ``(center [3] float64, radius)``.
    """
    poses = as_poses(camera_to_worlds, "training poses")
    n = poses.shape[0]
    if n < 2:
        raise TrajectoryError(f"Fitting the spherical path needs at least 2 training cameras, got {n}.")
    origins = poses[:, :3, 3]
    directions = -poses[:, :3, 2]
    directions = directions / directions.norm(dim=-1, keepdim=True)
    projectors = torch.eye(3, dtype=torch.float64) - directions[:, :, None] * directions[:, None, :]
    lhs = projectors.sum(0)
    rhs = (projectors @ origins[:, :, None]).sum(0)[:, 0]
    centroid = origins.mean(0)
    spread = float((origins - centroid).norm(dim=-1).mean())
    mean_dir = directions.mean(0)
    mean_dir = mean_dir / mean_dir.norm() if mean_dir.norm() > 1e-9 else mean_dir
    prior = centroid + mean_dir * spread
    eigenvalues, eigenvectors = torch.linalg.eigh(lhs)
    residual = rhs - lhs @ prior
    center = prior.clone()
    for value, vector in zip(eigenvalues, eigenvectors.T):
        if value > 1e-3 * n:
            center = center + vector * (vector @ residual) / value
    radius = float((origins - center).norm(dim=-1).mean())
    if radius < 1e-9:
        raise TrajectoryError(
            "The training cameras all sit at one point, so no spherical path can be fitted around them."
        )
    return center, radius


def on_sphere(position: Tensor, center: Tensor, radius: float, up: Tensor) -> Tensor:
    """Nearest point of the sphere to ``position`` (a point on the up-most direction if at the centre)."""
    offset = position - center
    if offset.norm() < 1e-12:
        offset = up
    return center + radius * offset / offset.norm()


def arc_points(start: Tensor, end: Tensor, center: Tensor, radius: float, up: Tensor, fractions: Tensor) -> Tensor:
    """Points at ``fractions`` of the great-circle arc from ``start`` to ``end`` (both on the sphere).

    For antipodal endpoints the arc goes round the sphere's up axis (through the horizontal).
    """
    a = (start - center) / radius
    b = (end - center) / radius
    angle = math.acos(max(-1.0, min(1.0, float(a @ b))))
    if angle < 1e-12:
        return center + radius * a.expand(fractions.shape[0], 3)
    axis = torch.linalg.cross(a, b)
    if axis.norm() < 1e-9:  # antipodal: rotate about the up axis projected off a
        axis = up - (up @ a) * a
        if axis.norm() < 1e-9:
            axis = torch.linalg.cross(a, torch.eye(3, dtype=torch.float64)[int(a.abs().argmin())])
    axis = axis / axis.norm()
    ortho = torch.linalg.cross(axis, a)  # in the arc's plane, 90 degrees ahead of a
    phis = fractions.to(torch.float64)[:, None] * angle
    return center + radius * (torch.cos(phis) * a + torch.sin(phis) * ortho)


def ring_order(positions: Tensor, center: Tensor, up: Tensor) -> list[int]:
    """Camera indices sorted by azimuth about the axis through ``center`` along ``up``.

    The azimuth is measured counter-clockwise (right-handed about ``up``); the list is rotated so it
    starts at camera 0; equal azimuths keep index order.
    """
    offsets = positions - center
    flat = offsets - (offsets @ up)[:, None] * up
    reference = flat[0] if flat[0].norm() > 1e-9 else flat[int(flat.norm(dim=-1).argmax())]
    if reference.norm() < 1e-9:
        return list(range(positions.shape[0]))
    e1 = reference / reference.norm()
    e2 = torch.linalg.cross(up, e1)
    azimuth = torch.atan2(flat @ e2, flat @ e1)
    azimuth = torch.where(flat.norm(dim=-1) < 1e-9, torch.zeros_like(azimuth), azimuth)
    azimuth = torch.remainder(azimuth, 2 * math.pi)
    azimuth[0] = 0.0
    return sorted(range(positions.shape[0]), key=lambda i: (round(float(azimuth[i]), 12), i))


def nearest_train_indices(train_poses: Float[Tensor, "n 3 4"], eval_poses: Float[Tensor, "m 3 4"]) -> torch.Tensor:
    """For each evaluation pose, the index of the training pose with the nearest camera centre (ties: lowest index)."""
    train = as_poses(train_poses, "training poses")
    evals = as_poses(eval_poses, "evaluation poses")
    distances = torch.cdist(evals[:, :3, 3], train[:, :3, 3])
    best = distances.min(dim=1, keepdim=True).values
    tied = distances <= best + 1e-12 * (1 + best)
    return tied.to(torch.int64).argmax(dim=1)
