"""Flow-matching Euler sampler shared by both stages (LTX-Video conventions).

Flow matching: ``z_s = (1 - s) z0 + s eps``; the transformer predicts the velocity
``v = eps - z0`` from timestep ``s * 1000``; one Euler step is
``z <- z + (s_next - s) v``. The sequence is a concatenation of segments of equal
size (reference, target, and in stage 2 the heatmap); only the target is noisy.
Per-token timesteps give clean context segments timestep 0 and the target
``s * 1000`` (the paper's ``t_seq = [0, t, 0]``, Sec. 4.3), and every segment
reuses the target's (frame, row, column) RoPE coordinates, passed to the
transformer as ``video_coords``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from restorer.prompts import PromptEmbedding

TARGET = "target"
"""Segment role that is denoised; every other role is clean context (timestep 0)."""

ProgressCallback = Callable[[str, int, int], None]
"""``progress(stage, steps_done, total_steps)``."""


def pack_latents(latents: Float[Tensor, "batch channels frames height width"]) -> Float[Tensor, "batch tokens channels"]:
    """``[B, C, F, H, W]`` -> tokens ``[B, F*H*W, C]`` (patch size 1, frame-major order)."""
    return latents.flatten(2).transpose(1, 2)


def unpack_latents(tokens: Float[Tensor, "batch tokens channels"], frames: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`pack_latents`."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], frames, height, width)


def latent_video_coords(
    frames: int, height: int, width: int, frame_rate: float = 25.0, temporal: int = 8, spatial: int = 32
) -> Float[Tensor, "1 3 tokens"]:
    """RoPE coordinates of one latent segment in pixel units, as LTX pipelines build them.

    Latent frame ``f`` maps to pixel frame ``max(8 f - 7, 0)`` divided by the frame rate,
    latent row/column to ``32 * row`` / ``32 * col``.
    """
    f, h, w = torch.meshgrid(
        torch.arange(frames, dtype=torch.float32),
        torch.arange(height, dtype=torch.float32),
        torch.arange(width, dtype=torch.float32),
        indexing="ij",
    )
    f = (f * temporal + 1 - temporal).clamp(min=0) / frame_rate
    return torch.stack([f.flatten(), h.flatten() * spatial, w.flatten() * spatial])[None]


def sequence_coords(segment_coords: Float[Tensor, "1 3 tokens"], num_segments: int) -> Tensor:
    """Every segment reuses the target's coordinates."""
    return segment_coords.repeat(1, 1, num_segments)


def sequence_timesteps(roles: Sequence[str], tokens_per_segment: int, sigma: float) -> Float[Tensor, "1 seq"]:
    """Per-token transformer timesteps: ``sigma * 1000`` on the target segment, 0 on context segments."""
    values = [torch.full((tokens_per_segment,), sigma * 1000.0 if role == TARGET else 0.0) for role in roles]
    return torch.cat(values)[None]


def calculate_shift(seq_len: int, base_seq_len: int, max_seq_len: int, base_shift: float, max_shift: float) -> float:
    """Resolution-dependent shift ``mu`` (linear in the token count) for dynamically shifted schedules."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return seq_len * slope + base_shift - slope * base_seq_len


def flow_sigmas(scheduler, num_steps: int, tokens_per_segment: int) -> Float[Tensor, "steps_plus_one"]:
    """The scheduler's sigma schedule for ``num_steps`` steps, ending at 0 (length ``num_steps + 1``)."""
    kwargs = {}
    cfg = scheduler.config
    if getattr(cfg, "use_dynamic_shifting", False):
        kwargs["mu"] = calculate_shift(
            tokens_per_segment,
            cfg.get("base_image_seq_len", 256),
            cfg.get("max_image_seq_len", 4096),
            cfg.get("base_shift", 0.5),
            cfg.get("max_shift", 1.15),
        )
    scheduler.set_timesteps(num_inference_steps=num_steps, device="cpu", **kwargs)
    sigmas = scheduler.sigmas.detach().float().cpu().clone()
    if sigmas[-1] != 0:
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return sigmas


ContextFn = Callable[[int, float], dict[str, Tensor]]
"""``context(step, sigma) -> {role: tokens}`` for the clean segments at one step."""


@torch.no_grad()
def euler_sample(
    transformer: torch.nn.Module,
    prompt: PromptEmbedding,
    *,
    roles: Sequence[str],
    context: ContextFn,
    noise: Float[Tensor, "1 tokens channels"],
    sigmas: Float[Tensor, "steps_plus_one"],
    segment_coords: Float[Tensor, "1 3 tokens"],
    stage: str = "",
    progress: ProgressCallback | None = None,
) -> Float[Tensor, "1 tokens channels"]:
    """Integrate the target segment from noise (``s = sigmas[0]``) to data (``s = 0``).

    Args:
        roles: segment order, e.g. ``("reference", "target")``; exactly one is ``"target"``.
        context: returns the clean tokens of every non-target role at a step (lets stage 2
            change its heatmap segment per step, Eq. 2).
        noise: initial target tokens ``eps``; ``z_{s0} = eps`` (``s0 = 1``) or
            ``(1 - s0) * 0 + s0 * eps`` when the schedule starts below 1.
    """
    param = next(transformer.parameters())
    device, dtype = param.device, param.dtype
    tokens = noise.shape[1]
    target_index = list(roles).index(TARGET)
    target_slice = slice(target_index * tokens, (target_index + 1) * tokens)
    coords = sequence_coords(segment_coords, len(roles)).to(device)
    prompt = prompt.to(device, dtype)
    z = noise.to(device, torch.float32) * float(sigmas[0])
    num_steps = len(sigmas) - 1
    for step in range(num_steps):
        s, s_next = float(sigmas[step]), float(sigmas[step + 1])
        clean = context(step, s)
        segments = [z if role == TARGET else clean[role].to(device, torch.float32) for role in roles]
        hidden = torch.cat(segments, dim=1).to(dtype)
        velocity = transformer(
            hidden_states=hidden,
            encoder_hidden_states=prompt.embeds,
            timestep=sequence_timesteps(roles, tokens, s).to(device, torch.float32),
            encoder_attention_mask=prompt.mask,
            video_coords=coords,
            return_dict=False,
        )[0][:, target_slice].float()
        z = z + (s_next - s) * velocity
        if progress is not None:
            progress(stage, step + 1, num_steps)
    return z
