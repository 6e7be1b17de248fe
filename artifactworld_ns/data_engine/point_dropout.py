"""Dilation's training run (paper Sec. 3.2, "20 % point dropout"): splatfacto with random point dropout.

The paper names the rate only; how it is applied is our choice, in two places, both at ``point_dropout``:

- the initial points: that share of the seed points (the capture's sparse point cloud) is dropped before
  the Gaussians are made, so the survivors start larger (splatfacto sizes a Gaussian by the distance to
  its nearest points) and fewer primitives must cover the scene (Dilation's cause: too few primitives);
- every training step: each Gaussian is left out of the render with that probability (its opacity is
  zeroed for the step; its parameters stay and densification still sees it), so the survivors keep
  growing to cover the holes, however densification refills the scene.

The trained model, rendered with every point (eval mode drops nothing), shows over-expanded, amorphous
blobs. ``point_dropout = 0`` is plain splatfacto.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Type

import torch
from jaxtyping import Float
from torch import Tensor

from artifactworld_ns.model import ArtifactWorldModel, ArtifactWorldModelConfig

PAPER_POINT_DROPOUT = 0.2
"""The paper's dropout rate for Dilation (Sec. 3.2)."""


@dataclass
class PointDropoutModelConfig(ArtifactWorldModelConfig):
    """Splatfacto (device-following rasterizer) whose training renders drop a random share of the Gaussians."""

    _target: Type = field(default_factory=lambda: PointDropoutModel)
    point_dropout: float = PAPER_POINT_DROPOUT
    """Probability that a Gaussian is left out of one training step's render (0 = plain splatfacto)."""


class PointDropoutModel(ArtifactWorldModel):
    """:class:`ArtifactWorldModel` with per-step point dropout while training."""

    config: PointDropoutModelConfig

    def populate_modules(self):
        if self.seed_points is not None and self.config.point_dropout > 0 and self.seed_points[0].shape[0] > 1:
            means, colors = self.seed_points
            keep = torch.rand(means.shape[0]) >= self.config.point_dropout  # the run's seeded global generator
            keep[0] = True  # never drop them all
            self.seed_points = (means[keep], colors[keep] if colors.shape[0] == means.shape[0] else colors)
        super().populate_modules()

    def render_opacities(self, params: Dict[str, Tensor]) -> Float[Tensor, " gaussians"]:
        opacities = super().render_opacities(params)
        if not self.training or self.config.point_dropout <= 0:
            return opacities
        keep = torch.rand(opacities.shape, device=opacities.device) >= self.config.point_dropout
        return opacities * keep
