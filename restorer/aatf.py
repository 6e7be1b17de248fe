"""Stage 2: Artifact-Aware Triplet Fusion (paper Sec. 4.3, Phase 2, Eq. 2, Table 5; LoRA2).

Sequence ``[z_ref, z_target_s, z~hm(s)]`` with per-token timesteps ``[0, s, 0]``.
The heatmap segment follows the piecewise heatmap decay of Eq. 2::

    z~hm(s) = alpha(s) z_full + (1 - alpha(s)) z_hm     s in [tau2, 1]
              z_hm                                      s in [tau1, tau2)
              beta(s) z_hm + (1 - beta(s)) z_null       s in [0, tau1)

written in general as ``w_full z_full + w_null z_null + w_hm z_hm``. Weights are given in the
official column order ``(w_full, w_null, w_heatmap)`` (``noisemap_blend_weights`` in the release's
``configs/stage2_infer.yaml``), so a user can paste the official rows. Two forms:
:class:`BlendTable`, one row per Euler step, and :class:`PiecewiseDecay` (``tau1, tau2, alpha,
beta``; alpha and beta default to linear ramps). The default is the official table
(:data:`OFFICIAL_BLEND_TABLE`); :func:`official_blend_table` scales its shape to other step counts.

The heatmap latent and both auxiliary latents are multiplied by :data:`NOISEMAP_FEATURE_SCALE`
before blending, as in the official training and inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from .dba import anchor_frame_mask, black_tail
from .errors import RestorerInputError
from .latents import quantize_8bit
from .prompts import PromptEmbedding
from .sampler import TARGET, ProgressCallback, euler_sample, execution_device, pack_latents, unpack_latents

STAGE2_ADAPTER = "stage2"
STAGE2_ROLES = ("reference", TARGET, "heatmap")
"""Segment order of stage 2: ``[z_ref, z_target, z~hm(s)]`` -> timesteps ``[0, s, 0]``."""

NOISEMAP_FEATURE_SCALE = 0.05
"""The official ``noisemap_feature_scale``: heatmap latents and both auxiliary latents are multiplied by it
before they enter stage 2, in training and in inference (``configs/stage2_infer.yaml``)."""

BlendWeights = tuple[float, float, float]
"""``(w_full, w_null, w_heatmap)`` for one sampling step: the official column order."""


@dataclass(frozen=True)
class BlendTable:
    """Explicit per-step blend weights ``(w_full, w_null, w_heatmap)``, one row per Euler step."""

    rows: tuple[BlendWeights, ...]

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != 3 or min(row) < 0 or abs(sum(row) - 1.0) > 1e-6:
                raise RestorerInputError(
                    f"Blend table row {i} must be three non-negative weights (w_full, w_null, w_heatmap) summing to 1, got {row}."
                )

    def weights(self, step: int, num_steps: int, sigma: float) -> BlendWeights:
        if len(self.rows) != num_steps:
            raise RestorerInputError(
                f"The blend table has {len(self.rows)} rows but the sampler runs {num_steps} steps."
            )
        return self.rows[step]


@dataclass(frozen=True)
class PiecewiseDecay:
    """Eq. 2 in its threshold form; ``alpha``/``beta`` map sigma to ``[0, 1]``.

    Defaults: ``alpha(s) = (s - tau2) / (1 - tau2)`` (1 at pure noise, 0 at ``tau2``) and
    ``beta(s) = s / tau1`` (1 at ``tau1``, 0 at the clean end).
    """

    tau1: float
    tau2: float
    alpha: Callable[[float], float] | None = None
    beta: Callable[[float], float] | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.tau1 < self.tau2 < 1.0:
            raise RestorerInputError(
                f"Heatmap decay thresholds need 0 < tau1 < tau2 < 1, got tau1={self.tau1}, tau2={self.tau2}."
            )

    def weights(self, step: int, num_steps: int, sigma: float) -> BlendWeights:
        if sigma >= self.tau2:
            a = self.alpha(sigma) if self.alpha else (sigma - self.tau2) / (1.0 - self.tau2)
            a = min(max(a, 0.0), 1.0)
            return (a, 0.0, 1.0 - a)
        if sigma >= self.tau1:
            return (0.0, 0.0, 1.0)
        b = self.beta(sigma) if self.beta else sigma / self.tau1
        b = min(max(b, 0.0), 1.0)
        return (0.0, 1.0 - b, b)


HeatmapSchedule = BlendTable | PiecewiseDecay

OFFICIAL_BLEND_TABLE = BlendTable(
    rows=(
        (0.8, 0.0, 0.2),  # mostly z_full
        (0.0, 0.0, 1.0),  # 3 steps of the predicted heatmap
        (0.0, 0.0, 1.0),
        (0.0, 0.0, 1.0),
        (0.0, 0.25, 0.75),  # 4 steps of linear decay towards z_null, reaching it on the last step
        (0.0, 0.5, 0.5),
        (0.0, 0.75, 0.25),
        (0.0, 1.0, 0.0),
    )
)
"""The release's ``noisemap_blend_weights`` (``configs/stage2_infer.yaml``), columns (z_full, z_null, heatmap)."""

OFFICIAL_FIRST_ROW: BlendWeights = OFFICIAL_BLEND_TABLE.rows[0]


def official_blend_table(num_steps: int) -> BlendTable:
    """The official table's shape for ``num_steps``: ``official_blend_table(8)`` is :data:`OFFICIAL_BLEND_TABLE`.

    ``round(N/8)`` (at least 1) steps of the first row (0.8 ``z_full`` + 0.2 heatmap), ``round(3N/8)``
    steps of the heatmap, the rest a linear decay that reaches ``z_null`` on the last step.
    """
    if num_steps < 1:
        raise RestorerInputError(f"The sampler needs at least 1 step, got {num_steps}.")
    if num_steps == 8:
        return OFFICIAL_BLEND_TABLE
    first_steps = max(1, round(num_steps / 8))
    heatmap_steps = min(round(3 * num_steps / 8), num_steps - first_steps)
    decay_steps = num_steps - first_steps - heatmap_steps
    rows = [OFFICIAL_FIRST_ROW] * first_steps + [(0.0, 0.0, 1.0)] * heatmap_steps
    rows += [(0.0, i / decay_steps, 1.0 - i / decay_steps) for i in range(1, decay_steps + 1)]
    return BlendTable(tuple(rows))


def schedule_table(schedule: HeatmapSchedule, sigmas: Tensor) -> list[BlendWeights]:
    """The weights each step uses (``sigmas`` has ``steps + 1`` entries)."""
    num_steps = len(sigmas) - 1
    return [schedule.weights(i, num_steps, float(sigmas[i])) for i in range(num_steps)]


def blend_heatmap_latent(weights: BlendWeights, z_full: Tensor, z_null: Tensor, z_hm: Tensor) -> Tensor:
    """``z~hm = w_full z_full + w_null z_null + w_hm z_hm`` (Eq. 2), summed in the official order."""
    w_full, w_null, w_hm = weights
    return w_full * z_full + w_null * z_null + w_hm * z_hm


def raise_heatmap_by_opacity(
    heatmap: Float[Tensor, "frames height width *channels"], opacity: Float[Tensor, "frames height width"]
) -> Float[Tensor, "frames height width *channels"]:
    """Opacity-aware heatmap: where the render is transparent it is fully broken, ``max(h, 1 - opacity)``."""
    opacity = opacity.to(heatmap)
    if heatmap.ndim == opacity.ndim + 1:
        opacity = opacity[..., None]
    return torch.maximum(heatmap, 1.0 - opacity)


def hand_off_heatmap(
    heatmap: Float[Tensor, "frames height width 3"], opacity: Float[Tensor, "frames height width"] | None = None
) -> Float[Tensor, "frames height width 3"]:
    """Stage 1's decoded heatmap as stage 2 receives it (official scripts: PIL frames, last 9 black).

    8-bit levels, then (ours, after ArtiFixer) raised to ``1 - opacity`` on the artifact frames where
    the render is transparent, then the last 9 frames (anchor B) set to black.
    """
    heatmap = quantize_8bit(heatmap)
    if opacity is not None:
        heatmap = raise_outside_anchors(heatmap, opacity)
    return black_tail(heatmap)


def raise_outside_anchors(heatmap: Tensor, opacity: Tensor) -> Tensor:
    """``max(h, 1 - opacity)`` on the frames between the anchors; opacity covers the first ``len(opacity)`` frames."""
    full = torch.ones(heatmap.shape[:3])
    full[: opacity.shape[0]] = opacity[: heatmap.shape[0]]
    full[anchor_frame_mask(heatmap.shape[0])] = 1.0
    return raise_heatmap_by_opacity(heatmap, full)


def sample_restored_latent(
    transformer: torch.nn.Module,
    prompt: PromptEmbedding,
    z_ref: Float[Tensor, "1 channels frames height width"],
    z_hm: Tensor,
    z_full: Tensor,
    z_null: Tensor,
    schedule: HeatmapSchedule,
    noise: Float[Tensor, "1 tokens channels"],
    sigmas: Tensor,
    segment_coords: Tensor,
    generator: torch.Generator,
    progress: ProgressCallback | None = None,
    feature_scale: float = NOISEMAP_FEATURE_SCALE,
) -> Float[Tensor, "1 channels frames height width"]:
    """Sample the restored target latent with AATF (the stage-2 adapter must be active).

    ``z_hm``, ``z_full`` and ``z_null`` are unscaled normalized latents; each is multiplied by
    ``feature_scale`` before the per-step blend, as the official pipeline does. All four are moved once
    to where the transformer computes (the auxiliary latents come from a CPU cache).
    """
    _, _, frames, height, width = z_ref.shape
    device = execution_device(transformer)
    ref_tokens = pack_latents(z_ref.to(device, torch.float32))
    hm_tokens, full_tokens, null_tokens = (
        pack_latents(z.to(device, torch.float32)) * feature_scale for z in (z_hm, z_full, z_null)
    )
    table = schedule_table(schedule, sigmas)

    def context(step: int, sigma: float) -> dict[str, Tensor]:
        return {
            "reference": ref_tokens,
            "heatmap": blend_heatmap_latent(table[step], full_tokens, null_tokens, hm_tokens),
        }

    tokens = euler_sample(
        transformer,
        prompt,
        roles=STAGE2_ROLES,
        context=context,
        noise=noise,
        sigmas=sigmas,
        segment_coords=segment_coords,
        generator=generator,
        stage="stage 2 (AATF restore)",
        progress=progress,
    )
    return unpack_latents(tokens.cpu(), frames, height, width)
