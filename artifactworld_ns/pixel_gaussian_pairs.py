"""The (pixel, Gaussian) pairs that gsplat's CUDA compositing kernel would blend, found on any device.

gsplat's compositing is CUDA-only (and its ``_isect_tiles`` binning is a Python loop), so this is written by
hand, following the kernel's rules: a Gaussian reaches only its tile rectangle (:func:`tile_rectangles`),
pixel centres sit at ``+0.5``, alpha is clamped to 0.999, pairs with ``sigma < 0`` or ``alpha < 1/255`` are
skipped, and a pixel stops once its transmittance would reach ``1e-4``. :func:`find_pairs` enumerates each
Gaussian's ``alpha >= 1/255`` ellipse row by row, front to back in depth-sorted chunks, and drops pixels
that have reached the cut-off from later chunks (their pairs would get no weight); the pairs then go to
:func:`artifactworld_ns.alpha_compositing.composite_pairs`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

# The CUDA kernel's constants (gsplat/cuda/csrc/rasterize_to_pixels_fwd.cu).
ALPHA_MAX = 0.999
ALPHA_MIN = 1.0 / 255.0
TRANSMITTANCE_MIN = 1e-4

# Candidate (pixel, Gaussian) pairs examined at once while finding pairs; bounds peak memory and
# sets how often saturated pixels are dropped.
_CHUNK_ELEMENTS = 1 << 18
# A pixel is done once its log-transmittance, summed in float32 while finding pairs, is below
# log(1e-4) by more than that sum's rounding: every later Gaussian would leave T <= 1e-4, so the
# compositor (float64) gives it no weight.
_LOG_TRANSMITTANCE_DONE = math.log(TRANSMITTANCE_MIN) - 1e-3
# Slack on the ellipse ``sigma <= log(255 o)`` that bounds the candidates, so that rounding never
# leaves out a pixel with ``alpha >= 1/255``.
_THRESHOLD_SLACK = 1e-3


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


@dataclass
class PixelGaussianPairs:
    """Every (pixel, Gaussian) pair the CUDA kernel would blend or test past its skip rules,
    sorted by pixel and then front to back."""

    pixel_ids: Int[Tensor, " pairs"]
    """``camera * height * width + y * width + x``."""
    gaussian_ids: Int[Tensor, " pairs"]
    """``camera * N + gaussian``."""
    alphas: Float[Tensor, " pairs"]
    """``min(0.999, o exp(-sigma))`` of each pair (no gradient;
    :func:`~artifactworld_ns.alpha_compositing.composite_pairs` adds it)."""


def _ellipse_rows(
    means2d: Tensor, conics: Tensor, opacities: Tensor, radii: Tensor, width: int, height: int, tile_size: int
):
    """Per Gaussian and image row, the pixels ``[x_lo, x_hi]`` where ``alpha >= 1/255`` can hold:
    the ellipse ``sigma <= log(255 o)`` cut to the Gaussian's tile rectangle and the image.

    Returns ``(gaussian, y, x_lo, length)`` per non-empty row, with the ids ``camera * N + gaussian``,
    grouped by Gaussian in the order of the flat ids.
    """
    device = means2d.device
    tile_mins, tile_maxs = tile_rectangles(
        means2d, radii, tile_size, math.ceil(width / tile_size), math.ceil(height / tile_size)
    )
    tile_mins, tile_maxs = tile_mins.reshape(-1, 2) * tile_size, tile_maxs.reshape(-1, 2) * tile_size - 1
    means, (a, b, c) = means2d.reshape(-1, 2).double(), conics.reshape(-1, 3).double().unbind(-1)
    threshold = torch.log((255.0 * opacities.reshape(-1).double()).clamp(min=1e-12)) + _THRESHOLD_SLACK
    det = (a * c - b * b).clamp(min=1e-12)
    # sigma = d^T Q d / 2 <= t: |dy| <= sqrt(2 t a / det), and per row dx in centre +- half.
    extent_y = torch.sqrt(2 * threshold.clamp(min=0) * a / det)
    y_lo = torch.maximum(torch.ceil(means[:, 1] - extent_y - 0.5).long(), tile_mins[:, 1])
    y_hi = torch.minimum(torch.floor(means[:, 1] + extent_y - 0.5).long(), tile_maxs[:, 1]).clamp(max=height - 1)
    rows_per = (y_hi - y_lo + 1).clamp(min=0) * (
        (radii.reshape(-1) > 0) & (threshold > 0) & (tile_maxs[:, 0] >= tile_mins[:, 0])
    )
    gaussian = torch.repeat_interleave(torch.arange(rows_per.numel(), device=device), rows_per)
    y = torch.arange(gaussian.numel(), device=device) - torch.repeat_interleave(
        torch.cumsum(rows_per, 0) - rows_per - y_lo, rows_per
    )
    a, b = a[gaussian], b[gaussian]
    dy = means[gaussian, 1] - (y + 0.5)
    half = torch.sqrt((2 * a * threshold[gaussian] - det[gaussian] * dy * dy).clamp(min=0)) / a
    x_centre = means[gaussian, 0] - 0.5 + b * dy / a  # x = mean_x - 0.5 - dx, dx centred on -b dy / a
    x_lo = torch.maximum(torch.ceil(x_centre - half).long(), tile_mins[gaussian, 0]).clamp(min=0)
    x_hi = torch.minimum(torch.floor(x_centre + half).long(), tile_maxs[gaussian, 0]).clamp(max=width - 1)
    length = (x_hi - x_lo + 1).clamp(min=0)
    keep = length > 0
    return gaussian[keep], y[keep], x_lo[keep], length[keep]


@dataclass
class _Rows:
    """The candidate rows (:func:`_ellipse_rows`) front to back, with what ``sigma`` and ``alpha`` need per row:
    ``sigma = dx (a dx / 2 + b dy) + c dy^2 / 2`` with ``dx = mean_x - x - 0.5``."""

    gaussian: Tensor
    """``camera * N + gaussian``."""
    image_row: Tensor
    """``camera * height + y``."""
    row_start: Tensor
    """Pixel id of ``(camera, y, 0)``."""
    x_lo: Tensor
    length: Tensor
    mean_x: Tensor
    """``mean_x - 0.5``."""
    half_a: Tensor
    b_dy: Tensor
    half_c_dy2: Tensor
    opacity: Tensor


def _rows_front_to_back(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    radii: Tensor,
    depths: Tensor,
    width: int,
    height: int,
    tile_size: int,
) -> _Rows:
    """The ellipse rows in depth order (each camera's own, stable so a Gaussian's rows stay together), so
    that a pixel whose transmittance has reached the cut-off can be dropped from every later chunk (the
    kernel's early termination)."""
    num_cameras, num_gaussians = means2d.shape[:2]
    device, dtype = means2d.device, means2d.dtype
    gaussian, y, x_lo, length = _ellipse_rows(means2d, conics, opacities, radii, width, height, tile_size)
    depth_rank = torch.empty(num_cameras, num_gaussians, dtype=torch.long, device=device)
    depth_rank.scatter_(
        1,
        torch.argsort(depths, dim=1, stable=True),
        torch.arange(num_gaussians, device=device).expand(num_cameras, -1).contiguous(),
    )
    order = torch.argsort(depth_rank.reshape(-1)[gaussian], stable=True)
    gaussian, y, x_lo, length = gaussian[order], y[order], x_lo[order], length[order]
    image_row = (gaussian // num_gaussians) * height + y
    flat_means, flat_conics = means2d.reshape(-1, 2)[gaussian], conics.reshape(-1, 3)[gaussian]
    dy = flat_means[:, 1] - (y.to(dtype) + 0.5)
    return _Rows(
        gaussian=gaussian,
        image_row=image_row,
        row_start=image_row * width,
        x_lo=x_lo,
        length=length,
        mean_x=flat_means[:, 0] - 0.5,
        half_a=0.5 * flat_conics[:, 0],
        b_dy=flat_conics[:, 1] * dy,
        half_c_dy2=0.5 * flat_conics[:, 2] * dy * dy,
        opacity=opacities.reshape(-1)[gaussian],
    )


def _candidates(rows: _Rows, chunk: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every pixel of the rows ``chunk``: ``(row, pixel id, alpha, passes the kernel's skip rules)``."""
    lengths = rows.length[chunk]
    total = int(lengths.sum())
    row = torch.repeat_interleave(chunk, lengths, output_size=total)
    x = torch.arange(total, device=chunk.device) + torch.repeat_interleave(
        rows.x_lo[chunk] - (torch.cumsum(lengths, 0) - lengths), lengths, output_size=total
    )
    delta_x = rows.mean_x[row] - x.to(rows.mean_x.dtype)
    sigma = delta_x * (rows.half_a[row] * delta_x + rows.b_dy[row]) + rows.half_c_dy2[row]
    alpha = torch.clamp_max(rows.opacity[row] * torch.exp(-sigma), ALPHA_MAX)
    return row, rows.row_start[row] + x, alpha, (sigma >= 0) & (alpha >= ALPHA_MIN)


class _LivePixels:
    """Which pixels can still take weight: float32 log-transmittance summed over the pairs found so far."""

    def __init__(self, num_rows: int, width: int, device: torch.device) -> None:
        self.log_transmittance = torch.zeros(num_rows * width, dtype=torch.float32, device=device)
        self.alive = torch.ones(num_rows * width, dtype=torch.bool, device=device)
        self.live_left: Optional[Tensor] = None
        """``[image row, x]``: live pixels left of ``x``; None until a pixel dies, rebuilt when pixels die."""
        self.num_rows, self.width = num_rows, width

    def rows_with_live_pixels(self, rows: _Rows, chunk: Tensor) -> Tensor:
        """The rows of ``chunk`` that hold at least one live pixel (a summed-area lookup per row)."""
        if self.live_left is None:
            return chunk
        image_rows, first = rows.image_row[chunk], rows.x_lo[chunk]
        return chunk[self.live_left[image_rows, first + rows.length[chunk]] > self.live_left[image_rows, first]]

    def keep(self, pixel: Tensor, passes: Tensor) -> Tensor:
        """Indices of the candidates that pass the skip rules on a live pixel."""
        return torch.nonzero(passes if self.live_left is None else passes & self.alive[pixel], as_tuple=True)[0]

    def add(self, pixel: Tensor, alpha: Tensor) -> None:
        """Blend the found pairs' ``log(1 - alpha)`` in; pixels at the cut-off die."""
        if _LOG_TRANSMITTANCE_DONE > -math.inf:
            self.log_transmittance.index_add_(0, pixel, torch.log1p(-alpha.float()))
            dying = self.alive & (self.log_transmittance <= _LOG_TRANSMITTANCE_DONE)
            if bool(dying.any()):
                self.alive &= ~dying
                self.live_left = torch.zeros(self.num_rows, self.width + 1, dtype=torch.int32, device=self.alive.device)
                self.live_left[:, 1:] = torch.cumsum(self.alive.view(-1, self.width), 1, dtype=torch.int32)


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
    hold), row by row, clipped to the tile rectangle and the image, enumerated front to back in
    chunks of at most ``_CHUNK_ELEMENTS`` candidates; after each chunk the pixels whose transmittance
    reached the cut-off are dropped from the later chunks (their later pairs would get no weight).
    Found front to back, the pairs need only a stable sort by pixel to be in compositing order.
    """
    num_cameras = means2d.shape[0]
    num_pixels = num_cameras * height * width
    device, dtype = means2d.device, means2d.dtype
    rows = _rows_front_to_back(means2d, conics, opacities, radii, depths, width, height, tile_size)
    live = _LivePixels(num_cameras * height, width, device)
    pixel_parts, gaussian_parts, alpha_parts = [], [], []
    cumulative = torch.cumsum(rows.length, 0)
    begin = 0
    while begin < rows.length.numel():
        spent = int(cumulative[begin - 1]) if begin else 0
        end = max(begin + 1, int(torch.searchsorted(cumulative, spent + _CHUNK_ELEMENTS, right=True)))
        chunk = live.rows_with_live_pixels(rows, torch.arange(begin, end, device=device))
        begin = end
        if chunk.numel() == 0:
            continue
        row, pixel, alpha, passes = _candidates(rows, chunk)
        keep = live.keep(pixel, passes)
        pixel, alpha = pixel[keep], alpha[keep]
        pixel_parts.append(pixel)
        gaussian_parts.append(rows.gaussian[row[keep]])
        alpha_parts.append(alpha)
        live.add(pixel, alpha)
    if not pixel_parts:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return PixelGaussianPairs(empty, empty, torch.zeros(0, dtype=dtype, device=device))
    pixel_ids = torch.cat(pixel_parts)
    pixel_ids, order = torch.sort(pixel_ids.int() if num_pixels < 2**31 else pixel_ids, stable=True)
    return PixelGaussianPairs(pixel_ids.long(), torch.cat(gaussian_parts)[order], torch.cat(alpha_parts)[order])
