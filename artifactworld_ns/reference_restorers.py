"""Reference restorers for research and tests: the bounds a real restorer sits between.

Both have the restorer's ``restore(frames, first_anchor, last_anchor, opacity=None)`` interface,
so the closed loop's round uses them exactly as it uses :class:`artifactworld_ns.restorer.ArtifactRestorer`:

* :class:`IdentityRestorer` -- returns the rendered frames unchanged (the lower bound: a round then
  only re-feeds the model its own renders);
* :class:`OracleRestorer` -- returns the ground truth rendered at the clip's cameras (the upper
  bound: a perfect restorer). It needs a scene that can render its ground truth from any camera:
  ``aw-demo-scene`` saves its Gaussians as ``ground_truth_gaussians.pt`` next to the scene.

Neither is ever a default; both say what they are wherever they print.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import torch
from jaxtyping import Float
from torch import Tensor

from artifactworld_ns.demo_scene import GAUSSIAN_KEYS, render_gaussians
from artifactworld_ns.restorer import ArtifactWorldError
from artifactworld_ns.restorer.pipeline import RestorationResult

GROUND_TRUTH_FILE = "ground_truth_gaussians.pt"
"""Written by ``aw-demo-scene`` next to ``transforms.json``."""
IDENTITY_LABEL = "[identity reference restorer: returns the renders unchanged, a lower bound]"
ORACLE_LABEL = "[oracle reference restorer: returns the ground truth, an upper bound]"


class ReferenceRestorerError(ArtifactWorldError, ValueError):
    """A reference restorer that cannot run on this scene; the message is one sentence."""


class IdentityRestorer:
    """Returns the renders unchanged, with an all-zero heatmap."""

    label = IDENTITY_LABEL
    needs_cameras = False

    def restore(
        self, frames: Tensor, first_anchor: Tensor, last_anchor: Tensor, opacity: Optional[Tensor] = None, cameras=None
    ) -> RestorationResult:
        frames = frames.float().clamp(0, 1)
        return RestorationResult(frames=frames.clone(), heatmap=torch.zeros(frames.shape[:3]))

    def to(self, device) -> "IdentityRestorer":
        return self

    def offload(self) -> "IdentityRestorer":
        return self


@dataclass
class SceneToDataparser:
    """nerfstudio's dataparser transform: ``c2w_ns = [s (T_R R), s (T_R t + T_t)]`` for an original ``[R | t]``."""

    transform: Float[Tensor, "3 4"]
    scale: float

    def to_original(self, camera_to_worlds: Float[Tensor, "n 3 4"]) -> Float[Tensor, "n 4 4"]:
        """Camera-to-world poses back in the scene's own (``transforms.json``) coordinates, 4x4 OpenGL."""
        rotation, translation = self.transform[:, :3].double(), self.transform[:, 3].double()
        poses = camera_to_worlds[:, :3, :4].double()
        out = torch.eye(4, dtype=torch.float64).repeat(poses.shape[0], 1, 1)
        out[:, :3, :3] = rotation.T @ poses[:, :3, :3]
        out[:, :3, 3] = (rotation.T @ (poses[:, :3, 3] / self.scale - translation).T).T
        return out.float()


class OracleRestorer:
    """Renders the scene's ground-truth Gaussians at the clip's cameras (the heatmap is all zero)."""

    label = ORACLE_LABEL
    needs_cameras = True

    def __init__(self, gaussians: Dict[str, Tensor], background: float, to_scene: SceneToDataparser) -> None:
        self.gaussians = gaussians
        self.background = background
        self.to_scene = to_scene

    @classmethod
    def from_scene(cls, data: Path, to_scene: SceneToDataparser) -> "OracleRestorer":
        data = Path(data)
        folder = data.parent if data.suffix == ".json" else data
        path = folder / GROUND_TRUTH_FILE
        if not path.is_file():
            raise ReferenceRestorerError(
                f"The oracle restorer needs the scene's ground truth, {path}, which only aw-demo-scene writes; "
                "use a scene made by aw-demo-scene or another --pipeline.restorer-preset."
            )
        saved = torch.load(path, map_location="cpu", weights_only=True)
        gaussians = {k: saved[k].float() for k in GAUSSIAN_KEYS}
        return cls(gaussians, float(saved.get("background", 0.5)), to_scene)

    def render(self, cameras) -> Float[Tensor, "frames height width 3"]:
        """The ground truth at nerfstudio ``cameras`` (pinhole; their intrinsics and size)."""
        poses = self.to_scene.to_original(cameras.camera_to_worlds.cpu())
        Ks = cameras.get_intrinsics_matrices().cpu()
        sizes = zip(cameras.width.view(-1).tolist(), cameras.height.view(-1).tolist())
        return torch.stack(
            [
                render_gaussians(self.gaussians, pose, K, width, height, self.background)
                for pose, K, (width, height) in zip(poses, Ks, sizes)
            ]
        )

    def restore(
        self, frames: Tensor, first_anchor: Tensor, last_anchor: Tensor, opacity: Optional[Tensor] = None, cameras=None
    ) -> RestorationResult:
        if cameras is None:
            raise ReferenceRestorerError("The oracle restorer needs the clip's cameras; the closed loop passes them.")
        truth = self.render(cameras)
        if truth.shape != frames.shape:
            raise ReferenceRestorerError(
                f"The oracle rendered {tuple(truth.shape)} for a clip of {tuple(frames.shape)}."
            )
        return RestorationResult(frames=truth, heatmap=torch.zeros(truth.shape[:3]))

    def to(self, device) -> "OracleRestorer":
        return self

    def offload(self) -> "OracleRestorer":
        return self
