"""VAE encode/decode between pixel videos and the normalized LTX latent space.

Pixel videos are channels-last ``[T, H, W, 3]`` in ``[0, 1]`` (mapped to ``[-1, 1]``
for the VAE); latents are ``[1, C, F, h, w]`` normalized with the VAE's
``latents_mean`` / ``latents_std`` and ``scaling_factor`` as LTX pipelines do.
Also builds the AATF auxiliary latents (paper Eq. 2): ``z_full`` is the latent of
an all-white mask video whose DBA boundary frames (frame 0 and the last 8) are
black, ``z_null`` the latent of an all-black mask video.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from restorer.dba import ANCHOR_TAIL_FRAMES, anchor_frame_mask


def _stats(vae, like: Tensor) -> tuple[Tensor, Tensor, float]:
    mean = vae.latents_mean.view(1, -1, 1, 1, 1).to(like.device, torch.float32)
    std = vae.latents_std.view(1, -1, 1, 1, 1).to(like.device, torch.float32)
    return mean, std, float(vae.config.scaling_factor)


def _vae_param(vae) -> Tensor:
    return next(vae.parameters())


@torch.no_grad()
def encode_video(vae, video: Float[Tensor, "frames height width 3"]) -> Float[Tensor, "1 channels lat_frames lat_h lat_w"]:
    """Encode a ``[0, 1]`` video to a normalized latent (posterior mode, deterministic)."""
    param = _vae_param(vae)
    x = (video.permute(3, 0, 1, 2)[None].to(param.device, torch.float32) * 2.0 - 1.0).to(param.dtype)
    z = vae.encode(x).latent_dist.mode().float()
    mean, std, scale = _stats(vae, z)
    return (z - mean) * scale / std


@torch.no_grad()
def decode_latents(vae, latents: Float[Tensor, "1 channels lat_frames lat_h lat_w"]) -> Float[Tensor, "frames height width 3"]:
    """Decode a normalized latent to a ``[0, 1]`` video ``[T, H, W, 3]`` (decode timestep 0 when the VAE asks)."""
    param = _vae_param(vae)
    latents = latents.to(param.device, torch.float32)
    mean, std, scale = _stats(vae, latents)
    z = (latents * std / scale + mean).to(param.dtype)
    temb = torch.zeros(1, device=param.device, dtype=param.dtype) if vae.config.timestep_conditioning else None
    video = vae.decode(z, temb, return_dict=False)[0].float()
    return ((video[0].permute(1, 2, 3, 0) + 1.0) / 2.0).clamp(0.0, 1.0)


def mask_to_video(mask: Float[Tensor, "frames height width"]) -> Float[Tensor, "frames height width 3"]:
    """Gray mask ``[T, H, W]`` -> 3-channel video."""
    return mask[..., None].expand(*mask.shape, 3)


def video_to_mask(video: Float[Tensor, "frames height width 3"]) -> Float[Tensor, "frames height width"]:
    """3-channel decoded heatmap video -> gray ``[T, H, W]`` in ``[0, 1]`` (channel mean)."""
    return video.mean(dim=-1).clamp(0.0, 1.0)


def full_mask_video(frames: int, height: int, width: int, k: int = ANCHOR_TAIL_FRAMES) -> Tensor:
    """The ``z_full`` mask: 1 everywhere except the DBA boundary frames (frame 0, last ``k``), which are 0."""
    mask = torch.ones(frames, height, width)
    mask[anchor_frame_mask(frames, k)] = 0.0
    return mask


@torch.no_grad()
def auxiliary_latents(vae, frames: int, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Compute ``(z_full, z_null)`` with the VAE for a clip of the given internal size."""
    z_full = encode_video(vae, mask_to_video(full_mask_video(frames, height, width)))
    z_null = encode_video(vae, mask_to_video(torch.zeros(frames, height, width)))
    return z_full, z_null
