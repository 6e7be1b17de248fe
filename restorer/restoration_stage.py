"""Stage 2: restoring a DBA reference under its heatmap (paper Sec. 4.3, Phase 2, LoRA2).

The reference and the handed-off heatmap are encoded, and the restored latent is sampled with AATF
(:func:`artifactworld_ns.restorer.aatf.sample_restored_latent`: ``[z_ref, z_target, 0.05 z~hm(s)]`` and the
blend table of ``settings.schedule``), then decoded.
"""

from __future__ import annotations

from typing import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from .aatf import STAGE2_ADAPTER, sample_restored_latent
from .lora import set_active_adapter
from .sampler import ProgressCallback, linear_quadratic_sigmas
from .stages import StageBackbone

AuxiliaryLatents = Callable[[int, int, int, torch.Size], tuple[Tensor, Tensor]]
"""``(frames, height, width, latent_shape) -> (z_full, z_null)``, unscaled (``ArtifactRestorer.auxiliary_latents``)."""


class RestorationStage:
    """Stage 2 on a model-size DBA reference and the RGB heatmap handed to it."""

    def __init__(self, backbone: StageBackbone, auxiliary_latents: AuxiliaryLatents) -> None:
        self.backbone = backbone
        self.auxiliary_latents = auxiliary_latents

    def restore(
        self,
        reference: Float[Tensor, "frames height width 3"],
        heatmap: Float[Tensor, "frames height width 3"],
        progress: ProgressCallback | None = None,
        z_ref: Float[Tensor, "1 channels latent_frames latent_height latent_width"] | None = None,
    ) -> Float[Tensor, "frames height width 3"]:
        """Model-size reference and RGB heatmap ``[F, h, w, 3]`` -> restored frames ``[F, h, w, 3]`` on the CPU.

        ``z_ref`` from stage 1 is reused: with the same seed the official stage 2 draws the same
        noise and the same posterior sample for the reference, so only the generator is advanced.
        """
        backbone = self.backbone
        generator, noise = backbone.start(reference)
        if z_ref is None:
            z_ref = backbone.encode(reference, generator)
        else:
            backbone.skip_posterior_sample(z_ref.shape, generator)
        z_hm = backbone.encode(heatmap, generator)
        z_full, z_null = self.auxiliary_latents(*reference.shape[:3], z_ref.shape)
        set_active_adapter(backbone.transformer, STAGE2_ADAPTER)
        z_target = sample_restored_latent(
            backbone.transformer,
            backbone.prompts[STAGE2_ADAPTER],
            z_ref,
            z_hm,
            z_full,
            z_null,
            backbone.settings.schedule,
            noise,
            linear_quadratic_sigmas(backbone.settings.num_inference_steps),
            backbone.coords(z_ref),
            generator,
            progress,
        )
        return backbone.decode(z_target).cpu()
