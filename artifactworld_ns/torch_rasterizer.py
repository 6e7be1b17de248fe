"""A pure-PyTorch Gaussian rasterizer for machines without CUDA, with gsplat's ``rasterization`` signature.

gsplat's ``rasterization`` needs its CUDA kernels. This module renders the same images on any
device, with autograd providing the backward pass except for the compositing, by reusing gsplat's own
PyTorch reference functions for everything they cover:

- covariances from quaternions and scales (``_quat_scale_to_covar_preci``),
- the EWA projection to the image plane, radii and compensation (``_fully_fused_projection``),
- spherical harmonics (``_spherical_harmonics``).

The one piece gsplat has no CPU version of, the alpha compositing, is written by hand following the CUDA
kernel's rules: :mod:`artifactworld_ns.pixel_gaussian_pairs` finds the sparse (pixel, Gaussian) pairs with
early termination, and :mod:`artifactworld_ns.alpha_compositing` composites them with a written-out
backward pass.

The returned ``meta`` holds what splatfacto's densification strategy reads (``means2d`` with
gradients, ``radii``, ``width``, ``height``, ``n_cameras``, ``gaussian_ids``) and, when ``absgrad``
is set, ``means2d.absgrad`` (per-pixel absolute gradients summed, as gsplat's CUDA backward does).
"""

from __future__ import annotations

import math
from typing import Dict, Literal, Optional, Tuple

import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics
from jaxtyping import Float
from torch import Tensor

from artifactworld_ns.alpha_compositing import composite_pairs
from artifactworld_ns.pixel_gaussian_pairs import find_pairs

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]


def rasterization_torch(
    means: Float[Tensor, "gaussians 3"],
    quats: Float[Tensor, "gaussians 4"],
    scales: Float[Tensor, "gaussians 3"],
    opacities: Float[Tensor, " gaussians"],
    colors: Tensor,
    viewmats: Float[Tensor, "cameras 4 4"],
    Ks: Float[Tensor, "cameras 3 3"],
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    tile_size: int = 16,
    backgrounds: Optional[Float[Tensor, "cameras channels"]] = None,
    render_mode: RenderMode = "RGB",
    rasterize_mode: Literal["classic", "antialiased"] = "classic",
    absgrad: bool = False,
    **unsupported: object,
) -> Tuple[Float[Tensor, "cameras height width channels"], Float[Tensor, "cameras height width 1"], Dict]:
    """Drop-in for ``gsplat.rendering.rasterization`` (non-packed, pinhole) that runs without CUDA.

    ``colors`` are SH coefficients ``[N, K, 3]`` when ``sh_degree`` is set, else post-activation
    values ``[N, D]`` or ``[C, N, D]``, exactly as in gsplat. Keyword arguments gsplat accepts but
    that change nothing here (``packed=False``, ``sparse_grad=False``) are tolerated.
    """
    _check_unsupported(unsupported)
    num_cameras = viewmats.shape[0]
    covars, _ = _quat_scale_to_covar_preci(quats, scales, True, False, triu=False)
    radii, means2d, depths, conics, compensations = _fully_fused_projection(
        means,
        covars,
        viewmats,
        Ks,
        width,
        height,
        eps2d=eps2d,
        near_plane=near_plane,
        far_plane=far_plane,
        calc_compensations=rasterize_mode == "antialiased",
    )
    opacities = opacities.expand(num_cameras, -1)
    if compensations is not None:
        opacities = opacities * compensations

    colors, backgrounds = _colors_to_composite(colors, means, viewmats, depths, sh_degree, backgrounds, render_mode)
    pairs = find_pairs(
        means2d.detach(), conics.detach(), opacities.detach(), radii, depths.detach(), width, height, tile_size
    )
    absgrad_buffer = torch.zeros(means2d.shape, dtype=means2d.dtype, device=means2d.device) if absgrad else None
    render_colors, render_alphas = composite_pairs(
        means2d, conics, colors, opacities, pairs, width, height, absgrad=absgrad_buffer
    )
    if absgrad_buffer is not None:
        means2d.absgrad = absgrad_buffer  # filled in by the backward pass, read by the strategy
    if backgrounds is not None:
        render_colors = render_colors + (1.0 - render_alphas) * backgrounds[:, None, None, :]
    if render_mode in ("ED", "RGB+ED"):
        render_colors = torch.cat(
            [render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], dim=-1
        )

    meta = {
        "camera_ids": None,
        "gaussian_ids": None,
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opacities,
        "tile_width": math.ceil(width / tile_size),
        "tile_height": math.ceil(height / tile_size),
        "n_pairs": pairs.pixel_ids.numel(),
        "width": width,
        "height": height,
        "tile_size": tile_size,
        "n_cameras": num_cameras,
    }
    return render_colors, render_alphas, meta


def _colors_to_composite(
    colors: Tensor,
    means: Tensor,
    viewmats: Tensor,
    depths: Tensor,
    sh_degree: Optional[int],
    backgrounds: Optional[Tensor],
    render_mode: RenderMode,
) -> Tuple[Tensor, Optional[Tensor]]:
    """Per camera and Gaussian, the channels to composite (colours from SH when ``sh_degree`` is set,
    depth appended or alone for the depth modes) and the backgrounds to match."""
    num_cameras = viewmats.shape[0]
    if sh_degree is None:
        colors = colors.expand(num_cameras, -1, -1) if colors.dim() == 2 else colors
    else:
        camera_centers = torch.inverse(viewmats)[:, :3, 3]
        directions = means[None] - camera_centers[:, None]
        coeffs = colors.expand(num_cameras, -1, -1, -1) if colors.dim() == 3 else colors
        colors = torch.clamp_min(_spherical_harmonics(sh_degree, directions, coeffs) + 0.5, 0.0)

    if render_mode in ("RGB+D", "RGB+ED"):
        colors = torch.cat([colors, depths[..., None]], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, torch.zeros_like(backgrounds[:, :1])], dim=-1)
    elif render_mode in ("D", "ED"):
        colors = depths[..., None]
        if backgrounds is not None:
            backgrounds = torch.zeros_like(backgrounds[:, :1])
    return colors, backgrounds


def _check_unsupported(options: Dict[str, object]) -> None:
    harmless = {
        "packed": False,
        "sparse_grad": False,
        "radius_clip": 0.0,
        "camera_model": "pinhole",
        "distributed": False,
    }
    for name, value in options.items():
        if name not in harmless or value != harmless[name]:
            raise NotImplementedError(
                f"The CPU rasterizer does not support {name}={value!r}; run on a CUDA device for it."
            )


def rasterization(**kwargs):
    """gsplat's CUDA rasterizer for CUDA tensors, the PyTorch one otherwise."""
    if kwargs["means"].is_cuda:
        from gsplat.rendering import rasterization as gsplat_rasterization

        return gsplat_rasterization(**kwargs)
    return rasterization_torch(**kwargs)
