"""The captures ``aw-simulate`` reads: finding scene folders, and reading one nerfstudio capture's poses and images.

``SCENES`` is one nerfstudio scene folder (``transforms.json`` + images), a folder of such folders, or a
text file with one scene path per line (``#`` starts a comment; relative paths are relative to the file).
A capture's frames are in nerfstudio's order (sorted by image path, as its dataparser sorts them), which
is the capture order of ``ns-process-data`` and DL3DV scenes; a frame's index is its position in that order.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from jaxtyping import Float
from PIL import Image

from artifactworld_ns.restorer import InputError

TRANSFORMS = "transforms.json"
INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")


class SceneError(InputError):
    """A scene ``aw-simulate`` cannot use; the message is one sentence naming the scene and the fix."""


class SceneTooShortError(SceneError):
    """A scene left without a clip (after the trajectory filter): skipped, not failed."""


@dataclass
class Capture:
    """One registered capture: its frames in nerfstudio's order, with poses and (possibly downscaled) images."""

    folder: Path
    """The scene folder (holds transforms.json)."""
    name: str
    """A name unique among the scenes of a run (the folder name, made unique by a short hash if needed)."""
    meta: dict[str, Any]
    """transforms.json, as read."""
    frames: list[dict[str, Any]]
    """Its frames, sorted by image path (nerfstudio's order)."""
    image_paths: list[Path]
    """The image of each frame (in ``images_N/`` when downscaled by N, nerfstudio's convention)."""
    camera_to_worlds: Float[np.ndarray, "frames 4 4"]
    """OpenGL camera-to-world of each frame, as transforms.json gives it."""
    downscale: int = 1
    """The image downscale factor in use (1 = the images of transforms.json)."""
    sizes: list[tuple[int, int]] = field(default_factory=list)
    """``(width, height)`` of each frame's image file, read from its header."""

    def __len__(self) -> int:
        return len(self.frames)

    def intrinsics(self, index: int) -> dict[str, float]:
        """Pinhole ``fl_x, fl_y, cx, cy, w, h`` of frame ``index``, scaled to the size of its image file."""
        values = {}
        for key in INTRINSIC_KEYS:
            value = self.frames[index].get(key, self.meta.get(key))
            if value is None and key in ("w", "h"):
                continue  # the image's own size
            if value is None:
                raise SceneError(f"{self.folder / TRANSFORMS}: frame {index} has no {key!r}; add it or a global one.")
            values[key] = float(value)
        width, height = self.sizes[index]
        sx = width / values["w"] if "w" in values else 1.0 / self.downscale
        sy = height / values["h"] if "h" in values else 1.0 / self.downscale
        return {
            "fl_x": values["fl_x"] * sx,
            "fl_y": values["fl_y"] * sy,
            "cx": values["cx"] * sx,
            "cy": values["cy"] * sy,
            "w": float(width),
            "h": float(height),
        }


def find_scenes(source: Path) -> list[Path]:
    """The scene folders named by ``SCENES`` (see the module doc), sorted; raises :class:`SceneError`."""
    source = Path(source)
    if not source.exists():
        raise SceneError(f"{source} does not exist; pass a scene folder, a folder of scene folders or a list file.")
    if source.is_file():
        if source.name == TRANSFORMS:
            return [source.parent]
        scenes = []
        try:
            lines = source.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise SceneError(f"The scene list {source} cannot be read as text ({error}).") from None
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if line:
                path = Path(line).expanduser()
                scenes.append(path if path.is_absolute() else source.parent / path)
        if not scenes:
            raise SceneError(f"The scene list {source} names no scene; write one scene folder per line.")
        return sorted(dict.fromkeys(p.resolve() for p in scenes))
    if (source / TRANSFORMS).is_file():
        return [source.resolve()]
    scenes = sorted(p.resolve() for p in source.iterdir() if p.is_dir() and (p / TRANSFORMS).is_file())
    if not scenes:
        raise SceneError(
            f"{source} holds no {TRANSFORMS} and no scene folder with one; pass a nerfstudio scene (e.g. from "
            "ns-process-data or aw-demo-scene), a folder of them or a text file listing them."
        )
    return scenes


def scene_names(folders: list[Path]) -> dict[Path, str]:
    """A unique, file-name-safe name per scene: its folder name, plus a short hash of its path where two share one."""
    counts: dict[str, int] = {}
    for folder in folders:
        counts[folder.name] = counts.get(folder.name, 0) + 1
    names = {}
    for folder in folders:
        base = "".join(c if c.isalnum() or c in "-_." else "_" for c in folder.name) or "scene"
        if counts[folder.name] > 1:
            base += "-" + hashlib.sha1(str(folder).encode()).hexdigest()[:6]
        names[folder] = base
    return names


def _downscale_factor(folder: Path, frames: list[dict], requested: Optional[int], width: float) -> int:
    """nerfstudio's rule when ``requested`` is None (the largest ``images_N`` keeping the width <= 1600 that exists)."""
    if requested is not None:
        if requested < 1:
            raise SceneError(f"--downscale-factor must be at least 1, got {requested}.")
        return requested
    factor = 1
    first = Path(frames[0]["file_path"]).name
    while width / factor > 1600 and (folder / f"images_{factor * 2}" / first).is_file():
        factor *= 2
    return factor


def read_capture(folder: Path, name: str, downscale: Optional[int] = None) -> Capture:
    """Read and check one capture: transforms.json, finite 4x4 poses, intrinsics and every image on disk."""
    folder = Path(folder)
    transforms = folder / TRANSFORMS
    if not transforms.is_file():
        raise SceneError(f"The scene {folder} has no {TRANSFORMS}; make one with ns-process-data.")
    try:
        meta = json.loads(transforms.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SceneError(
            f"{transforms} is not valid JSON ({error}); fix or regenerate it with ns-process-data."
        ) from None
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames:
        raise SceneError(f'{transforms} lists no frames; it needs a non-empty "frames" list.')
    for index, frame in enumerate(frames):
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise SceneError(
                f'{transforms}: frame {index} lacks "file_path" or "transform_matrix"; every frame needs both.'
            )
    frames = sorted(frames, key=lambda frame: folder / Path(frame["file_path"]))
    poses = []
    for index, frame in enumerate(frames):
        try:
            pose = np.asarray(frame["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError):
            pose = np.full((0,), math.nan)
        if pose.shape == (3, 4):
            pose = np.concatenate([pose, [[0.0, 0.0, 0.0, 1.0]]])
        if pose.shape != (4, 4) or not np.isfinite(pose).all():
            raise SceneError(
                f"{transforms}: the pose of frame {index} ({frame['file_path']}) is not a finite 4x4 matrix; "
                "re-register the capture or remove that frame."
            )
        poses.append(pose)
    width = frames[0].get("w", meta.get("w"))
    factor = _downscale_factor(folder, frames, downscale, float(width) if width is not None else 0.0)
    paths = [
        folder / frame["file_path"] if factor == 1 else folder / f"images_{factor}" / Path(frame["file_path"]).name
        for frame in frames
    ]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise SceneError(
            f"{len(missing)} of the {len(paths)} images of {folder} are missing (first: {missing[0]}); "
            "restore them or remove their frames from transforms.json."
        )
    sizes = []
    for path in paths:
        try:
            with Image.open(path) as image:  # the header only: cheap
                sizes.append(image.size)
        except (OSError, ValueError) as error:
            raise SceneError(
                f"The image {path} cannot be read ({type(error).__name__}); replace it or remove its frame from transforms.json."
            ) from None
    capture = Capture(folder, name, meta, frames, paths, np.stack(poses), factor, sizes)
    for index in range(len(frames)):
        capture.intrinsics(index)  # every frame has intrinsics
    return capture
