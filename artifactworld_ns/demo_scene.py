"""`aw-demo-scene`: a synthetic nerfstudio scene that needs no download.

A procedural Gaussian scene (a checkered floor, three coloured objects and a sky dome) is rendered
with the PyTorch rasterizer from cameras on an orbit. The output is a standard nerfstudio-data
folder: ``transforms.json`` (OPENCV pinhole, OpenGL camera-to-world poses), ``images/*.png`` (ground
truth for every view), ``sparse_pc.ply`` (a noisy subset of the Gaussian centres, standing in for
the SfM points a real capture would have) and ``ground_truth_gaussians.pt`` (the scene's Gaussians, so
the oracle reference restorer can render the ground truth from any camera).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

import numpy as np
import torch
import tyro
from jaxtyping import Float
from PIL import Image
from rich.progress import Progress
from torch import Tensor

from artifactworld_ns.restorer import ArtifactWorldError, atomic_folder
from artifactworld_ns.torch_rasterizer import rasterization_torch

MIN_SIDE, MAX_SIDE = 16, 4096
BACKGROUND = 0.5
"""Grey behind the Gaussians (the oracle restorer composites the same)."""
MAX_VIEWS = 2000
GAUSSIAN_KEYS = ("means", "quats", "scales", "opacities", "colors")
"""The Gaussians' tensors, as ``ground_truth_gaussians.pt`` stores them."""
OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


class DemoSceneError(ArtifactWorldError, ValueError):
    """Bad arguments for the demo scene; the message is one sentence for the user."""


@dataclass
class DemoSceneArgs:
    """Write a synthetic nerfstudio scene (transforms.json + images + sparse points) rendered along an orbit."""

    output_dir: tyro.conf.Positional[Path]
    """Folder to create; it must not exist or be empty unless --overwrite is given."""
    num_views: int = 36
    """Number of cameras on the orbit (every one gets a ground-truth image)."""
    width: int = 160
    """Image width in pixels."""
    height: int = 120
    """Image height in pixels."""
    seed: int = 0
    """Seed of the procedural scene and the sparse-point noise."""
    overwrite: bool = False
    """Replace a non-empty output folder."""


def procedural_scene(seed: int) -> Dict[str, Tensor]:
    """Gaussians of a small tabletop scene centred at the origin, z up, inside a sky dome."""
    g = torch.Generator().manual_seed(seed)
    parts = []

    def add(means, colors, scale, flat_axis=None):
        scales = torch.full_like(means, scale)
        quats = torch.nn.functional.normalize(torch.randn(means.shape[0], 4, generator=g), dim=-1)
        if flat_axis is not None:  # flat splats stay aligned with the world axes
            scales[:, flat_axis] = scale * 0.15
            quats = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(means.shape[0], 4)
        parts.append((means, colors, scales, quats))

    # Checkered floor, radius 1.3, at z = 0.
    side = torch.linspace(-1.3, 1.3, 34)
    fy, fx = torch.meshgrid(side, side, indexing="ij")
    keep = fx**2 + fy**2 <= 1.3**2
    floor = torch.stack([fx[keep], fy[keep], torch.zeros_like(fx[keep])], -1)
    checker = ((torch.floor(floor[:, 0] / 0.26) + torch.floor(floor[:, 1] / 0.26)) % 2)[:, None]
    add(
        floor,
        checker * torch.tensor([0.85, 0.82, 0.75]) + (1 - checker) * torch.tensor([0.25, 0.3, 0.35]),
        0.05,
        flat_axis=2,
    )

    # A sphere shaded by its normal.
    normals = torch.nn.functional.normalize(torch.randn(500, 3, generator=g), dim=-1)
    add(torch.tensor([0.45, 0.1, 0.32]) + 0.3 * normals, 0.55 + 0.4 * normals * torch.tensor([0.9, 0.3, 0.3]), 0.045)

    # A box with one colour per face.
    face_colors = torch.tensor([[0.1, 0.6, 0.9], [0.1, 0.8, 0.4], [0.9, 0.85, 0.2]])
    box = (torch.rand(600, 3, generator=g) - 0.5) * 0.5
    axis = torch.randint(0, 3, (600,), generator=g)
    box[torch.arange(600), axis] = torch.sign(box[torch.arange(600), axis]) * 0.25
    add(box + torch.tensor([-0.45, 0.25, 0.25]), face_colors[axis] * (0.8 + 0.2 * (box[:, 2:3] + 0.25) / 0.5), 0.04)

    # A striped cylinder.
    theta = torch.rand(400, generator=g) * 2 * math.pi
    z = torch.rand(400, generator=g) * 0.7
    cylinder = torch.stack([0.18 * torch.cos(theta), 0.18 * torch.sin(theta), z], -1) + torch.tensor([0.05, -0.55, 0.0])
    stripes = ((z / 0.1).floor() % 2)[:, None]
    add(cylinder, stripes * torch.tensor([0.95, 0.4, 0.1]) + (1 - stripes) * torch.tensor([0.95, 0.95, 0.9]), 0.04)

    # Sky dome (radius 4): a vertical gradient so every pixel has something to fit.
    dome_dirs = torch.nn.functional.normalize(torch.randn(1500, 3, generator=g), dim=-1)
    dome_dirs[:, 2] = dome_dirs[:, 2].abs() * 0.9 - 0.2
    dome_dirs = torch.nn.functional.normalize(dome_dirs, dim=-1)
    up = dome_dirs[:, 2:3].clamp(0, 1)
    add(4.0 * dome_dirs, (1 - up) * torch.tensor([0.85, 0.9, 0.95]) + up * torch.tensor([0.3, 0.5, 0.85]), 0.35)

    means = torch.cat([p[0] for p in parts])
    colors = torch.cat([p[1] for p in parts]).clamp(0.0, 1.0)
    scales = torch.cat([p[2] for p in parts])
    quats = torch.cat([p[3] for p in parts])
    opacities = torch.full((means.shape[0],), 0.95)
    return {"means": means, "colors": colors, "scales": scales, "quats": quats, "opacities": opacities}


def orbit_camera_to_worlds(num_views: int, radius: float = 2.4) -> Float[Tensor, "views 4 4"]:
    """OpenGL camera-to-world poses on an orbit around the origin, elevation swinging 15-35 degrees."""
    poses = []
    for i in range(num_views):
        azimuth = 2 * math.pi * i / num_views
        elevation = math.radians(25 + 10 * math.sin(4 * math.pi * i / num_views))
        position = radius * torch.tensor(
            [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)]
        )
        target = torch.tensor([0.0, 0.0, 0.2])
        back = torch.nn.functional.normalize(position - target, dim=0)
        right = torch.nn.functional.normalize(torch.linalg.cross(torch.tensor([0.0, 0.0, 1.0]), back), dim=0)
        up = torch.linalg.cross(back, right)
        pose = torch.eye(4)
        pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, up, back, position
        poses.append(pose)
    return torch.stack(poses)


def focal_length(width: int) -> float:
    """A 60-degree horizontal field of view."""
    return 0.5 * width / math.tan(math.radians(30))


@torch.no_grad()
def render_gaussians(
    scene: Dict[str, Tensor],
    camera_to_world: Float[Tensor, "4 4"],
    K: Float[Tensor, "3 3"],
    width: int,
    height: int,
    background: float = BACKGROUND,
) -> Float[Tensor, "height width 3"]:
    """One view of the scene's Gaussians from an OpenGL camera-to-world (pinhole ``K``), over ``background``.

    aw-demo-scene renders its images with it, and the oracle reference restorer the ground truth at a clip's cameras.
    """
    viewmat = torch.linalg.inv(camera_to_world @ OPENGL_TO_OPENCV)
    image, alpha, _ = rasterization_torch(
        **{key: scene[key] for key in GAUSSIAN_KEYS}, viewmats=viewmat[None], Ks=K[None], width=width, height=height
    )
    return (image[0] + (1 - alpha[0]) * background).clamp(0, 1)  # grey where nothing is (rare: the dome covers it)


def render_views(
    scene: Dict[str, Tensor], camera_to_worlds: Tensor, width: int, height: int
) -> Float[Tensor, "views height width 3"]:
    f = focal_length(width)
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
    with Progress(transient=True) as progress:
        poses = progress.track(camera_to_worlds, description="rendering demo views")
        return torch.stack([render_gaussians(scene, pose, K, width, height) for pose in poses])


def write_ply(path: Path, points: np.ndarray, colors: np.ndarray) -> None:
    header = "\n".join(
        [
            "ply",
            "format ascii 1.0",
            f"element vertex {len(points)}",
            "property float x",
            "property float y",
            "property float z",
            "property uchar red",
            "property uchar green",
            "property uchar blue",
            "end_header",
        ]
    )
    rows = [f"{x:.6f} {y:.6f} {z:.6f} {r} {g} {b}" for (x, y, z), (r, g, b) in zip(points.tolist(), colors.tolist())]
    path.write_text(header + "\n" + "\n".join(rows) + "\n")


def validate(args: DemoSceneArgs) -> None:
    for name, value in (("--width", args.width), ("--height", args.height)):
        if not MIN_SIDE <= value <= MAX_SIDE:
            raise DemoSceneError(
                f"{name} {value} is not a usable image side; choose a value from {MIN_SIDE} to {MAX_SIDE} pixels."
            )
    if not 2 <= args.num_views <= MAX_VIEWS:
        raise DemoSceneError(
            f"--num-views {args.num_views} is out of range; a scene needs from 2 to {MAX_VIEWS} views."
        )
    out = args.output_dir
    if out.exists() and not out.is_dir():
        raise DemoSceneError(f"{out} is a file, not a folder; choose another OUTPUT_DIR.")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise DemoSceneError(f"{out} is not empty; pass --overwrite to replace it or choose another OUTPUT_DIR.")


def write_demo_scene(args: DemoSceneArgs) -> Path:
    """Render and write the scene; the folder appears complete or not at all (temp folder + rename)."""

    validate(args)
    scene = procedural_scene(args.seed)
    camera_to_worlds = orbit_camera_to_worlds(args.num_views)
    images = render_views(scene, camera_to_worlds, args.width, args.height)

    out = args.output_dir.resolve()
    with atomic_folder(out) as staging:
        (staging / "images").mkdir()
        frames = []
        for i, (image, pose) in enumerate(zip(images, camera_to_worlds)):
            name = f"images/frame_{i:05d}.png"
            Image.fromarray((image.numpy() * 255).round().astype(np.uint8)).save(staging / name)
            frames.append({"file_path": name, "transform_matrix": pose.tolist()})
        rng = np.random.default_rng(args.seed)
        object_points = scene["means"].numpy()
        chosen = rng.choice(len(object_points), size=len(object_points) // 2, replace=False)
        points = object_points[chosen] + rng.normal(scale=0.02, size=(len(chosen), 3))
        colors = np.clip(
            scene["colors"].numpy()[chosen] * 255 + rng.normal(scale=8, size=(len(chosen), 3)), 0, 255
        ).astype(np.uint8)
        write_ply(staging / "sparse_pc.ply", points, colors)
        torch.save({**scene, "background": BACKGROUND}, staging / "ground_truth_gaussians.pt")
        f = focal_length(args.width)
        transforms = {
            "camera_model": "OPENCV",
            "fl_x": f,
            "fl_y": f,
            "cx": args.width / 2,
            "cy": args.height / 2,
            "w": args.width,
            "h": args.height,
            "k1": 0.0,
            "k2": 0.0,
            "p1": 0.0,
            "p2": 0.0,
            "ply_file_path": "sparse_pc.ply",
            "frames": frames,
        }
        (staging / "transforms.json").write_text(json.dumps(transforms, indent=2))
    return out


def entrypoint() -> None:
    args = tyro.cli(DemoSceneArgs)
    try:
        out = write_demo_scene(args)
    except DemoSceneError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)
    print(f"Wrote {args.num_views} views ({args.width}x{args.height}) to {out}")


if __name__ == "__main__":
    entrypoint()
