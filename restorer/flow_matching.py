"""Masked flow matching of the official ArtifactWorld trainer (paper Sec. 4.3, Eq. 3): sequences,
timestep sampling, noising and the loss. The training loop is :mod:`artifactworld_ns.restorer.training`.

Our own implementation of ``stages/stage{1,2}/src/ltxv_trainer/training_strategies.py`` (repository
``fyting/ArtifactWorld`` at commit ``9250e92``) and of LTX-Video-Trainer's timestep sampler
(``src/ltxv_trainer/timestep_samplers.py``).

**Sequences** (``ReferenceVideoTrainingStrategy.prepare_batch``), all segments the same size and on the
same RoPE coordinates:

* stage 1 (LoRA1, heatmap predictor): ``[z_ref, z_hm_s]``, target ``z0`` = the pseudo-GT heatmap latent;
* stage 2 (LoRA2, restorer): ``[z_ref, z_clean_s, 0.05 * z_hm]``, target ``z0`` = the clean video latent;
  the heatmap latent is multiplied by ``noisemap_feature_scale`` (0.05) and is clean conditioning.
  There is no AATF blending (``z_full`` / ``z_null``) and no context noise in training: both exist only
  in the official inference pipeline.

**Masked flow matching.** ``s`` is drawn per sample (:func:`sample_sigma`), ``eps ~ N(0, I)`` over the
target tokens, ``z_s = (1 - s) z0 + s eps``; conditioning tokens (the reference, stage 2's heatmap and,
with first-frame conditioning, the target's first latent frame, kept clean) get timestep 0 and the
others ``round(1000 s)``; the loss is the squared error to ``eps - z0`` on the target segment with the
conditioning tokens masked out, normalized by the unmasked share (:func:`masked_flow_matching_loss`).

**First-frame conditioning** (``_create_first_frame_conditioning_mask``): with probability
``first_frame_conditioning_p`` (0.2 in the official configs) the target's first latent frame (``h * w``
tokens) is conditioning. The official last- and middle-frame options default to 0 and are not used.

**Timesteps.** ``shifted_logit_normal`` (official): ``s = sigmoid(n * std + shift(L))``, ``n ~ N(0, 1)``,
``std = 1``, where ``L`` is the target's token count and ``shift(L)`` the line through
``(1024, 0.95)`` and ``(4096, 2.05)``, not clamped (:func:`logit_normal_shift`); ``uniform``: ``s ~ U(0, 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .aatf import NOISEMAP_FEATURE_SCALE
from .errors import RestorerInputError
from .prompts import PromptEmbedding
from .sampler import pack_latents as pack

FIRST_FRAME_CONDITIONING_P = 0.2
"""The official ``first_frame_conditioning_p`` of both stages."""
WORLD_MODEL_STAGE = "world-model"
STAGE_SEGMENTS = {
    1: ("reference", "target"),
    2: ("reference", "target", "heatmap"),
    WORLD_MODEL_STAGE: ("reference", "target"),
}
"""Segment order of each stage's training sequence (official: ref + target [+ noisemap]); the world model (paper
Sec. 3.3) lays its clean clip out as stage 1 lays out its reference: ``[z_clean, z_artifact_s]``."""
STAGE_LATENTS = {1: ("z_ref", "z_heatmap"), 2: ("z_ref", "z_clean"), WORLD_MODEL_STAGE: ("z_clean", "z_artifact")}
"""(reference, target) latent of each stage's sequence."""
TRAINING_FPS = 24.0
"""Frame rate for latents that carry none (the official ``DEFAULT_FPS``)."""

# LTX-Video-Trainer's ShiftedLogitNormalTimestepSampler: shift is linear in the sequence length.
SHIFT_MIN_TOKENS, SHIFT_MAX_TOKENS = 1024, 4096
SHIFT_AT_MIN, SHIFT_AT_MAX = 0.95, 2.05


# ---------------------------------------------------------------------------------------------- timesteps


def logit_normal_shift(tokens: int) -> float:
    """Mean of the logit-normal for a target of ``tokens`` tokens (LTX-Video-Trainer ``timestep_samplers.py``).

    The line through ``(1024, 0.95)`` and ``(4096, 2.05)``, extrapolated outside that range
    (e.g. 6630 tokens, 97 x 544 x 960, -> about 2.957).
    """
    # diffusers' LTX shift line (``calculate_shift``), with the trainer's two points instead of the pipeline's.
    from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

    return calculate_shift(tokens, SHIFT_MIN_TOKENS, SHIFT_MAX_TOKENS, SHIFT_AT_MIN, SHIFT_AT_MAX)


def sample_sigma(mode: str, tokens: int, generator: torch.Generator, std: float = 1.0) -> float:
    """One flow-matching time ``s`` for a target of ``tokens`` tokens (see module doc), by diffusers'
    ``compute_density_for_timestep_sampling``: ``logit_normal`` with mean ``shift(tokens)``, or uniform.

    It rounds ``n * std + shift`` once in float32 where the official trainer rounds ``n`` first: the two
    differ by at most one float32 ulp of ``s`` (1,060 of 20,000 draws at 6,630 tokens; the previous
    hand-written float64 version differed from the official in 1,238).
    """
    from diffusers.training_utils import compute_density_for_timestep_sampling

    scheme = "uniform" if mode == "uniform" else "logit_normal"
    u = compute_density_for_timestep_sampling(scheme, 1, logit_normal_shift(tokens), std, generator=generator)
    return float(u[0])


def draw_first_frame_conditioning(p: float, generator: torch.Generator) -> bool:
    """Whether this sample keeps its first target frame clean: ``p > 0`` and ``u < p``, ``u ~ U(0, 1)``."""
    return p > 0 and float(torch.rand((), generator=generator)) < p


# ---------------------------------------------------------------------------------------------- batches


@dataclass
class FlowBatch:
    """One training sequence: model inputs, the velocity target, which tokens condition, where the target is."""

    hidden: Tensor  # [1, segments * tokens, C]
    timesteps: Tensor  # [1, segments * tokens]: 0 on conditioning tokens, round(1000 s) elsewhere
    coords: Tensor  # [1, 3, segments * tokens]
    velocity: Tensor  # [1, tokens, C] = eps - z0 over the whole target segment
    conditioning: Tensor  # [1, segments * tokens] bool: True = clean conditioning token (no loss)
    target: slice
    sigma: float


def training_video_coords(frames: int, height: int, width: int, num_segments: int, fps: float = TRAINING_FPS) -> Tensor:
    """RoPE coordinates ``[1, 3, segments * F*H*W]`` as the official trainer builds them.

    Latent indices (frame, row, column) times ``(8 / fps, 32, 32)`` (``prepare_video_coordinates`` and
    ``get_rope_scale_factors``), repeated for every segment. Note: no causal ``8 f - 7`` frame offset, unlike
    the official inference pipeline.
    """
    f, h, w = torch.meshgrid(
        torch.arange(frames, dtype=torch.float32),
        torch.arange(height, dtype=torch.float32),
        torch.arange(width, dtype=torch.float32),
        indexing="ij",
    )
    one = torch.stack([f.flatten() * (8.0 / fps), h.flatten() * 32.0, w.flatten() * 32.0])
    return one.repeat(1, num_segments)[None]


def conditioning_mask(stage: int, tokens: int, frame_tokens: int, first_frame: bool) -> Tensor:
    """``[1, seq]`` bool: every context segment, plus the target's first latent frame when ``first_frame``.

    The first frame is masked only when it is not the whole target (official: ``h * w < seq_len``).
    """
    segments = STAGE_SEGMENTS[stage]
    parts = []
    for role in segments:
        part = torch.full((tokens,), role != "target", dtype=torch.bool)
        if role == "target" and first_frame and frame_tokens < tokens:
            part[:frame_tokens] = True
        parts.append(part)
    return torch.cat(parts)[None]


def build_flow_batch(
    stage: int,
    latents: dict,
    sigma: float,
    noise: Tensor,
    first_frame: bool = False,
    noisemap_feature_scale: float = NOISEMAP_FEATURE_SCALE,
) -> FlowBatch:
    """Assemble the stage's training sequence at time ``sigma`` (official ``prepare_batch``, see module doc).

    Args:
        latents: ``z_ref``, ``z_clean``, ``z_heatmap`` (``[1, C, F, h, w]`` each; the world model also ``z_artifact``) and
            optionally ``fps``.
        noise: ``eps`` for the target, latent-shaped ``[1, C, F, h, w]`` or tokens ``[1, F*h*w, C]``.
        first_frame: keep the target's first latent frame clean (timestep 0, no loss).
    """
    if stage not in STAGE_SEGMENTS:
        raise RestorerInputError(
            f"--stage must be 1 (heatmap predictor), 2 (AATF restorer) or world-model, got {stage}."
        )
    _, _, frames, height, width = latents["z_ref"].shape
    reference_key, target_key = STAGE_LATENTS[stage]
    z0 = pack(latents[target_key].float())
    noise = (pack(noise.float()) if noise.ndim == 5 else noise.float()).to(z0)
    tokens = z0.shape[1]
    segments = STAGE_SEGMENTS[stage]
    mask = conditioning_mask(stage, tokens, height * width, first_frame)
    target = slice(segments.index("target") * tokens, (segments.index("target") + 1) * tokens)
    keep_clean = mask[:, target, None]
    z_s = torch.where(keep_clean, z0, (1.0 - sigma) * z0 + sigma * noise)
    context = {"reference": pack(latents[reference_key].float())}
    if stage == 2:
        context["heatmap"] = pack(latents["z_heatmap"].float()) * noisemap_feature_scale
    hidden = torch.cat([z_s if role == "target" else context[role] for role in segments], dim=1)
    step_value = float(round(sigma * 1000.0))  # official: torch.round(sigmas * 1000).long()
    timesteps = torch.where(mask, torch.zeros(()), torch.full((), step_value))
    fps = float(latents.get("fps", TRAINING_FPS))
    return FlowBatch(
        hidden=hidden,
        timesteps=timesteps,
        coords=training_video_coords(frames, height, width, len(segments), fps),
        velocity=noise - z0,
        conditioning=mask,
        target=target,
        sigma=float(sigma),
    )


def masked_flow_matching_loss(prediction: Tensor, batch: FlowBatch) -> Tensor:
    """Official ``compute_loss``: squared error on the target segment, conditioning tokens masked out,
    divided by the unmasked share of the target (i.e. the mean over the unmasked target tokens)."""
    error = (prediction[:, batch.target].float() - batch.velocity.to(prediction.device).float()).pow(2)
    keep = (~batch.conditioning[:, batch.target]).to(prediction.device).unsqueeze(-1).float()
    return error.mul(keep).div(keep.mean()).mean()


def predict_velocity(transformer: nn.Module, batch: FlowBatch, prompt: PromptEmbedding, device, dtype) -> Tensor:
    """The transformer's velocity prediction for the whole sequence ``[1, seq, C]``."""
    return transformer(
        hidden_states=batch.hidden.to(device, dtype),
        encoder_hidden_states=prompt.embeds.to(device, dtype),
        timestep=batch.timesteps.to(device, torch.float32),
        encoder_attention_mask=prompt.mask.to(device),
        video_coords=batch.coords.to(device),
        return_dict=False,
    )[0]


@torch.no_grad()
def evaluate_loss(
    transformer: nn.Module,
    stage: int,
    items: list[dict],
    prompt: PromptEmbedding,
    sigmas: tuple[float, ...] = (0.2, 0.5, 0.8),
    seed: int = 0,
    noisemap_feature_scale: float = NOISEMAP_FEATURE_SCALE,
) -> float:
    """Mean masked flow-matching loss over fixed ``sigmas`` and fixed noise, no first-frame conditioning (a deterministic yardstick)."""
    param = next(transformer.parameters())
    generator = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for latents in items:
        for sigma in sigmas:
            noise = torch.randn(latents["z_ref"].shape, generator=generator)
            batch = build_flow_batch(stage, latents, sigma, noise, noisemap_feature_scale=noisemap_feature_scale)
            prediction = predict_velocity(transformer, batch, prompt, param.device, param.dtype)
            total += float(masked_flow_matching_loss(prediction, batch))
            count += 1
    return total / count
