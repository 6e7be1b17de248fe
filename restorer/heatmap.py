"""Stage 1: the homogeneous heatmap predictor (paper Sec. 4.3, Phase 1, LoRA1).

Sequence ``[z_ref, z_hm_s]`` with per-token timesteps ``[0, s]``: the DBA reference latent is
context and the heatmap latent is sampled from noise by the shared Euler sampler. Decoding the
result gives the artifact heatmap video (bright = severe), kept as RGB as the official pipeline
decodes it.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from .prompts import PromptEmbedding
from .sampler import TARGET, ProgressCallback, euler_sample, pack_latents, unpack_latents

STAGE1_ADAPTER = "stage1"
STAGE1_ROLES = ("reference", TARGET)
"""Segment order of stage 1: ``[z_ref, z_hm]`` -> timesteps ``[0, s]``."""


def sample_heatmap_latent(
    transformer: torch.nn.Module,
    prompt: PromptEmbedding,
    z_ref: Float[Tensor, "1 channels frames height width"],
    noise: Float[Tensor, "1 tokens channels"],
    sigmas: Tensor,
    segment_coords: Tensor,
    generator: torch.Generator,
    progress: ProgressCallback | None = None,
) -> Float[Tensor, "1 channels frames height width"]:
    """Sample the heatmap latent ``z_hm`` conditioned on ``z_ref`` (the stage-1 adapter must be active).

    ``noise`` and ``generator`` come from :meth:`artifactworld_ns.restorer.stages.StageRunner._stage_start` so that draws
    happen in the official order (target noise, reference encode, then per-step context noise).
    """
    _, _, frames, height, width = z_ref.shape
    ref_tokens = pack_latents(z_ref.float())
    tokens = euler_sample(
        transformer,
        prompt,
        roles=STAGE1_ROLES,
        context=lambda step, sigma: {"reference": ref_tokens},
        noise=noise,
        sigmas=sigmas,
        segment_coords=segment_coords,
        generator=generator,
        stage="stage 1 (heatmap)",
        progress=progress,
    )
    return unpack_latents(tokens.cpu(), frames, height, width)
