"""aw-render's frames: rendering a set of cameras through the loaded pipeline, the anchors it restores
with, and writing frames as ``ns-render`` does (an mp4, written atomically, or numbered images)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from artifactworld_ns.cameras import anchor_image
from artifactworld_ns.restorer import write_video


def render_frames(
    pipeline, cameras, obb_box=None, background=None, progress=None, description: str = "rendering"
) -> tuple[Tensor, Tensor]:
    """Render every camera in eval mode: rgb ``[N, H, W, 3]`` and accumulation ``[N, H, W]`` on the CPU, in ``[0, 1]``.

    ``aw-render`` renders its paths with it, and the training pipeline its restoration rounds' clips.
    """
    with _eval_mode(pipeline.model):
        return _render_frames(pipeline, cameras, obb_box, background, progress, description)


@contextlib.contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _render_frames(pipeline, cameras, obb_box, background, progress, description) -> tuple[Tensor, Tensor]:
    from nerfstudio.model_components import renderers

    rgbs, alphas = [], []
    task = progress.add_task(description, total=cameras.size) if progress is not None else None
    for i in range(cameras.size):
        context = (
            renderers.background_color_override_context(background.to(pipeline.device))
            if background is not None
            else contextlib.nullcontext()
        )
        with context, torch.no_grad():
            outputs = pipeline.model.get_outputs_for_camera(cameras[i : i + 1], obb_box=obb_box)
        rgb = outputs["rgb"][..., :3].float().clamp(0, 1).cpu()
        acc = outputs.get("accumulation")
        acc = torch.ones(rgb.shape[:2]) if acc is None else acc.reshape(rgb.shape[:2]).float().clamp(0, 1).cpu()
        rgbs.append(rgb)
        alphas.append(acc)
        if task is not None:
            progress.advance(task)
    if task is not None:
        progress.remove_task(task)
    if not rgbs:
        return torch.zeros(0, 1, 1, 3), torch.zeros(0, 1, 1)
    return torch.stack(rgbs), torch.stack(alphas)


def cameras_at(cameras, index: int, poses: Tensor):
    """Copies of ``cameras[index]`` (intrinsics, type, distortion) at ``poses`` ``[n, 3, 4]``."""
    picked = cameras[torch.full((poses.shape[0],), index, dtype=torch.long, device=cameras.device)]
    picked.camera_to_worlds = poses.to(dtype=cameras.camera_to_worlds.dtype, device=cameras.device)
    return picked


def training_image(dataset, index: int, size: Sequence[int]) -> Tensor:
    """Training image ``index`` as ``[H, W, 3]`` float in ``[0, 1]``, resized to the render's ``size``."""
    return anchor_image(dataset.get_image_float32(index), size)


def comparison_path(output_filename: Path) -> Path:
    return output_filename.with_name(f"{output_filename.stem}_comparison.mp4")


def write_output(
    frames: Tensor, output_filename: Path, fps: float, output_format: str, image_format: str, jpeg_quality: int
) -> None:
    """Write ``frames`` ``[N, H, W, 3]`` as an mp4 (atomically) or as numbered images like ns-render."""

    output_filename = Path(output_filename)
    if output_format == "video":
        output_filename.parent.mkdir(parents=True, exist_ok=True)
        write_video(output_filename, frames, fps)
        return
    import mediapy as media

    folder = output_filename.parent / output_filename.stem
    folder.mkdir(parents=True, exist_ok=True)
    array = frames.numpy()
    for i, image in enumerate(array):
        if image_format == "png":
            media.write_image(folder / f"{i:05d}.png", image, fmt="png")
        else:
            media.write_image(folder / f"{i:05d}.jpg", image, fmt="jpeg", quality=jpeg_quality)
