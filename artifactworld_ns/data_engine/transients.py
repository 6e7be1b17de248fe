"""Ghosting's transient (paper Sec. 3.2: dynamic objects violate the static assumption), for static captures.

A static capture has no moving object, so one is added: an opaque, shaded sphere that crosses the scene
while part of the capture is taken. It is composited into the training images of one contiguous stretch
(``fraction`` of the training frames, centred in the capture), moving at constant speed along a straight
path through the scene centre; the held-out images, the clips' GT, stay clean. splatfacto cannot explain
an object that is somewhere else in every view, so it blends it in at low opacity: semi-transparent
trails and duplicates along the path (Ghosting).

Geometry (our choices, the paper gives none): the scene centre is the point nearest to every camera's
optical axis (least squares); the path runs through it along the main direction of the camera positions
across the capture's up axis, 0.7 x the median camera distance to the centre long; the sphere's radius
is ``radius`` x that distance; it is drawn over the image without occlusion (a passer-by in front of
the scene). The compositing is written here by hand (ray-sphere intersection per pixel): nerfstudio
and gsplat have no compositor of foreign objects into images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from jaxtyping import Float

COLOR = (0.92, 0.2, 0.62)
"""The transient's colour: a saturated magenta that few scenes contain."""
PATH_LENGTH = 0.7
"""Path length, as a fraction of the median camera distance to the scene centre."""


@dataclass
class Transient:
    """A sphere moving from ``start`` to ``end`` (capture coordinates) over ``frames`` (capture indices, in order)."""

    start: np.ndarray
    end: np.ndarray
    radius: float
    frames: list[int] = field(default_factory=list)
    color: tuple[float, float, float] = COLOR

    def centre_at(self, frame: int) -> np.ndarray:
        k = self.frames.index(frame)
        t = 0.5 if len(self.frames) == 1 else k / (len(self.frames) - 1)
        return (1 - t) * self.start + t * self.end

    def path_points(self, count: int = 48) -> np.ndarray:
        t = np.linspace(0.0, 1.0, count)[:, None]
        return (1 - t) * self.start + t * self.end


def scene_centre(camera_to_worlds: Float[np.ndarray, "n 4 4"]) -> np.ndarray:
    """The point nearest to every optical axis (OpenGL cameras look along -z), least squares."""
    origins = camera_to_worlds[:, :3, 3]
    forwards = -camera_to_worlds[:, :3, 2]
    forwards = forwards / np.linalg.norm(forwards, axis=1, keepdims=True)
    projectors = np.eye(3)[None] - forwards[:, :, None] * forwards[:, None, :]
    a, b = projectors.sum(0), np.einsum("nij,nj->i", projectors, origins)
    if np.linalg.cond(a) < 1e6:
        return np.linalg.solve(a, b)
    # Parallel axes (a forward-facing capture): in front of the cameras, twice their spread away.
    spread = float(np.ptp(origins, axis=0).max()) or 1.0
    return origins.mean(0) + forwards.mean(0) * 2.0 * spread


def plan_transient(
    camera_to_worlds: Float[np.ndarray, "n 4 4"], train_frames: list[int], fraction: float, radius: float
) -> Transient | None:
    """The transient of a ghosting run, or None when ``fraction`` leaves no training frame to show it."""
    count = int(round(fraction * len(train_frames)))
    if count <= 0:
        return None
    begin = (len(train_frames) - count) // 2
    centre = scene_centre(camera_to_worlds)
    origins = camera_to_worlds[:, :3, 3]
    distance = float(np.median(np.linalg.norm(origins - centre, axis=1))) or 1.0
    up = camera_to_worlds[:, :3, 1].mean(0)
    up = up / (np.linalg.norm(up) or 1.0)
    offsets = origins - origins.mean(0)
    offsets = offsets - np.outer(offsets @ up, up)
    _, _, vt = np.linalg.svd(offsets, full_matrices=False)
    direction = vt[0] - (vt[0] @ up) * up
    if np.linalg.norm(direction) < 1e-6:  # all cameras in one spot: any direction across up
        direction = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    direction = direction / np.linalg.norm(direction)
    half = 0.5 * PATH_LENGTH * distance * direction
    return Transient(centre - half, centre + half, radius * distance, train_frames[begin : begin + count])


def _rays(camera_to_world: np.ndarray, intrinsics: dict, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre ray directions (unit, world) and the camera origin of an OpenGL pinhole camera."""
    sx, sy = width / intrinsics["w"], height / intrinsics["h"]  # intrinsics given for another resolution
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    x = (u - intrinsics["cx"] * sx) / (intrinsics["fl_x"] * sx)
    y = -(v - intrinsics["cy"] * sy) / (intrinsics["fl_y"] * sy)
    directions = np.stack([x, y, -np.ones_like(x)], -1) @ camera_to_world[:3, :3].T
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    return directions, camera_to_world[:3, 3]


def sphere_coverage(
    camera_to_world: np.ndarray, intrinsics: dict, height: int, width: int, centre: np.ndarray, radius: float
) -> tuple[Float[np.ndarray, "h w"], Float[np.ndarray, "h w"]]:
    """Per pixel, the sphere's coverage in [0, 1] (edges anti-aliased over one pixel) and its Lambert shading."""
    directions, origin = _rays(camera_to_world, intrinsics, height, width)
    to_centre = centre - origin
    along = directions @ to_centre  # distance along the ray to the point nearest the centre
    miss = np.sqrt(np.maximum(to_centre @ to_centre - along**2, 0.0))  # ray-to-centre distance
    pixel = np.maximum(along, 1e-6) / (intrinsics["fl_x"] * width / intrinsics["w"])  # one pixel at that depth
    coverage = np.clip((radius - miss) / pixel + 0.5, 0.0, 1.0) * (along > 0)
    depth = along - np.sqrt(np.maximum(radius**2 - miss**2, 0.0))
    normal = (origin + depth[..., None] * directions - centre) / radius
    shading = 0.35 + 0.65 * np.clip(-(normal * directions).sum(-1), 0.0, 1.0)
    return coverage, shading


def composite(
    image: Float[np.ndarray, "h w 3"], camera_to_world: np.ndarray, intrinsics: dict, transient: Transient, frame: int
) -> Float[np.ndarray, "h w 3"]:
    """``image`` (floats in [0, 1]) with the transient drawn at its position for ``frame``."""
    height, width = image.shape[:2]
    coverage, shading = sphere_coverage(
        camera_to_world, intrinsics, height, width, transient.centre_at(frame), transient.radius
    )
    color = shading[..., None] * np.asarray(transient.color)
    return image * (1 - coverage[..., None]) + color * coverage[..., None]


def path_footprint(
    camera_to_world: np.ndarray, intrinsics: dict, height: int, width: int, transient: Transient
) -> Float[np.ndarray, "h w"]:
    """Where the transient's whole path projects in a view: the union of its sphere along the path, in [0, 1]."""
    footprint = np.zeros((height, width))
    for point in transient.path_points():
        coverage, _ = sphere_coverage(camera_to_world, intrinsics, height, width, point, transient.radius)
        footprint = np.maximum(footprint, coverage)
    return footprint
