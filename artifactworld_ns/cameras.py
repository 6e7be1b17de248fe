"""Conversions between nerfstudio's cameras and images and what the closed loop and the bank store."""

from __future__ import annotations

import dataclasses
from typing import Dict, List

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from torch import Tensor


def anchor_image(image: Tensor, size) -> Float[Tensor, "height width 3"]:
    """A training image as a DBA anchor: float ``[H, W, 3]`` in [0, 1] at the render's ``size``
    (uint8 or float input; an alpha channel is composited over white, as the viewer shows it)."""
    image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    if image.shape[-1] == 4:
        image = image[..., :3] * image[..., 3:] + (1 - image[..., 3:])
    image = image[..., :3]
    if tuple(image.shape[:2]) != tuple(int(s) for s in size):
        image = torch.nn.functional.interpolate(
            image.permute(2, 0, 1)[None],
            size=tuple(int(s) for s in size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )[0].permute(1, 2, 0)
    return image.clamp(0, 1)


def subset_dataparser_outputs(outputs: DataparserOutputs, indices: List[int]) -> DataparserOutputs:
    """The same outputs restricted to some images (per-image lists in ``metadata`` included)."""
    count = len(outputs.image_filenames)
    metadata = {
        key: [value[i] for i in indices] if isinstance(value, list) and len(value) == count else value
        for key, value in outputs.metadata.items()
    }
    return dataclasses.replace(
        outputs,
        image_filenames=[outputs.image_filenames[i] for i in indices],
        cameras=outputs.cameras[torch.tensor(indices, dtype=torch.long)],
        mask_filenames=None if outputs.mask_filenames is None else [outputs.mask_filenames[i] for i in indices],
        metadata=metadata,
    )


def camera_record(camera: Cameras) -> Dict:
    """A bank record of one camera: its camera-to-world and pinhole intrinsics (what :func:`pinhole_cameras` reads)."""
    return {
        "camera_to_world": camera.camera_to_worlds[:3, :4].tolist(),
        "fx": float(camera.fx),
        "fy": float(camera.fy),
        "cx": float(camera.cx),
        "cy": float(camera.cy),
        "width": int(camera.width),
        "height": int(camera.height),
    }


def pinhole_cameras(camera_to_worlds: Float[Tensor, "n 3 4"], intrinsics: Dict) -> Cameras:
    """nerfstudio perspective cameras at ``camera_to_worlds`` sharing one set of intrinsics (a bank record's keys)."""
    n = camera_to_worlds.shape[0]
    column = lambda value, dtype=torch.float32: torch.full((n, 1), value, dtype=dtype)  # noqa: E731
    return Cameras(
        camera_to_worlds=camera_to_worlds[:, :3, :4].float(),
        fx=column(intrinsics["fx"]),
        fy=column(intrinsics["fy"]),
        cx=column(intrinsics["cx"]),
        cy=column(intrinsics["cy"]),
        width=column(intrinsics["width"], torch.long),
        height=column(intrinsics["height"], torch.long),
        camera_type=CameraType.PERSPECTIVE,
    )
