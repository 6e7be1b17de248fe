"""ArtifactWorldDataManager: nerfstudio's full-image datamanager plus the method's restorer settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Type

import torch

from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from nerfstudio.utils.rich_utils import CONSOLE


@dataclass
class ArtifactWorldDataManagerConfig(FullImageDatamanagerConfig):
    """Full-image datamanager of the ArtifactWorld method."""

    _target: Type = field(default_factory=lambda: ArtifactWorldDataManager)
    restorer_preset: Literal["full", "tiny"] = "full"
    """Restorer preset of the method's restoration rounds: 'full' (released ArtifactWorld weights on
    LTX-Video 0.9.7) or 'tiny' (random weights, untrained; for CPU demos and CI)."""


class ArtifactWorldDataManager(FullImageDatamanager):
    """Serves whole training images, as splatfacto's datamanager does, on CUDA or CPU."""

    config: ArtifactWorldDataManagerConfig

    def __init__(self, config: ArtifactWorldDataManagerConfig, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        if config.restorer_preset == "tiny":
            CONSOLE.print("[yellow]ArtifactWorld: restorer preset 'tiny' has random weights (untrained); use it for demos and CI only.")

    def _load_images(self, split: Literal["train", "eval"], cache_images_device: Literal["cpu", "gpu"]) -> List[Dict[str, torch.Tensor]]:
        # Caching "on cpu" pins host memory, which needs CUDA; when training on the CPU the images
        # already live on the training device, which is what "gpu" caching does.
        if torch.device(self.device).type == "cpu":
            cache_images_device = "gpu"
        return super()._load_images(split, cache_images_device=cache_images_device)
