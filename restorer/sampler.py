"""Flow-matching Euler sampler shared by both stages, with the official inference conventions.

Flow matching: ``z_s = (1 - s) z0 + s eps``; the transformer predicts the velocity
``v = eps - z0`` from timestep ``s * 1000``; one Euler step is ``z <- z + (s_next - s) v``.
The sequence is a concatenation of segments of equal size (reference, target, and in stage 2
the heatmap); only the target is denoised. Per-token timesteps give the context segments 0 and
the target ``s * 1000`` (the paper's ``t_seq = [0, t, 0]``, Sec. 4.3), and every segment reuses
the target's (frame, row, column) RoPE coordinates, passed to the transformer as ``video_coords``.

What the released adapters expect (official ``stages/stage2/src/ltxv_trainer/ltxv_pipeline.py``,
commit ``9250e92``):

* **sigmas** -- LTX's linear-quadratic schedule (:func:`linear_quadratic_sigmas`), no resolution shift;
* **noise** -- one generator seeded per stage; the target noise is drawn first, as ``[1, C, F, h, w]``,
  then packed (:func:`initial_noise`);
* **context noise** -- at every step the context tokens are their clean latents plus
  ``0.15 * s**2`` times fresh noise drawn for the whole sequence, their timestep staying 0
  (:data:`CONTEXT_NOISE_SCALE`);
* **no guidance** -- guidance scale 1, so one transformer call per step and no negative prompt.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from .prompts import PromptEmbedding

TARGET = "target"
"""Segment role that is denoised; every other role is clean context (timestep 0)."""

CONTEXT_NOISE_SCALE = 0.15
"""The official ``image_cond_noise_scale``: context tokens get ``0.15 * s**2`` fresh noise each step."""

NUM_TRAIN_TIMESTEPS = 1000
"""Transformer timestep = ``sigma * 1000`` (the scheduler's ``num_train_timesteps``)."""

ProgressCallback = Callable[[str, int, int], None]
"""``progress(stage, steps_done, total_steps)``."""


def pack_latents(
    latents: Float[Tensor, "batch channels frames height width"],
) -> Float[Tensor, "batch tokens channels"]:
    """``[B, C, F, H, W]`` -> tokens ``[B, F*H*W, C]`` (patch size 1, frame-major order)."""
    # Mirrors diffusers' LTXPipeline._pack_latents with patch_size = patch_size_t = 1 (a private static method there).
    return latents.flatten(2).transpose(1, 2)


def unpack_latents(tokens: Float[Tensor, "batch tokens channels"], frames: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`pack_latents`."""
    # Mirrors diffusers' LTXPipeline._unpack_latents with patch_size = patch_size_t = 1.
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], frames, height, width)


def latent_video_coords(
    frames: int, height: int, width: int, frame_rate: float = 25.0, temporal: int = 8, spatial: int = 32
) -> Float[Tensor, "1 3 tokens"]:
    """RoPE coordinates of one latent segment in pixel units, as LTX pipelines build them.

    Latent frame ``f`` maps to pixel frame ``max(8 f - 7, 0)`` times ``1 / frame_rate``,
    latent row/column to ``32 * row`` / ``32 * col``.
    """
    f, h, w = torch.meshgrid(
        torch.arange(frames, dtype=torch.float32),
        torch.arange(height, dtype=torch.float32),
        torch.arange(width, dtype=torch.float32),
        indexing="ij",
    )
    f = (f * temporal + 1 - temporal).clamp(min=0) * (1.0 / frame_rate)
    return torch.stack([f.flatten(), h.flatten() * spatial, w.flatten() * spatial])[None]


def sequence_coords(segment_coords: Float[Tensor, "1 3 tokens"], num_segments: int) -> Tensor:
    """Every segment reuses the target's coordinates."""
    return segment_coords.repeat(1, 1, num_segments)


def sequence_timesteps(roles: Sequence[str], tokens_per_segment: int, sigma: float) -> Float[Tensor, "1 seq"]:
    """Per-token transformer timesteps: ``sigma * 1000`` on the target segment, 0 on context segments."""
    values = [
        torch.full((tokens_per_segment,), sigma * NUM_TRAIN_TIMESTEPS if role == TARGET else 0.0) for role in roles
    ]
    return torch.cat(values)[None]


def linear_quadratic_sigmas(
    num_steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None
) -> Float[Tensor, " steps_plus_one"]:
    """LTX-Video's linear-quadratic sigma schedule, ending at 0 (``num_steps + 1`` values).

    Written from its definition (LTX-Video ``ltx_video/schedulers/rf.py``, used by the official
    pipeline): ``1 - sigma`` rises linearly from 0 to ``threshold_noise`` over the first
    ``linear_steps = N // 2`` steps, then follows the quadratic that continues it with matching
    slope and reaches 1 at step ``N``. For 8 steps: 1, .99375, .9875, .98125, .975, .909375, .725,
    .421875, then 0.
    """
    if num_steps < 1:
        raise ValueError(f"The sampler needs at least 1 step, got {num_steps}.")
    if num_steps == 1:
        return torch.tensor([1.0, 0.0])
    n = num_steps
    m = n // 2 if linear_steps is None else linear_steps
    q = n - m
    # 1 - sigma at step i: linear part i * thr / m; quadratic part a i^2 + b i + c with
    # value thr and slope thr / m at i = m, and value 1 at i = n.
    a = (m - threshold_noise * n) / (m * q * q)
    b = threshold_noise / m - 2 * (m - threshold_noise * n) / (q * q)
    c = a * m * m
    rise = [i * threshold_noise / m for i in range(m)] + [a * i * i + b * i + c for i in range(m, n)]
    return torch.tensor([1.0 - x for x in rise] + [0.0], dtype=torch.float32)


def initial_noise(
    latent_shape: tuple[int, int, int, int, int], generator: torch.Generator, device: torch.device
) -> Float[Tensor, "1 tokens channels"]:
    """The target's starting noise: drawn as ``[1, C, F, h, w]`` float32 (the official layout), then packed."""
    from diffusers.utils.torch_utils import randn_tensor  # diffusers loads on first use: `aw-* --help` stays fast

    return pack_latents(randn_tensor(latent_shape, generator=generator, device=device, dtype=torch.float32))


def execution_device(module: torch.nn.Module) -> torch.device:
    """Where ``module`` computes: its parameters' device, or the onload device under diffusers' group offloading."""
    from diffusers.hooks.group_offloading import _get_group_onload_device, _is_group_offload_enabled

    if _is_group_offload_enabled(module):
        return torch.device(_get_group_onload_device(module))
    return next(module.parameters()).device


def compute_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype ``module`` computes in: its first floating-point parameter that is not an fp8 storage dtype."""
    for param in module.parameters():
        if param.is_floating_point() and param.element_size() > 1:
            return param.dtype
    return torch.float32


ContextFn = Callable[[int, float], dict[str, Tensor]]
"""``context(step, sigma) -> {role: tokens}``: the clean tokens of every context segment at one step."""


@torch.no_grad()
def euler_sample(
    transformer: torch.nn.Module,
    prompt: PromptEmbedding,
    *,
    roles: Sequence[str],
    context: ContextFn,
    noise: Float[Tensor, "1 tokens channels"],
    sigmas: Float[Tensor, " steps_plus_one"],
    segment_coords: Float[Tensor, "1 3 tokens"],
    generator: torch.Generator,
    context_noise_scale: float = CONTEXT_NOISE_SCALE,
    stage: str = "",
    progress: ProgressCallback | None = None,
) -> Float[Tensor, "1 tokens channels"]:
    """Integrate the target segment from noise (``s = sigmas[0]``) to data (``s = 0``).

    Each step: the context segments are ``context(step, s)`` plus ``context_noise_scale * s**2``
    times noise drawn from ``generator`` for the whole sequence (target positions unused), the
    transformer predicts the velocity, and only the target takes the Euler step.

    Args:
        roles: segment order, e.g. ``("reference", "target")``; exactly one is ``"target"``.
        context: the clean tokens of every non-target role at a step (lets stage 2 change its
            heatmap segment per step, Eq. 2).
        noise: initial target tokens ``eps``; ``z_{s0} = s0 * eps`` (``s0 = 1`` by default).
        generator: the stage's generator, already advanced past the initial noise and encodes.
    """
    from diffusers.utils.torch_utils import randn_tensor

    device, dtype = execution_device(transformer), compute_dtype(transformer)
    tokens, channels = noise.shape[1], noise.shape[2]
    target_index = list(roles).index(TARGET)
    target_slice = slice(target_index * tokens, (target_index + 1) * tokens)
    coords = sequence_coords(segment_coords, len(roles)).to(device)
    prompt = prompt.to(device, dtype)
    z = noise.to(device, torch.float32) * float(sigmas[0])
    num_steps = len(sigmas) - 1
    for step in range(num_steps):
        s, s_next = float(sigmas[step]), float(sigmas[step + 1])
        clean = context(step, s)
        fresh = randn_tensor(
            (1, len(roles) * tokens, channels), generator=generator, device=device, dtype=torch.float32
        )
        segments = []
        for index, role in enumerate(roles):
            if role == TARGET:
                segments.append(z)
                continue
            noisy = clean[role].to(device, torch.float32) + context_noise_scale * fresh[
                :, index * tokens : (index + 1) * tokens
            ] * (s**2)
            segments.append(noisy)
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
