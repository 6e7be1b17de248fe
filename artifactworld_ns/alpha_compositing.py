"""Differentiable alpha compositing of sparse (pixel, Gaussian) pairs on any device.

gsplat's compositing is CUDA-only, so this is written by hand: :func:`composite_pairs` blends the pairs
from :func:`artifactworld_ns.pixel_gaussian_pairs.find_pairs` front to back, stopping where the CUDA kernel
stops, and :class:`_CompositePairs` writes out gsplat's CUDA backward in per-pair tensors (autograd's graph
over a few million pairs cost more than the arithmetic). :mod:`artifactworld_ns.torch_rasterizer` projects
the Gaussians and calls both steps.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from artifactworld_ns.pixel_gaussian_pairs import ALPHA_MAX, ALPHA_MIN, TRANSMITTANCE_MIN, PixelGaussianPairs


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
    ``T_i = prod_{j<i} (1 - a_j)``, per pixel over its sorted pairs (``pairs`` comes from
    :func:`~artifactworld_ns.pixel_gaussian_pairs.find_pairs` on the same inputs; its ``alphas`` are
    reused). Transmittance is a segmented sum of ``log(1 - a)`` in float64; a pixel keeps the Gaussians
    before the first one that would leave ``T <= 1e-4`` (``T`` only falls, so that is a prefix). The
    backward pass is written out in :class:`_CompositePairs`. If ``absgrad`` is given, the absolute
    per-pixel gradients w.r.t. ``means2d`` are summed into it during the backward pass.
    """
    num_cameras, channels = means2d.shape[0], colors.shape[-1]
    render_colors, render_alphas = _CompositePairs.apply(
        means2d.reshape(-1, 2),
        conics.reshape(-1, 3),
        colors.reshape(-1, channels),
        opacities.reshape(-1),
        pairs,
        width,
        height,
        num_cameras * height * width,
        absgrad,
    )
    return render_colors.reshape(num_cameras, height, width, channels), render_alphas.reshape(
        num_cameras, height, width, 1
    )


def _exclusive_segment_cumsum(values: Tensor, lengths: Tensor) -> Tensor:
    """Per element, the sum of the elements before it in its segment (consecutive runs of ``lengths``)."""
    if values.numel() == 0:
        return values.clone()
    before = torch.cumsum(values, 0) - values
    first = (torch.cumsum(lengths, 0) - lengths).clamp(max=values.numel() - 1)
    return before - torch.repeat_interleave(before[first], lengths, output_size=values.numel())


def _segment_sum(values: Tensor, lengths: Tensor) -> Tensor:
    """``[rows, segments]``: each row of ``values`` summed over consecutive runs of ``lengths``."""
    if values.shape[1] == 0:
        return values.new_zeros(values.shape[0], lengths.numel())
    return torch.segment_reduce(values, "sum", lengths=lengths.expand(values.shape[0], -1), axis=1)


def _later_segment_sum(values: Tensor, lengths: Tensor) -> Tensor:
    """Per element, the sum of the elements after it in its segment."""
    if values.numel() == 0:
        return values.clone()
    running = torch.cumsum(values, 0)
    last = (torch.cumsum(lengths, 0) - 1).clamp(min=0)
    return torch.repeat_interleave(running[last], lengths, output_size=values.numel()) - running


class _CompositePairs(torch.autograd.Function):
    """The sparse composite with its backward pass written out, as gsplat's CUDA backward has it.

    Per pixel, with weights ``w_i = a_i T_i`` over its counted pairs and ``v_i = c_i . dL/dC + dL/dA``
    (the rendered alpha is ``A = sum_i w_i``): ``dL/dc_i = w_i dL/dC`` and
    ``dL/da_i = T_i v_i - S_i / (1 - a_i)`` with ``S_i = sum_{j>i} w_j v_j`` (``S_i`` in float64).
    Through ``a = o exp(-sigma)``, zero where clamped to 0.999: ``dL/dsigma = -a dL/da`` and
    ``dL/do = a dL/da / o``; ``sigma = (A dx^2 + C dy^2) / 2 + B dx dy`` with ``(dx, dy) = mean2d - pixel``.
    ``absgrad`` sums ``|dL/dmean2d|`` per pair, before the pairs of a Gaussian are added up.
    Per-pair quantities are rows ``[quantity, pair]`` (one contiguous row each), which makes the
    gathers and the sums over pixels and Gaussians several times cheaper than ``[pair, quantity]``.
    """

    @staticmethod
    def forward(
        ctx,
        means2d,
        conics,
        colors,
        opacities,
        pairs: PixelGaussianPairs,
        width: int,
        height: int,
        num_pixels: int,
        absgrad,
    ):
        pixel_ids, gaussian_ids, alphas = pairs.pixel_ids, pairs.gaussian_ids, pairs.alphas.to(colors.dtype)
        pairs_per_pixel = torch.bincount(pixel_ids, minlength=num_pixels)
        log_survival = torch.log1p(-alphas).double()
        log_transmittance = _exclusive_segment_cumsum(log_survival, pairs_per_pixel)
        counted = log_transmittance + log_survival > math.log(TRANSMITTANCE_MIN)
        transmittance = torch.exp(log_transmittance.to(colors.dtype)) * counted  # 0 from the stopping pair on
        weights = alphas * transmittance
        weighted = torch.empty(colors.shape[-1] + 1, pixel_ids.numel(), dtype=colors.dtype, device=colors.device)
        for channel, values in enumerate(colors.t()):
            torch.mul(values[gaussian_ids], weights, out=weighted[channel])
        weighted[-1] = weights
        sums = _segment_sum(weighted, pairs_per_pixel)
        ctx.save_for_backward(
            means2d, conics, colors, opacities, pixel_ids, gaussian_ids, alphas, transmittance, pairs_per_pixel
        )
        ctx.width, ctx.height, ctx.absgrad = width, height, absgrad
        return sums[:-1].t(), sums[-1:].t()

    @staticmethod
    def backward(ctx, grad_colors, grad_alphas):
        means2d, conics, colors, opacities, pixel_ids, gaussian_ids, alphas, transmittance, pairs_per_pixel = (
            ctx.saved_tensors
        )
        channels, dtype = colors.shape[-1], colors.dtype
        weights = alphas * transmittance
        rows = 6 + channels + 2 * (ctx.absgrad is not None)
        per_pair = torch.empty(rows, pixel_ids.numel(), dtype=dtype, device=colors.device)
        # rows: dL/dmean2d (2), dL/dconic (3), dL/dsigma, dL/dcolor (channels), |dL/dmean2d| (2, with absgrad)
        value = grad_alphas[:, 0][pixel_ids]
        for channel in range(channels):
            grad_pixel = grad_colors[:, channel].contiguous()[pixel_ids]
            torch.mul(grad_pixel, weights, out=per_pair[6 + channel])
            value += colors[:, channel].contiguous()[gaussian_ids] * grad_pixel
        later = _later_segment_sum((weights * value).double(), pairs_per_pixel)
        grad_alpha = transmittance * value - (later / (1 - alphas.double())).to(dtype)
        grad_sigma = per_pair[5]
        torch.mul(grad_alpha, alphas * (alphas < ALPHA_MAX), out=grad_sigma)
        grad_sigma.neg_()

        pixels = (
            pixel_ids.int() if pixel_ids.numel() and int(pixel_ids[-1]) < 2**31 else pixel_ids
        )  # sorted: last is largest
        image_row = pixels // ctx.width  # camera * height + y
        dx = means2d[:, 0].contiguous()[gaussian_ids] - (pixels - image_row * ctx.width).to(dtype) - 0.5
        dy = means2d[:, 1].contiguous()[gaussian_ids] - (image_row % ctx.height).to(dtype) - 0.5
        a, b, c = (conics[:, k].contiguous()[gaussian_ids] for k in range(3))
        torch.mul(grad_sigma, a * dx + b * dy, out=per_pair[0])
        torch.mul(grad_sigma, b * dx + c * dy, out=per_pair[1])
        grad_sigma_dx = grad_sigma * dx
        torch.mul(grad_sigma_dx, 0.5 * dx, out=per_pair[2])
        torch.mul(grad_sigma_dx, dy, out=per_pair[3])
        torch.mul(grad_sigma * dy, 0.5 * dy, out=per_pair[4])
        if ctx.absgrad is not None:
            torch.abs(per_pair[:2], out=per_pair[6 + channels :])
        per_gaussian = torch.zeros(rows, means2d.shape[0], dtype=dtype, device=colors.device).index_add_(
            1, gaussian_ids, per_pair
        )
        if ctx.absgrad is not None:
            ctx.absgrad.view(-1, 2).add_(per_gaussian[6 + channels :].t())
        # dL/do = -dL/dsigma / o (a Gaussian with pairs has o >= a >= 1/255)
        grad_opacities = torch.where(per_gaussian[5] != 0, -per_gaussian[5] / opacities.clamp(min=ALPHA_MIN), 0.0)
        return (
            per_gaussian[:2].t(),
            per_gaussian[2:5].t(),
            per_gaussian[6 : 6 + channels].t(),
            grad_opacities,
            None,
            None,
            None,
            None,
            None,
        )
