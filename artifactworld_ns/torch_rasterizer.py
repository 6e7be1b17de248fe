"""A pure-PyTorch Gaussian rasterizer for machines without CUDA.

gsplat's ``rasterization`` needs its CUDA kernels. This module renders the same images on any
device, with autograd providing the backward pass, by reusing gsplat's own PyTorch reference
functions for everything they cover:

- covariances from quaternions and scales (``_quat_scale_to_covar_preci``),
- the EWA projection to the image plane, radii and compensation (``_fully_fused_projection``),
- spherical harmonics (``_spherical_harmonics``).

Written here, because gsplat has no CPU version of it, is the alpha compositing (gsplat's
``_rasterize_to_pixels`` calls a CUDA op; its ``_isect_tiles`` binning visits every Gaussian and
tile in a Python loop, far too slow to train with). It follows the CUDA kernel's rules exactly:
a Gaussian reaches only the pixels of its tile rectangle, pixel centres sit at ``+0.5``, alpha is
clamped to 0.999, pairs with ``sigma < 0`` or ``alpha < 1/255`` are skipped, and a pixel stops at
the first Gaussian that would drop its transmittance to ``1e-4`` or below. Instead of dense tiles
it composites the sparse list of (pixel, Gaussian) pairs that pass those rules (:func:`find_pairs`,
:func:`composite_pairs`), so the work follows the Gaussians' real footprints. Like the kernel, it
stops early: pairs are found front to back in depth-sorted chunks of Gaussians, a pixel is dropped
from later chunks once its transmittance is at the cut-off, and a Gaussian whose rectangle holds no
live pixel is skipped; those pairs would get no weight, so images and gradients are unchanged.

The returned ``meta`` holds what splatfacto's densification strategy reads (``means2d`` with
gradients, ``radii``, ``width``, ``height``, ``n_cameras``, ``gaussian_ids``) and, when ``absgrad``
is set, ``means2d.absgrad`` (per-pixel absolute gradients summed, as gsplat's CUDA backward does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Literal, Optional, Tuple

import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics
from jaxtyping import Float, Int
from torch import Tensor

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]

# The CUDA kernel's constants (gsplat/cuda/csrc/rasterize_to_pixels_fwd.cu).
ALPHA_MAX = 0.999
ALPHA_MIN = 1.0 / 255.0
TRANSMITTANCE_MIN = 1e-4

# Candidate (pixel, Gaussian) pairs examined at once while finding pairs; bounds peak memory and
# sets how often saturated pixels are dropped.
_CHUNK_ELEMENTS = 1 << 18
# A pixel is done once its log-transmittance is below log(1e-4) by more than float64 rounding:
# every later Gaussian would leave T <= 1e-4, so the compositor gives it no weight.
_LOG_TRANSMITTANCE_DONE = math.log(TRANSMITTANCE_MIN) - 1e-9


@torch.no_grad()
def tile_rectangles(
    means2d: Float[Tensor, "cameras gaussians 2"],
    radii: Int[Tensor, "cameras gaussians"],
    tile_size: int,
    tile_width: int,
    tile_height: int,
) -> Tuple[Int[Tensor, "cameras gaussians 2"], Int[Tensor, "cameras gaussians 2"]]:
    """Each Gaussian's tile rectangle ``[min, max)``: its radius rounded out to tiles, as gsplat's
    ``_isect_tiles`` computes it (a Gaussian reaches only the pixels of these tiles)."""
    tile_means = means2d / tile_size
    tile_radii = radii.to(means2d.dtype)[..., None] / tile_size
    limits = torch.tensor([tile_width, tile_height], device=means2d.device)
    tile_mins = torch.minimum(torch.floor(tile_means - tile_radii).long().clamp(min=0), limits)
    tile_maxs = torch.minimum(torch.ceil(tile_means + tile_radii).long().clamp(min=0), limits)
    return tile_mins, tile_maxs


def _summed_area(mask: Tensor) -> Tensor:
    """``[C, H + 1, W + 1]`` summed-area table of a ``[C, H, W]`` mask."""
    table = torch.zeros(mask.shape[0], mask.shape[1] + 1, mask.shape[2] + 1, dtype=torch.int32, device=mask.device)
    table[:, 1:, 1:] = mask.to(torch.int32).cumsum(1).cumsum(2)
    return table


def _live_pixels_in_rectangles(table: Tensor, cameras: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Live pixels inside each inclusive rectangle ``[lo, hi]`` (x, y) of camera ``cameras``."""
    x0, y0, x1, y1 = lo[:, 0], lo[:, 1], hi[:, 0] + 1, hi[:, 1] + 1
    return table[cameras, y1, x1] - table[cameras, y0, x1] - table[cameras, y1, x0] + table[cameras, y0, x0]


@dataclass
class PixelGaussianPairs:
    """Every (pixel, Gaussian) pair the CUDA kernel would blend or test past its skip rules,
    sorted by pixel and then front to back."""

    pixel_ids: Int[Tensor, "pairs"]
    """``camera * height * width + y * width + x``."""
    gaussian_ids: Int[Tensor, "pairs"]
    """``camera * N + gaussian``."""


@torch.no_grad()
def find_pairs(
    means2d: Float[Tensor, "cameras gaussians 2"],
    conics: Float[Tensor, "cameras gaussians 3"],
    opacities: Float[Tensor, "cameras gaussians"],
    radii: Int[Tensor, "cameras gaussians"],
    depths: Float[Tensor, "cameras gaussians"],
    width: int,
    height: int,
    tile_size: int,
) -> PixelGaussianPairs:
    """The pairs with ``sigma >= 0`` and ``alpha >= 1/255`` inside the Gaussian's tile rectangle, up to
    the pixel's saturation.

    All other pairs are skipped by the kernel, so compositing only these gives the same image.
    Candidates are the pixels of the ellipse ``sigma <= log(255 o)`` (where ``alpha >= 1/255`` can
    hold) clipped to the tile rectangle and the image, enumerated front to back in chunks of at most
    ``_CHUNK_ELEMENTS`` candidates; after each chunk the pixels whose transmittance reached the
    cut-off are dropped from the later chunks (their later pairs would get no weight).
    """
    num_cameras, num_gaussians = means2d.shape[:2]
    device = means2d.device
    tile_mins, tile_maxs = tile_rectangles(means2d, radii, tile_size, math.ceil(width / tile_size), math.ceil(height / tile_size))
    flat_means, flat_conics = means2d.reshape(-1, 2), conics.reshape(-1, 3)
    flat_opacities = opacities.reshape(-1)

    # Ellipse half-extents: sigma = d^T Q d / 2 <= t  =>  |dx| <= sqrt(2 t Sigma_xx), Sigma = Q^-1.
    a, b, c = flat_conics.unbind(-1)
    det = (a * c - b * b).clamp(min=1e-12)
    threshold = torch.log((255.0 * flat_opacities).clamp(min=1e-12)) + 1e-3
    extent = torch.sqrt((2 * threshold.clamp(min=0))[:, None] * torch.stack([c / det, a / det], -1))
    lo = torch.maximum(torch.ceil(flat_means - extent - 0.5).long(), tile_mins.reshape(-1, 2) * tile_size)
    hi = torch.minimum(torch.floor(flat_means + extent - 0.5).long(), tile_maxs.reshape(-1, 2) * tile_size - 1)
    hi = torch.minimum(hi, torch.tensor([width - 1, height - 1], device=device))
    span = (hi - lo + 1).clamp(min=0)
    usable = (radii.reshape(-1) > 0) & (threshold > 0)
    counts = span.prod(-1) * usable

    depth_rank = torch.empty(num_cameras, num_gaussians, dtype=torch.long, device=device)
    depth_rank.scatter_(1, torch.argsort(depths, dim=1, stable=True), torch.arange(num_gaussians, device=device).expand(num_cameras, -1).contiguous())
    depth_rank = depth_rank.reshape(-1)

    # Front to back: candidates in depth order (each camera's own), so that a pixel whose
    # transmittance has reached the cut-off can be dropped from every later chunk, and a Gaussian
    # whose rectangle holds no live pixel is never enumerated (the kernel's early termination).
    candidates = torch.nonzero(counts, as_tuple=True)[0]
    candidates = candidates[torch.argsort(depth_rank[candidates], stable=True)]
    log_transmittance = torch.zeros(num_cameras * height * width, dtype=torch.float64, device=device)
    alive = torch.ones(num_cameras * height * width, dtype=torch.bool, device=device)
    live_counts: Optional[Tensor] = None  # summed-area table of ``alive``, rebuilt when pixels die
    pixel_parts, gaussian_parts = [], []
    cumulative = torch.cumsum(counts[candidates], 0)
    begin = 0
    while begin < candidates.numel():
        spent = int(cumulative[begin - 1]) if begin else 0
        end = max(begin + 1, int(torch.searchsorted(cumulative, spent + _CHUNK_ELEMENTS, right=True)))
        ids = candidates[begin:end]
        begin = end
        if live_counts is not None:
            ids = ids[_live_pixels_in_rectangles(live_counts, ids // num_gaussians, lo[ids], hi[ids]) > 0]
            if ids.numel() == 0:
                continue
        gaussian = torch.repeat_interleave(ids, counts[ids])
        local = torch.arange(gaussian.numel(), device=device) - torch.repeat_interleave(torch.cumsum(counts[ids], 0) - counts[ids], counts[ids])
        span_x = span[gaussian, 0]
        x = lo[gaussian, 0] + local % span_x
        y = lo[gaussian, 1] + local // span_x
        pixel = (gaussian // num_gaussians) * (height * width) + y * width + x
        delta_x = flat_means[gaussian, 0] - (x + 0.5)
        delta_y = flat_means[gaussian, 1] - (y + 0.5)
        conic = flat_conics[gaussian]
        sigma = 0.5 * (conic[:, 0] * delta_x**2 + conic[:, 2] * delta_y**2) + conic[:, 1] * delta_x * delta_y
        alpha = torch.clamp_max(flat_opacities[gaussian] * torch.exp(-sigma), ALPHA_MAX)
        keep = (sigma >= 0) & (alpha >= ALPHA_MIN) & alive[pixel]
        pixel_parts.append(pixel[keep])
        gaussian_parts.append(gaussian[keep])
        log_transmittance.index_add_(0, pixel[keep], torch.log1p(-alpha[keep].double()))
        dying = alive & (log_transmittance <= _LOG_TRANSMITTANCE_DONE)
        if bool(dying.any()):
            alive &= ~dying
            live_counts = _summed_area(alive.view(num_cameras, height, width))
    if not pixel_parts:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return PixelGaussianPairs(empty, empty)
    pixel_ids, gaussian_ids = torch.cat(pixel_parts), torch.cat(gaussian_parts)
    order = torch.argsort(pixel_ids * num_gaussians + depth_rank[gaussian_ids])  # keys are unique
    return PixelGaussianPairs(pixel_ids[order], gaussian_ids[order])


def composite_pairs(
    means2d: Float[Tensor, "cameras gaussians 2"],
    conics: Float[Tensor, "cameras gaussians 3"],
    colors: Float[Tensor, "cameras gaussians channels"],
    opacities: Float[Tensor, "cameras gaussians"],
    pairs: PixelGaussianPairs,
    width: int,
    height: int,
    absgrad: Optional[Float[Tensor, "cameras gaussians 2"]] = None,
) -> Tuple[Float[Tensor, "cameras height width channels"], Float[Tensor, "cameras height width 1"]]:
    """Front-to-back alpha compositing (the step gsplat only has in CUDA), differentiable.

    ``C = sum_i c_i a_i T_i`` with ``a_i = min(0.999, o_i exp(-sigma_i))`` and
    ``T_i = prod_{j<i} (1 - a_j)``, per pixel over its sorted pairs. Transmittance is a segmented
    sum of ``log(1 - a)`` in float64; a pixel keeps the Gaussians before the first one that would
    leave ``T <= 1e-4`` (``T`` only falls, so that is a prefix). If ``absgrad`` is given, the
    absolute per-pixel gradients w.r.t. ``means2d`` are summed into it during the backward pass.
    """
    num_cameras = means2d.shape[0]
    channels = colors.shape[-1]
    device = means2d.device
    pixel_ids, gaussian_ids = pairs.pixel_ids, pairs.gaussian_ids
    num_pixels = num_cameras * height * width

    x = (pixel_ids % width).to(means2d.dtype) + 0.5
    y = ((pixel_ids // width) % height).to(means2d.dtype) + 0.5
    delta = means2d.reshape(-1, 2)[gaussian_ids] - torch.stack([x, y], dim=-1)
    if absgrad is not None and delta.requires_grad:
        delta.register_hook(_absgrad_hook(absgrad.view(-1, 2), gaussian_ids))
    conic = conics.reshape(-1, 3)[gaussian_ids]
    sigma = 0.5 * (conic[:, 0] * delta[:, 0] ** 2 + conic[:, 2] * delta[:, 1] ** 2) + conic[:, 1] * delta[:, 0] * delta[:, 1]
    alpha = torch.clamp_max(opacities.reshape(-1)[gaussian_ids] * torch.exp(-sigma), ALPHA_MAX)

    log_survival = torch.log1p(-alpha.double())
    running = torch.cumsum(log_survival, 0)
    is_first = torch.ones_like(pixel_ids, dtype=torch.bool)
    is_first[1:] = pixel_ids[1:] != pixel_ids[:-1]
    first_index = torch.cummax(torch.where(is_first, torch.arange(pixel_ids.numel(), device=device), 0), 0).values
    before_pixel = (running - log_survival)[first_index]
    transmittance_after = torch.exp(running - before_pixel)
    transmittance_before = torch.exp(running - log_survival - before_pixel)
    counted = (transmittance_after > TRANSMITTANCE_MIN).detach()
    weights = (alpha.double() * transmittance_before * counted).to(alpha.dtype)

    flat_colors = colors.reshape(-1, channels)[gaussian_ids]
    render_colors = torch.zeros(num_pixels, channels, device=device, dtype=colors.dtype).index_add(0, pixel_ids, weights[:, None] * flat_colors)
    render_alphas = torch.zeros(num_pixels, 1, device=device, dtype=alpha.dtype).index_add(0, pixel_ids, weights[:, None])
    return render_colors.reshape(num_cameras, height, width, channels), render_alphas.reshape(num_cameras, height, width, 1)


def _absgrad_hook(absgrad: Tensor, gaussian_ids: Tensor):
    """Backward hook on ``delta = mean2d - pixel``: its gradient is d(loss)/d(mean2d) per pixel."""

    def hook(grad: Tensor) -> None:
        absgrad.index_add_(0, gaussian_ids, grad.abs().to(absgrad.dtype))

    return hook


def rasterization_torch(
    means: Float[Tensor, "gaussians 3"],
    quats: Float[Tensor, "gaussians 4"],
    scales: Float[Tensor, "gaussians 3"],
    opacities: Float[Tensor, "gaussians"],
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

    tile_width = math.ceil(width / tile_size)
    tile_height = math.ceil(height / tile_size)
    pairs = find_pairs(means2d.detach(), conics.detach(), opacities.detach(), radii, depths.detach(), width, height, tile_size)
    absgrad_buffer = torch.zeros(means2d.shape, dtype=means2d.dtype, device=means2d.device) if absgrad else None
    render_colors, render_alphas = composite_pairs(means2d, conics, colors, opacities, pairs, width, height, absgrad=absgrad_buffer)
    if absgrad_buffer is not None:
        means2d.absgrad = absgrad_buffer  # filled in by the backward pass, read by the strategy
    if backgrounds is not None:
        render_colors = render_colors + (1.0 - render_alphas) * backgrounds[:, None, None, :]
    if render_mode in ("ED", "RGB+ED"):
        render_colors = torch.cat([render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], dim=-1)

    meta = {
        "camera_ids": None,
        "gaussian_ids": None,
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opacities,
        "tile_width": tile_width,
        "tile_height": tile_height,
        "n_pairs": pairs.pixel_ids.numel(),
        "width": width,
        "height": height,
        "tile_size": tile_size,
        "n_cameras": num_cameras,
    }
    return render_colors, render_alphas, meta


def _check_unsupported(options: Dict[str, object]) -> None:
    harmless = {"packed": False, "sparse_grad": False, "radius_clip": 0.0, "camera_model": "pinhole", "distributed": False}
    for name, value in options.items():
        if name not in harmless or value != harmless[name]:
            raise NotImplementedError(f"The CPU rasterizer does not support {name}={value!r}; run on a CUDA device for it.")


def rasterization(**kwargs):
    """gsplat's CUDA rasterizer for CUDA tensors, the PyTorch one otherwise."""
    if kwargs["means"].is_cuda:
        from gsplat.rendering import rasterization as gsplat_rasterization

        return gsplat_rasterization(**kwargs)
    return rasterization_torch(**kwargs)
