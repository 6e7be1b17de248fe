"""Dilation's training run (paper Sec. 3.2, "20 % point dropout"): splatfacto with random point dropout.

At every training step each Gaussian is left out of the render with probability ``point_dropout`` (its
opacity is zeroed for that step; its parameters stay and densification still sees it). The Gaussians
that remain must cover the holes the dropped ones leave, so they grow: the trained model, rendered with
every point, shows over-expanded, amorphous blobs (Dilation). Rendering (eval mode) drops nothing.
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

    def render_opacities(self, params: Dict[str, Tensor]) -> Float[Tensor, " gaussians"]:
        opacities = super().render_opacities(params)
        if not self.training or self.config.point_dropout <= 0:
            return opacities
        keep = torch.rand(opacities.shape, device=opacities.device) >= self.config.point_dropout
        return opacities * keep
