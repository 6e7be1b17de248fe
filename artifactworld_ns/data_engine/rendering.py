"""A clip's two videos from a live training pipeline: the captured held-out images (GT) and the model's renders at
exactly their cameras (artifact), with a render-time perturbation applied (:mod:`.perturbations`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor

from artifactworld_ns.data_engine.perturbations import perturbed_gaussians, upsample_nearest
from artifactworld_ns.render_io import render_frames


class HeldOutViews:
    """The held-out views of a run's pipeline, by capture frame index: cameras and (undistorted) images."""

    def __init__(self, pipeline, frame_of_path: dict[str, int]) -> None:
        datamanager = pipeline.datamanager
        self.images = datamanager.cached_eval  # loads and undistorts them, updating the cameras' intrinsics
        self.dataset = datamanager.eval_dataset
        self.index = {frame_of_path[str(Path(p))]: i for i, p in enumerate(self.dataset.image_filenames)}

    def cameras(self, frames: list[int]):
        return self.dataset.cameras[torch.tensor([self.index[f] for f in frames], dtype=torch.long)]

    def gt(self, frames: list[int], background: Tensor) -> Float[Tensor, "frames height width 3"]:
        """The captured images of ``frames`` as floats in [0, 1] (an alpha channel composited over ``background``)."""
        images = []
        for frame in frames:
            image = self.images[self.index[frame]]["image"].cpu()
            image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
            if image.shape[-1] == 4:
                image = image[..., :3] * image[..., 3:] + background.cpu().reshape(1, 1, 3) * (1 - image[..., 3:])
            images.append(image[..., :3].clamp(0, 1))
        return torch.stack(images)


def render_clip(
    pipeline,
    cameras,
    perturbation: Optional[str] = None,
    strength: float = 0.0,
    seed: int = 0,
) -> tuple[Float[Tensor, "frames height width 3"], Float[Tensor, "frames height width"]]:
    """Render ``cameras`` from the pipeline's current Gaussians, perturbed by ``perturbation`` for the clip.

    'cracks' and 'color-outliers' change the Gaussians for the render only; 'aliasing' renders at
    ``1 / strength`` of the size and upsamples with nearest-neighbour. Returns rgb and accumulation.
    """
    model = pipeline.model
    if perturbation == "aliasing" and strength > 1:
        height, width = int(cameras.height[0]), int(cameras.width[0])
        small = cameras[torch.arange(cameras.shape[0])]  # a copy: rescaling changes the cameras in place
        small.rescale_output_resolution(1.0 / strength)
        rgb, accumulation = render_frames(pipeline, small)
        rgb = upsample_nearest(rgb, height, width)
        accumulation = upsample_nearest(accumulation[..., None].expand(*accumulation.shape, 3), height, width)[..., 0]
        return rgb, accumulation
    with perturbed_gaussians(model.gauss_params, perturbation, strength, seed):
        return render_frames(pipeline, cameras)


def render_background(pipeline) -> Tensor:
    """The colour the model renders where nothing is (eval mode), for compositing RGBA ground truth."""
    model = pipeline.model
    was = model.training
    model.eval()
    try:
        return model._get_background_color().detach().float().reshape(-1)[:3]
    finally:
        model.train(was)
