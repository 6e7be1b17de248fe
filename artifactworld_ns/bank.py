"""The pseudo-view bank: restored novel views with their cameras, heatmaps and round metadata.

On disk (``RUN/bank/``, next to ``nerfstudio_models/``)::

    bank.json                      views (file names + cameras) and rounds (step, clips, timings, status)
    round_000/frame_00000.png      restored frames (RGB)
    round_000/heatmap_00000.png    the restorer's heatmap for that frame (grey, bright = severe)

Every write is atomic (the restorer's ``atomic_folder`` and ``atomic_path``): a round's folder is
written under a temporary name and renamed, and ``bank.json`` is replaced in one ``os.replace``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from jaxtyping import Float, UInt8
from PIL import Image
from torch import Tensor

from artifactworld_ns.restorer import ArtifactWorldError, atomic_folder, atomic_path

BANK_FILE = "bank.json"


class BankError(ArtifactWorldError, ValueError):
    """A bank that cannot be used; the message is one sentence for the user."""


@dataclass
class BankView:
    """One restored view: where its files are and the pinhole camera it was rendered from."""

    image: str
    heatmap: str
    camera_to_world: List[List[float]]
    """3x4, nerfstudio (OpenGL) convention, in the dataparser's normalized frame."""
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    round: int


@dataclass
class RoundRecord:
    round: int
    step: int
    status: str
    """"ok" or "failed: <reason>"."""
    num_views: int = 0
    clips: List[Dict] = field(default_factory=list)
    """Per clip: anchor training views and frame count."""
    seconds: Dict[str, float] = field(default_factory=dict)
    """Wall time of the round's render / restore / inject phases."""


class PseudoViewBank:
    """Restored frames and their cameras, kept in memory for training and mirrored to ``RUN/bank``."""

    def __init__(self) -> None:
        self.views: List[BankView] = []
        self.rounds: List[RoundRecord] = []
        self.images: List[UInt8[Tensor, "height width 3"]] = []
        self.heatmaps: List[UInt8[Tensor, "height width"]] = []

    def __len__(self) -> int:
        return len(self.views)

    @property
    def next_round(self) -> int:
        return max((r.round for r in self.rounds), default=-1) + 1

    def drop_rounds_after(self, step: int) -> List[RoundRecord]:
        """Keep only the rounds run at or before ``step`` (with their views); returns the dropped rounds.

        A run resumed from the checkpoint of ``step`` must not train on views restored from a later model.
        Only the bank in memory changes; its files stay where they are.
        """
        dropped = [r for r in self.rounds if r.step > step]
        if not dropped:
            return []
        gone = {r.round for r in dropped}
        keep = [i for i, view in enumerate(self.views) if view.round not in gone]
        self.views = [self.views[i] for i in keep]
        self.images = [self.images[i] for i in keep]
        self.heatmaps = [self.heatmaps[i] for i in keep]
        self.rounds = [r for r in self.rounds if r.step <= step]
        return dropped

    def add_round(
        self,
        folder: Path,
        record: RoundRecord,
        frames: Float[Tensor, "views height width 3"],
        heatmaps: Float[Tensor, "views height width"],
        views: List[Dict],
    ) -> None:
        """Write one round's frames atomically, then add them and the record to the bank."""
        round_name = f"round_{record.round:03d}"
        new_views, images, maps = [], [], []
        with atomic_folder(folder / round_name) as staging:  # a round redone after a resume replaces its old files
            for index, (frame, heatmap, camera) in enumerate(zip(frames, heatmaps, views)):
                image = (frame.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
                heat = (heatmap.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
                Image.fromarray(image.numpy()).save(staging / f"frame_{index:05d}.png")
                Image.fromarray(heat.numpy()).save(staging / f"heatmap_{index:05d}.png")
                new_views.append(
                    BankView(
                        image=f"{round_name}/frame_{index:05d}.png",
                        heatmap=f"{round_name}/heatmap_{index:05d}.png",
                        round=record.round,
                        **camera,
                    )
                )
                images.append(image)
                maps.append(heat)
        record.num_views = len(new_views)
        self.views.extend(new_views)
        self.images.extend(images)
        self.heatmaps.extend(maps)
        self.rounds.append(record)
        self.save_index(folder)

    def add_failed_round(self, folder: Path, record: RoundRecord) -> None:
        self.rounds.append(record)
        self.save_index(folder)

    def save_index(self, folder: Path) -> None:
        payload = {"version": 1, "views": [asdict(v) for v in self.views], "rounds": [asdict(r) for r in self.rounds]}
        with atomic_path(folder / BANK_FILE) as temporary:
            temporary.write_text(json.dumps(payload, indent=1))

    @classmethod
    def load(cls, folder: Path) -> "PseudoViewBank":
        index = folder / BANK_FILE
        if not index.is_file():
            raise BankError(
                f"{folder.parent} has no pseudo-view bank ({index} is missing), so it is not an ArtifactWorld run "
                "to resume; point --load-dir at the nerfstudio_models folder of an ArtifactWorld run."
            )
        payload = json.loads(index.read_text())
        bank = cls()
        bank.rounds = [RoundRecord(**r) for r in payload["rounds"]]
        for view in payload["views"]:
            view = BankView(**view)
            bank.views.append(view)
            bank.images.append(torch.from_numpy(np.asarray(Image.open(folder / view.image).convert("RGB")).copy()))
            bank.heatmaps.append(torch.from_numpy(np.asarray(Image.open(folder / view.heatmap).convert("L")).copy()))
        return bank

    def copy_files_to(self, source: Path, destination: Path) -> None:
        """Bring a loaded bank's files into a new run folder (a resumed run writes its own bank)."""
        if source.resolve() == destination.resolve():
            return
        for record in self.rounds:
            round_dir = source / f"round_{record.round:03d}"
            if round_dir.is_dir() and not (destination / round_dir.name).exists():
                shutil.copytree(round_dir, _ensure(destination) / round_dir.name)
        self.save_index(destination)

    def camera_for(self, index: int) -> Dict[str, object]:
        view = self.views[index]
        return {
            "camera_to_world": torch.tensor(view.camera_to_world, dtype=torch.float32),
            "fx": view.fx,
            "fy": view.fy,
            "cx": view.cx,
            "cy": view.cy,
            "width": view.width,
            "height": view.height,
        }


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder
