"""VAE encode/decode between pixel videos and the normalized LTX latent space, as the official pipeline does.

Pixel videos are channels-last ``[T, H, W, 3]`` in ``[0, 1]`` (mapped to ``[-1, 1]`` for the VAE);
latents are ``[1, C, F, h, w]``. Encoding samples the posterior with the stage's generator
(``latent_dist.sample(generator)``) and normalizes with the VAE's ``latents_mean`` / ``latents_std``
(no scaling factor, in the VAE's dtype, then float32); decoding denormalizes with the scaling factor
and decodes at timestep 0 with no noise (official ``ltxv_pipeline.py``, ``retrieve_latents``,
``_normalize_latents``, ``_denormalize_latents``).

Also builds the AATF auxiliary latents (paper Eq. 2) from their definition, for clips whose size
the release's ``z_*.pt`` files do not fit: ``z_full`` is the latent of an all-white mask video whose
DBA anchor frames (frame 0 and the last 9) are black, ``z_null`` the latent of an all-black video.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from .dba import anchor_frame_mask


def _vae_param(vae) -> Tensor:
    return next(vae.parameters())


def _stats(vae, like: Tensor) -> tuple[Tensor, Tensor]:
    mean = vae.latents_mean.view(1, -1, 1, 1, 1).to(like.device, like.dtype)
    std = vae.latents_std.view(1, -1, 1, 1, 1).to(like.device, like.dtype)
    return mean, std


def video_to_vae_input(video: Float[Tensor, "frames height width 3"], like: Tensor) -> Tensor:
    """``[T, H, W, 3]`` in ``[0, 1]`` -> ``[1, 3, T, H, W]`` in ``[-1, 1]`` on ``like``'s device and dtype."""
    return (video.permute(3, 0, 1, 2)[None].to(like.device, torch.float32) * 2.0 - 1.0).to(like.dtype)


@torch.no_grad()
def encode_video(
    vae, video: Float[Tensor, "frames height width 3"], generator: torch.Generator | None = None, sample: bool = True
) -> Float[Tensor, "1 channels lat_frames lat_h lat_w"]:
    """Encode a ``[0, 1]`` video to a normalized float32 latent.

    ``sample=True`` (the official convention) draws from the posterior with ``generator``;
    ``sample=False`` takes its mode (deterministic; used only for latents the release does not define
    by sampling, such as the auxiliary latents computed here).
    """
    dist = vae.encode(video_to_vae_input(video, _vae_param(vae))).latent_dist
    z = dist.sample(generator) if sample else dist.mode()
    mean, std = _stats(vae, z)
    return ((z - mean) * 1.0 / std).float()


@torch.no_grad()
def decode_latents(
    vae, latents: Float[Tensor, "1 channels lat_frames lat_h lat_w"]
) -> Float[Tensor, "frames height width 3"]:
    """Decode a normalized latent to a ``[0, 1]`` video ``[T, H, W, 3]`` (decode timestep 0 when the VAE asks)."""
    param = _vae_param(vae)
    latents = latents.to(param.device, torch.float32)
    mean, std = _stats(vae, latents)
    z = (latents * std / float(vae.config.scaling_factor) + mean).to(param.dtype)
    temb = torch.zeros(1, device=param.device, dtype=param.dtype) if vae.config.timestep_conditioning else None
    video = vae.decode(z, temb, return_dict=False)[0].float()
    return (video[0].permute(1, 2, 3, 0) * 0.5 + 0.5).clamp(0.0, 1.0)


def mask_to_video(mask: Float[Tensor, "frames height width"]) -> Float[Tensor, "frames height width 3"]:
    """Gray mask ``[T, H, W]`` -> 3-channel video (a 3-channel input passes through)."""
    return mask if mask.ndim == 4 else mask[..., None].expand(*mask.shape, 3)


def video_to_mask(video: Float[Tensor, "frames height width 3"]) -> Float[Tensor, "frames height width"]:
    """3-channel decoded heatmap video -> gray ``[T, H, W]`` in ``[0, 1]`` (channel mean)."""
    return video.mean(dim=-1).clamp(0.0, 1.0)


def quantize_8bit(video: Tensor) -> Tensor:
    """Round to 8-bit levels, as the official stage 1 hands its heatmap on (PIL frames, then a video file)."""
    return (video * 255.0).round() / 255.0


def full_mask_video(frames: int, height: int, width: int) -> Tensor:
    """The ``z_full`` mask: 1 everywhere except the DBA anchor frames (frame 0, last 9), which are 0."""
    mask = torch.ones(frames, height, width)
    mask[anchor_frame_mask(frames)] = 0.0
    return mask


@torch.no_grad()
def auxiliary_latents(vae, frames: int, height: int, width: int) -> tuple[Tensor, Tensor]:
    """``(z_full, z_null)`` computed with the VAE (posterior mode) for a reference of the given size, unscaled."""
    z_full = encode_video(vae, mask_to_video(full_mask_video(frames, height, width)), sample=False)
    z_null = encode_video(vae, mask_to_video(torch.zeros(frames, height, width)), sample=False)
    return z_full, z_null
