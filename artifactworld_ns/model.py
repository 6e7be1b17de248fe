"""ArtifactWorldModel: splatfacto that renders on any device (gsplat on CUDA, PyTorch on CPU)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Type, Union
from unittest import mock

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.models.splatfacto import RGB2SH, SplatfactoModel, SplatfactoModelConfig
from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer_elements import ViewerSlider
from rich.markup import escape
from torch import Tensor

from artifactworld_ns.restorer import missing_alexnet_weights
from artifactworld_ns.resume import (
    load_strategy_extra_state,
    rebind_optimizers,
    strategy_extra_state,
)
from artifactworld_ns.torch_rasterizer import rasterization


@dataclass
class ArtifactWorldModelConfig(SplatfactoModelConfig):
    """Splatfacto for the ArtifactWorld closed loop; every splatfacto option applies."""

    _target: Type = field(default_factory=lambda: ArtifactWorldModel)
    gen_loss_weight: float = 0.5
    """lambda of Eq. 4, L = L_recon + lambda * L_gen: the weight of the photometric loss (L1 + SSIM, as
    splatfacto's) on restored novel views."""
    gen_loss_weighting: Literal["uniform", "heatmap"] = "uniform"
    """Per-pixel weight of L_gen: 'uniform', or 'heatmap' = the restorer's heatmap (supervise where the
    render was broken and the restorer repaired it; elsewhere the restored frame repeats the render)."""


class ArtifactWorldModel(SplatfactoModel):
    """Splatfacto whose rasterizer follows the model's device.

    On CUDA this is splatfacto's own gsplat call, unchanged. On CPU it renders through
    :mod:`artifactworld_ns.torch_rasterizer`. Splatfacto 1.1.5 also moves the seed colours and the
    intrinsics to CUDA unconditionally; both are kept on the model's device here.
    """

    config: ArtifactWorldModelConfig

    def populate_modules(self):
        seed_colors = None
        if self.seed_points is not None and not self.config.random_init and self.seed_points[1].shape[0] > 0:
            # Splatfacto builds the SH tensor for seed colours with `.cuda()`; hand it no colours and
            # set them here instead (same initial values as splatfacto's).
            seed_colors = self.seed_points[1]
            self.seed_points = (self.seed_points[0], seed_colors[:0])
        # Splatfacto builds LPIPS (an eval metric) at construction, which downloads AlexNet weights;
        # build it on first use instead, so training starts offline.
        with mock.patch("torchmetrics.image.lpip.LearnedPerceptualImagePatchSimilarity", LazyLPIPS):
            super().populate_modules()
        self.gen_loss_slider = ViewerSlider(
            name="ArtifactWorld: generated-view loss weight (lambda)",
            default_value=float(self.config.gen_loss_weight),
            min_value=0.0,
            max_value=2.0,
            step=0.05,
            cb_hook=lambda slider: setattr(self.config, "gen_loss_weight", float(slider.value)),
        )
        if seed_colors is None:
            return
        self.seed_points = (self.seed_points[0], seed_colors)
        normalized = seed_colors.float() / 255
        if self.config.sh_degree > 0:
            dc = RGB2SH(normalized)
        else:
            dc = torch.logit(normalized, eps=1e-10)
        self.gauss_params["features_dc"].data.copy_(dc)
        self.gauss_params["features_rest"].data.zero_()

    # ------------------------------------------------------------------ resuming (see artifactworld_ns/resume.py)

    def get_training_callbacks(self, training_callback_attributes):
        callbacks = super().get_training_callbacks(training_callback_attributes)
        # nerfstudio asks for callbacks after it has loaded a resumed run's checkpoint: the optimizers
        # still hold the construction-time Gaussians, so point them at the loaded ones.
        if training_callback_attributes.optimizers is not None:
            rebind_optimizers(self.gauss_params, training_callback_attributes.optimizers.optimizers)
        return callbacks

    def get_extra_state(self) -> dict:
        """Checkpointed with the weights: the densification strategy's running statistics."""
        return {"strategy_state": strategy_extra_state(self.strategy_state)}

    def set_extra_state(self, state: dict) -> None:
        load_strategy_extra_state(self.strategy_state, state.get("strategy_state", {}), self.device)

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, torch.Tensor]:
        """Splatfacto's losses; on a generated view the photometric loss becomes ``lambda * L_gen``.

        With ``gen_loss_weighting='heatmap'`` the heatmap is applied as splatfacto applies masks
        (render and target multiplied by it before L1 and SSIM).
        """
        if not batch.get("is_generated", False):
            return super().get_loss_dict(outputs, batch, metrics_dict)
        if self.config.gen_loss_weighting == "heatmap":
            batch = {**batch, "mask": batch["heatmap"][..., None]}
        loss_dict = super().get_loss_dict(outputs, batch, metrics_dict)
        loss_dict["gen_loss"] = self.config.gen_loss_weight * loss_dict.pop("main_loss")
        return loss_dict

    def render_opacities(self, params: Dict[str, Tensor]) -> Float[Tensor, " gaussians"]:
        """The opacities the rasterizer composites (splatfacto's sigmoid); subclasses may change them
        (aw-simulate's point dropout, :mod:`artifactworld_ns.data_engine.point_dropout`)."""
        return torch.sigmoid(params["opacities"]).squeeze(-1)

    def get_outputs(self, camera: Cameras) -> Dict[str, Union[torch.Tensor, List]]:
        """Splatfacto's ``get_outputs`` with a device-following rasterizer (outputs rgb, depth, accumulation)."""
        if not isinstance(camera, Cameras):
            return {}
        if self.training:
            assert camera.shape[0] == 1, "Only one camera at a time"
            camera_to_world = self.camera_optimizer.apply_to_camera(camera)
        else:
            camera_to_world = camera.camera_to_worlds

        params = self.gauss_params
        if self.crop_box is not None and not self.training:
            crop_ids = self.crop_box.within(self.means).squeeze()
            if crop_ids.sum() == 0:
                return self.get_empty_outputs(
                    int(camera.width.item()), int(camera.height.item()), self.background_color
                )
            params = {name: value[crop_ids] for name, value in params.items()}

        colors = torch.cat((params["features_dc"][:, None, :], params["features_rest"]), dim=1)
        downscale = self._get_downscale_factor()
        camera.rescale_output_resolution(1 / downscale)
        viewmat = world_to_camera_opencv(camera_to_world)
        intrinsics = camera.get_intrinsics_matrices().to(self.device)
        width, height = int(camera.width.item()), int(camera.height.item())
        self.last_size = (height, width)
        camera.rescale_output_resolution(downscale)

        if self.config.rasterize_mode not in ("antialiased", "classic"):
            raise ValueError(f"Unknown rasterize_mode: {self.config.rasterize_mode}")
        render_mode = "RGB+ED" if self.config.output_depth_during_training or not self.training else "RGB"
        if self.config.sh_degree > 0:
            sh_degree = min(self.step // self.config.sh_degree_interval, self.config.sh_degree)
        else:
            colors = torch.sigmoid(colors).squeeze(1)
            sh_degree = None

        render, alpha, self.info = rasterization(
            means=params["means"],
            quats=params["quats"],
            scales=torch.exp(params["scales"]),
            opacities=self.render_opacities(params),
            colors=colors,
            viewmats=viewmat,
            Ks=intrinsics,
            width=width,
            height=height,
            packed=False,
            near_plane=0.01,
            far_plane=1e10,
            render_mode=render_mode,
            sh_degree=sh_degree,
            sparse_grad=False,
            absgrad=self.strategy.absgrad,
            rasterize_mode=self.config.rasterize_mode,
        )
        if self.training:
            self.strategy.step_pre_backward(
                self.gauss_params, self.optimizers, self.strategy_state, self.step, self.info
            )

        background = self._get_background_color()
        rgb = torch.clamp(render[..., :3] + (1 - alpha) * background, 0.0, 1.0)
        if (
            self.config.use_bilateral_grid
            and self.training
            and camera.metadata is not None
            and "cam_idx" in camera.metadata
        ):
            rgb = self._apply_bilateral_grid(rgb, camera.metadata["cam_idx"], height, width)

        depth = None
        if render_mode == "RGB+ED":
            depth = render[..., 3:4]
            depth = torch.where(alpha > 0, depth, depth.detach().max()).squeeze(0)
        if background.shape[0] == 3 and not self.training:
            background = background.expand(height, width, 3)
        return {"rgb": rgb.squeeze(0), "depth": depth, "accumulation": alpha.squeeze(0), "background": background}


def world_to_camera_opencv(camera_to_world: Float[Tensor, "cameras 3 4"]) -> Float[Tensor, "cameras 4 4"]:
    """nerfstudio (OpenGL) camera-to-world -> gsplat (OpenCV) world-to-camera.

    The same as splatfacto's ``get_viewmat``, which is wrapped in ``torch.compile``: on a CPU that
    compiles C++ at first use and again on shape changes, costing more than it saves here.
    """
    rotation = camera_to_world[:, :3, :3] * torch.tensor([1.0, -1.0, -1.0], device=camera_to_world.device)
    rotation_inv = rotation.transpose(1, 2)
    viewmat = torch.zeros(camera_to_world.shape[0], 4, 4, device=camera_to_world.device, dtype=camera_to_world.dtype)
    viewmat[:, 3, 3] = 1.0
    viewmat[:, :3, :3] = rotation_inv
    viewmat[:, :3, 3:4] = -torch.bmm(rotation_inv, camera_to_world[:, :3, 3:4])
    return viewmat


class LazyLPIPS(torch.nn.Module):
    """torchmetrics' LPIPS, built on first call; NaN with one warning when its weights are not on this machine.

    LPIPS needs torchvision's pretrained AlexNet. Without that file in torch's hub cache the metric is reported as
    NaN (unavailable; ``ns-eval`` writes it as null), never as a made-up value, and no download is attempted (it
    would be tried, and fail offline, on every run).
    """

    def __init__(self, **lpips_kwargs):
        super().__init__()
        self._lpips_kwargs = lpips_kwargs
        self._metric: List[torch.nn.Module] = []  # kept out of the module tree: not in checkpoints
        self.unavailable_reason: Optional[str] = None

    def forward(self, target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        if not self._metric and self.unavailable_reason is None:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            missing = missing_alexnet_weights()
            if missing is None:
                try:
                    self._metric.append(LearnedPerceptualImagePatchSimilarity(**self._lpips_kwargs))
                except OSError as error:  # weights there but unreadable
                    missing = f"torchvision's AlexNet weights could not be read ({error})"
            if missing is not None:
                self.unavailable_reason = (
                    f"LPIPS is unavailable: {missing}; put the file there (or set TORCH_HOME) to enable it."
                )
                CONSOLE.print(f"[yellow]{escape(self.unavailable_reason)}")
        if not self._metric:
            return torch.tensor(float("nan"))
        metric = self._metric[0].to(prediction.device)
        return metric(target, prediction)
