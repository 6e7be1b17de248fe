"""ArtifactWorldDataManager: the sparse training views and the pseudo-view bank, served as whole images.

``next_train`` serves a real training view or, once restoration rounds (run by
:class:`artifactworld_ns.pipeline.ArtifactWorldPipeline`) have filled the bank, with probability
``generated_view_fraction`` a restored novel view with its heatmap.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataparserOutputs
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from artifactworld_ns.bank import PseudoViewBank
from artifactworld_ns.cameras import anchor_image, pinhole_cameras, subset_dataparser_outputs
from artifactworld_ns.errors import PreflightError, SceneLoadError
from artifactworld_ns.resume import load_random_extra_state, random_extra_state
from artifactworld_ns.view_selection import select_train_views

DATA_ERRORS = (OSError, json.JSONDecodeError, KeyError, ValueError, AssertionError, IndexError)
"""What nerfstudio's dataparsers raise on bad scene data (caught only around the dataparser's own call)."""


@dataclass
class ArtifactWorldDataManagerConfig(FullImageDatamanagerConfig):
    """Full-image datamanager of the ArtifactWorld method: sparse views and the pseudo-view bank."""

    _target: Type = field(default_factory=lambda: ArtifactWorldDataManager)
    train_view_ratio: Optional[float] = None
    """Sparse-view protocol: train on this fraction of the views (e.g. 0.05, 0.1, 0.15); the others are eval views."""
    num_train_views: Optional[int] = None
    """Sparse-view protocol: train on exactly this many views (e.g. 3); the others are eval views."""
    view_selection: Literal["even", "farthest"] = "even"
    """How training views are chosen: evenly along the capture order (the paper's protocol, as GSFixer's), or
    farthest-point sampling on the camera positions."""
    generated_view_fraction: float = 0.5
    """Once the bank has views, the share of training steps that draw a generated view instead of a real one."""
    seed: int = 0
    """Seed of the draws between real and generated views."""


class ArtifactWorldDataManager(FullImageDatamanager):
    """Serves whole images: real training views and, after the first round, restored novel views."""

    config: ArtifactWorldDataManagerConfig

    def __init__(self, config: ArtifactWorldDataManagerConfig, *args, **kwargs):
        check_datamanager_options(config)
        check_scene_exists(config)
        self._eval_outputs: Optional[DataparserOutputs] = None
        if self.sparse_protocol(config) and hasattr(config.dataparser, "eval_mode"):
            # The protocol picks training views among all images; the rest become eval views.
            config.dataparser.eval_mode = "all"
        super().__init__(config, *args, **kwargs)
        self.bank = PseudoViewBank()
        """Restored novel views; the pipeline's restoration rounds fill it."""
        self.draws: List[Tuple[int, bool]] = []
        """(step, drew a generated view) for every training step: what ``next_train`` served."""
        self._rng = random.Random(config.seed)
        if self.test_mode == "val":
            # Training: read every image now (nerfstudio would at the first step and the first eval), so a
            # broken image is refused at set-up, before the model is built, not after minutes of training.
            _ = self.cached_train, self.cached_eval

    @property
    def dataparser(self) -> DataParser:
        return self._dataparser

    @dataparser.setter
    def dataparser(self, parser: DataParser) -> None:
        """nerfstudio sets the dataparser in its ``__init__`` and reads the scene through it; what the dataparser
        raises on the scene's files (and only that) becomes a :class:`SceneLoadError` naming the scene."""
        read = parser.get_dataparser_outputs

        def read_scene(*args, **kwargs) -> DataparserOutputs:
            try:
                return read(*args, **kwargs)
            except DATA_ERRORS as error:
                detail = str(error).splitlines()[0] if str(error) else "no details"
                raise SceneLoadError(
                    f"Loading the scene {self.config.data} failed ({type(error).__name__}: {detail}); check its files and --data."
                ) from None

        parser.get_dataparser_outputs = read_scene
        self._dataparser = parser

    # ------------------------------------------------------------------ resuming (see artifactworld_ns/resume.py)

    def get_extra_state(self) -> dict:
        """Checkpointed with the pipeline: the training-view order and every generator the next steps draw from."""
        return random_extra_state(self.train_unseen_cameras, self._rng, getattr(self, "random_generator", None))

    def set_extra_state(self, state: dict) -> None:
        if state:
            self.train_unseen_cameras = load_random_extra_state(
                state, self._rng, getattr(self, "random_generator", None)
            )

    # ------------------------------------------------------------------ sparse-view protocol

    @staticmethod
    def sparse_protocol(config: ArtifactWorldDataManagerConfig) -> bool:
        return config.train_view_ratio is not None or config.num_train_views is not None

    def create_train_dataset(self):
        outputs = self.train_dataparser_outputs
        if self.sparse_protocol(self.config):
            positions = outputs.cameras.camera_to_worlds[:, :3, 3]
            train_indices, eval_indices = select_train_views(
                positions,
                ratio=self.config.train_view_ratio,
                count=self.config.num_train_views,
                method=self.config.view_selection,
            )
            CONSOLE.print(
                f"ArtifactWorld sparse-view protocol: training on {len(train_indices)} of {len(positions)} views "
                f"({self.config.view_selection}: {train_indices.tolist()}); the other {len(eval_indices)} are eval views."
            )
            self._eval_outputs = subset_dataparser_outputs(outputs, eval_indices.tolist())
            self.train_dataparser_outputs = subset_dataparser_outputs(outputs, train_indices.tolist())
        return self.dataset_type(
            dataparser_outputs=self.train_dataparser_outputs, scale_factor=self.config.camera_res_scale_factor
        )

    def create_eval_dataset(self):
        if self._eval_outputs is None:
            return super().create_eval_dataset()
        return self.dataset_type(
            dataparser_outputs=self._eval_outputs, scale_factor=self.config.camera_res_scale_factor
        )

    def _load_images(
        self, split: Literal["train", "eval"], cache_images_device: Literal["cpu", "gpu"]
    ) -> List[Dict[str, torch.Tensor]]:
        # Caching "on cpu" pins host memory, which needs CUDA; when training on the CPU the images
        # already live on the training device, which is what "gpu" caching does.
        if torch.device(self.device).type == "cpu":
            cache_images_device = "gpu"
        try:
            return super()._load_images(split, cache_images_device=cache_images_device)
        except OSError as error:  # PIL's UnidentifiedImageError, truncated files, unreadable files
            raise SceneLoadError(
                f"An image of the {split} views cannot be read ({error}); replace the file or remove its frame from transforms.json."
            ) from None

    # ------------------------------------------------------------------ serving views

    def next_train(self, step: int) -> Tuple[Cameras, Dict]:
        """A real training view, or with probability ``generated_view_fraction`` (once the bank
        has views) a restored one; ``data["is_generated"]`` says which."""
        generated = len(self.bank) > 0 and self._rng.random() < self.config.generated_view_fraction
        if generated:
            camera, data = self._bank_view(self._rng.randrange(len(self.bank)))
        else:
            camera, data = super().next_train(step)
            data["is_generated"] = False
        self.draws.append((step, generated))
        return camera, data

    def _bank_view(self, index: int) -> Tuple[Cameras, Dict]:
        view = self.bank.camera_for(index)
        camera = pinhole_cameras(view["camera_to_world"][None], view).to(self.device)
        data = {
            "image": self.bank.images[index].to(self.device),
            "heatmap": (self.bank.heatmaps[index].float() / 255.0).to(self.device),
            "is_generated": True,
        }
        return camera, data

    def training_image(self, index: int, size: torch.Size) -> Float[Tensor, "height width 3"]:
        """Training image ``index`` at ``size``, as a DBA anchor of a restoration round."""
        return anchor_image(self.cached_train[index]["image"].cpu(), size)


def check_datamanager_options(config: ArtifactWorldDataManagerConfig) -> None:
    """One sentence per bad datamanager option (also run by :func:`artifactworld_ns.preflight.preflight`); raises :class:`PreflightError`."""
    if not 0.0 <= config.generated_view_fraction <= 1.0:
        raise PreflightError(
            f"--pipeline.datamanager.generated-view-fraction {config.generated_view_fraction} is not a fraction; use a value from 0 to 1."
        )


def check_scene_exists(config: ArtifactWorldDataManagerConfig) -> None:
    """The scene folder must exist: a run's config.yml may name it relative to another working folder
    (runs trained before the data path was saved absolute), which ns-eval, ns-viewer and aw-render read
    relative to their own."""
    data = config.data if config.data is not None else getattr(config.dataparser, "data", None)
    if data is None or Path(data).exists():
        return
    if Path(data).is_absolute():
        raise PreflightError(f"The scene {data} named by the run's config does not exist; put the scene back there.")
    raise PreflightError(
        f"The scene {data} does not exist as seen from {Path.cwd()}; the run's config.yml names it relative to "
        "the folder it was trained in, so run the command from that folder."
    )
