"""Render-time perturbations of a checkpoint (paper Sec. 3.2, "explicit parameter perturbations"), no retraining.

- Cracks: logarithmic compression of the Gaussians' scales, ``s' = s_ref ln(1 + s / s_ref)`` per axis with
  ``s_ref = median(s) / strength``: small Gaussians keep their size, large ones shrink the most, so the
  surfaces they covered open up into voids. ``strength -> 0`` gives ``s' -> s`` (identity).
- Color Outliers: Gaussian noise of standard deviation ``strength`` on every SH coefficient (DC and
  higher bands): colours shift erratically and differently per view; geometry is untouched.
- Aliasing: render at ``1/factor`` of the width and height, then upsample with nearest-neighbour to full
  size: no low-pass pre-filter, so small footprints alias into stair steps and shimmer from frame to frame.

The formulas' constants (median reference, nearest upsampling) are our choice; the paper names the operations only.
"""

from __future__ import annotations

import contextlib
import math
from typing import Dict, Iterator

import torch
from jaxtyping import Float
from torch import Tensor


def compress_log_scales(log_scales: Float[Tensor, "gaussians 3"], strength: float) -> Float[Tensor, "gaussians 3"]:
    """Cracks: splatfacto's log-scales after ``s' = s_ref ln(1 + s / s_ref)``, ``s_ref = median(s) / strength``."""
    if strength <= 0:
        return log_scales.clone()
    log_ref = log_scales.median() - math.log(strength)
    # ln(s') = ln(s_ref) + ln(ln(1 + s / s_ref)), computed in the log domain for tiny and huge scales alike.
    ratio = torch.exp(log_scales - log_ref)
    return log_ref + torch.log(torch.log1p(ratio).clamp_min(1e-30))


def sh_noise(
    features_dc: Float[Tensor, "gaussians 3"],
    features_rest: Float[Tensor, "gaussians bases 3"],
    std: float,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Color Outliers: every SH coefficient plus ``N(0, std^2)`` noise (drawn on the CPU with ``generator``)."""
    noise_dc = torch.randn(features_dc.shape, generator=generator) * std
    noise_rest = torch.randn(features_rest.shape, generator=generator) * std
    return features_dc + noise_dc.to(features_dc), features_rest + noise_rest.to(features_rest)


def upsample_nearest(frames: Float[Tensor, "frames h w 3"], height: int, width: int) -> Float[Tensor, "frames H W 3"]:
    """Aliasing's second half: low-resolution renders back to full size with nearest-neighbour (no filtering)."""
    return torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2), size=(height, width), mode="nearest").permute(
        0, 2, 3, 1
    )


@contextlib.contextmanager
def perturbed_gaussians(
    gauss_params: Dict[str, Tensor], kind: str | None, strength: float, seed: int
) -> Iterator[None]:
    """Within the block the model's Gaussians carry the perturbation ``kind`` ('cracks' or 'color-outliers');
    afterwards they are exactly what they were (training goes on from the unperturbed checkpoint)."""
    if kind not in ("cracks", "color-outliers") or strength <= 0:
        yield
        return
    names = ("scales",) if kind == "cracks" else ("features_dc", "features_rest")
    saved = {name: gauss_params[name].data.clone() for name in names}
    try:
        with torch.no_grad():
            if kind == "cracks":
                gauss_params["scales"].data.copy_(compress_log_scales(saved["scales"], strength))
            else:
                generator = torch.Generator().manual_seed(seed)
                dc, rest = sh_noise(saved["features_dc"], saved["features_rest"], strength, generator)
                gauss_params["features_dc"].data.copy_(dc)
                gauss_params["features_rest"].data.copy_(rest)
        yield
    finally:
        for name, value in saved.items():
            gauss_params[name].data.copy_(value)
