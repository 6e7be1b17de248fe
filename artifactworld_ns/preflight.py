"""Checks before ``ns-train artifactworld`` does any work: bad input gets one sentence, not a traceback.

nerfstudio's dataparser, trainer and checkpoint loader raise Python errors on a user's data (a
missing folder, a corrupt ``transforms.json``, a missing image, ``--load-dir`` without a checkpoint,
CUDA asked for on a machine without it, a read-only output folder). :func:`preflight` runs these checks
first (written by hand: nerfstudio has no validation hook) and raises :class:`PreflightError`; the method's
trainer (:mod:`artifactworld_ns.trainer`) runs it and turns any :class:`ArtifactWorldError` into one sentence.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

import torch
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.trainer import TrainerConfig

from artifactworld_ns.datamanager import ArtifactWorldDataManagerConfig, check_datamanager_options
from artifactworld_ns.errors import PreflightError
from artifactworld_ns.pipeline import (
    ArtifactWorldPipelineConfig,
    check_restorer_weights,
    check_round_config,
    round_schedule,
)
from artifactworld_ns.view_selection import resolve_num_train_views


def check_output_writable(folder: Path) -> None:
    """The run folder's nearest existing ancestor must be a writable folder."""
    probe = Path(folder).absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise PreflightError(
            f"The output path {folder} lies under {probe}, which is a file; choose another --output-dir."
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PreflightError(
            f"The output folder {probe} is not writable; choose a writable --output-dir (the run goes to {folder})."
        )


def check_device(device_type: str, method_name: str) -> None:
    if device_type == "cuda" and not torch.cuda.is_available():
        raise PreflightError(
            f"ns-train {method_name} needs a CUDA GPU and none is available; on a CPU run "
            "`ns-train artifactworld-tiny --machine.device-type cpu` instead."
        )


def check_load_dir(load_dir: Optional[Path], load_step: Optional[int]) -> None:
    if load_dir is None:
        return
    load_dir = Path(load_dir)
    if not load_dir.is_dir():
        raise PreflightError(f"--load-dir {load_dir} is not a folder; point it at a run's nerfstudio_models folder.")
    steps = sorted(int(p.stem.split("-")[1]) for p in load_dir.glob("step-*.ckpt") if p.stem.split("-")[1].isdigit())
    if not steps:
        raise PreflightError(
            f"--load-dir {load_dir} holds no step-*.ckpt checkpoint; point it at a run's nerfstudio_models folder."
        )
    if load_step is not None and load_step not in steps:
        raise PreflightError(
            f"--load-step {load_step} is not in {load_dir}; it has steps {', '.join(map(str, steps))}."
        )


def check_nerfstudio_scene(data: Optional[Path]) -> dict:
    """A nerfstudio-data scene: the folder, a readable ``transforms.json`` with frames, their images and
    cameras (:func:`check_cameras`); returns the parsed ``transforms.json``."""
    if data is None or str(data) in ("", "."):
        raise PreflightError(
            "No scene given; pass --data FOLDER (a folder with transforms.json, e.g. from aw-demo-scene or ns-process-data)."
        )
    data = Path(data)
    if not data.exists():
        raise PreflightError(f"The scene {data} does not exist; pass --data a folder with transforms.json.")
    transforms = data if data.suffix == ".json" else data / "transforms.json"
    if not transforms.is_file():
        raise PreflightError(
            f"The scene folder {data} has no transforms.json; make one with ns-process-data (or aw-demo-scene) or pass the "
            "matching dataparser (e.g. blender-data)."
        )
    try:
        meta = json.loads(transforms.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        where = f" at line {error.lineno}, column {error.colno}" if isinstance(error, json.JSONDecodeError) else ""
        raise PreflightError(
            f"{transforms} is not valid JSON{where}; fix or regenerate it with ns-process-data."
        ) from None
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames:
        raise PreflightError(
            f'{transforms} lists no frames; it needs a non-empty "frames" list of images with their poses.'
        )
    folder = transforms.parent
    missing, malformed = [], []
    for index, frame in enumerate(frames):
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            malformed.append(index)
            continue
        path = folder / frame["file_path"]
        if not path.is_file():
            missing.append(str(frame["file_path"]))
    if malformed:
        raise PreflightError(
            f'{transforms}: frame {malformed[0]} ({len(malformed)} in all) lacks "file_path" or "transform_matrix"; every frame needs both.'
        )
    if missing:
        raise PreflightError(
            f"{len(missing)} of the {len(frames)} images listed in {transforms} are missing (first: {folder / missing[0]}); "
            "restore them or remove their frames."
        )
    check_cameras(meta, transforms)
    return meta


CAMERA_VALUES = ("fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "k2", "k3", "k4", "p1", "p2")
"""The intrinsics nerfstudio's dataparser reads from transforms.json (for all frames, or per frame)."""
POSITIVE_VALUES = ("fl_x", "fl_y", "w", "h")


def _finite(value) -> bool:
    """A finite number (JSON's NaN/Infinity, null, text and booleans are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def _bad_camera_value(entry: dict) -> Optional[str]:
    """``"key = value"`` for the first intrinsic of ``entry`` that is not a finite (positive where it must be) number."""
    for key in CAMERA_VALUES:
        if key in entry and (not _finite(entry[key]) or (key in POSITIVE_VALUES and entry[key] <= 0)):
            return f"{key} = {entry[key]!r}"
    params = entry.get("distortion_params")
    if params is not None and not (isinstance(params, list) and all(_finite(v) for v in params)):
        return f"distortion_params = {params!r}"
    return None


def _bad_pose(matrix) -> Optional[str]:
    """Why ``transform_matrix`` is not a 3x4 or 4x4 camera-to-world matrix of finite numbers, or None."""
    rows = matrix if isinstance(matrix, list) else None
    if rows is None or len(rows) not in (3, 4) or any(not isinstance(r, list) or len(r) != 4 for r in rows):
        return "is not a 3x4 or 4x4 matrix"
    if not all(_finite(v) for row in rows for v in row):
        return "holds a value that is not a finite number (NaN, infinity or null)"
    return None


def check_cameras(meta: dict, transforms: Path) -> None:
    """Finite poses and intrinsics, and images of the size their cameras say (paper-independent input hygiene).

    One NaN in a pose spreads through nerfstudio's pose centring into every camera (and Gaussian), and an
    image whose size differs from its camera's fails only when it is first loaded (at the first eval for an
    eval view); both are refused here, naming the frame.
    """
    from PIL import Image, UnidentifiedImageError

    bad = _bad_camera_value(meta)
    if bad is not None:
        raise PreflightError(
            f"{transforms} gives the cameras {bad}, which is not a usable number; fix it or regenerate the file with ns-process-data."
        )
    folder = transforms.parent
    for index, frame in enumerate(meta["frames"]):
        where = f"frame {index} ({folder / frame['file_path']}) of {transforms}"
        problem = _bad_pose(frame["transform_matrix"])
        if problem is not None:
            raise PreflightError(
                f"The transform_matrix of {where} {problem}; fix that pose or remove the frame (e.g. re-run ns-process-data)."
            )
        bad = _bad_camera_value(frame)
        if bad is not None:
            raise PreflightError(
                f"The camera of {where} has {bad}, which is not a usable number; fix it or remove the frame."
            )
        size = tuple(meta.get(key, frame.get(key)) for key in ("w", "h"))
        if None in size:
            raise PreflightError(
                f'The camera of {where} has no "w" and "h" and {transforms} gives none for all frames; add the image size.'
            )
        try:
            with Image.open(folder / frame["file_path"]) as image:
                found = image.size
        except (OSError, UnidentifiedImageError):
            continue  # an unreadable image is reported, with its name, when the datamanager loads it
        if found != size:
            raise PreflightError(
                f"The image {folder / frame['file_path']} is {found[0]}x{found[1]} pixels but {transforms} gives its camera "
                f"{size[0]}x{size[1]}; give every image its camera's size (e.g. re-run ns-process-data on the capture) or remove the frame."
            )


def check_options(config: TrainerConfig, meta: Optional[dict]) -> None:
    """The method's own option checks, run before the config is printed and saved (they run again at set-up).

    ``meta`` is the scene's ``transforms.json`` when known: the sparse-view protocol's ratio or count is then
    checked against its number of views.
    """
    datamanager = config.pipeline.datamanager
    if isinstance(datamanager, ArtifactWorldDataManagerConfig):
        check_datamanager_options(datamanager)
        sparse = datamanager.train_view_ratio is not None or datamanager.num_train_views is not None
        split_lists = meta is not None and any(f"{split}_filenames" in meta for split in ("train", "val", "test"))
        if sparse and meta is not None and not split_lists:
            resolve_num_train_views(
                len(meta["frames"]), ratio=datamanager.train_view_ratio, count=datamanager.num_train_views
            )
    if isinstance(config.pipeline, ArtifactWorldPipelineConfig):
        check_round_config(config.pipeline)
        if config.load_dir is None:  # a resumed run's schedule depends on its checkpoint's step
            round_schedule(config.pipeline, config.max_num_iterations)
        if config.pipeline.restorer_preset in ("full", "tiny"):
            check_restorer_weights(config.pipeline)


def preflight(config: TrainerConfig) -> None:
    """Every check that can run before nerfstudio touches the data, the device or a checkpoint."""
    check_device(config.machine.device_type, config.method_name or "artifactworld")
    check_load_dir(config.load_dir, config.load_step)
    dataparser = config.pipeline.datamanager.dataparser
    meta = None
    if isinstance(dataparser, NerfstudioDataParserConfig):
        meta = check_nerfstudio_scene(config.pipeline.datamanager.data or getattr(dataparser, "data", None))
    check_options(config, meta)


def __getattr__(name: str):
    """The trainer and its config lived here; a run's ``config.yml`` saved before they moved names them here."""
    if name in ("ArtifactWorldTrainer", "ArtifactWorldTrainerConfig"):
        import artifactworld_ns.trainer

        return getattr(artifactworld_ns.trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
