"""Checks before ``ns-train artifactworld`` does any work: bad input gets one sentence, not a traceback.

nerfstudio's dataparser, trainer and checkpoint loader raise Python errors on a user's data (a
missing folder, a corrupt ``transforms.json``, a missing image, ``--load-dir`` without a checkpoint,
CUDA asked for on a machine without it, a read-only output folder). :class:`ArtifactWorldTrainerConfig`
runs these checks first (written by hand: nerfstudio has no validation hook), and the method's
trainer turns what is left of the dataparser's errors into one sentence naming the data.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Type

import torch
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

DATA_ERRORS = (OSError, json.JSONDecodeError, KeyError, ValueError, AssertionError, IndexError)
"""What nerfstudio's dataparsers raise on bad scene data (caught only while the data loads)."""


class PreflightError(ValueError):
    """Bad input found before training; the message is one sentence saying what and how to fix it."""


def stop(message: str) -> None:
    """One sentence on the console and exit status 2 (the process runs under ns-train)."""
    CONSOLE.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise SystemExit(2)


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
    # Imported here: these modules import this one (for ``stop``).
    from artifactworld_ns.datamanager import ArtifactWorldDataManagerConfig, check_datamanager_options
    from artifactworld_ns.pipeline import (
        ArtifactWorldPipelineConfig,
        check_restorer_weights,
        check_round_config,
        round_schedule,
    )
    from artifactworld_ns.view_selection import ViewSelectionError, resolve_num_train_views

    datamanager = config.pipeline.datamanager
    if isinstance(datamanager, ArtifactWorldDataManagerConfig):
        check_datamanager_options(datamanager)
        sparse = datamanager.train_view_ratio is not None or datamanager.num_train_views is not None
        split_lists = meta is not None and any(f"{split}_filenames" in meta for split in ("train", "val", "test"))
        if sparse and meta is not None and not split_lists:
            try:
                resolve_num_train_views(
                    len(meta["frames"]), ratio=datamanager.train_view_ratio, count=datamanager.num_train_views
                )
            except ViewSelectionError as error:
                raise PreflightError(str(error)) from None
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


def absolute_paths(config: TrainerConfig) -> None:
    """The data, output and checkpoint paths as absolute paths, so the saved config.yml works from any folder
    (ns-eval, ns-viewer, aw-render read them relative to the folder they run in)."""
    datamanager = config.pipeline.datamanager
    for owner, name in (
        (config, "data"),
        (config, "output_dir"),
        (config, "load_dir"),
        (config, "load_checkpoint"),
        (datamanager, "data"),
        (getattr(datamanager, "dataparser", None), "data"),
    ):
        value = getattr(owner, name, None)
        if isinstance(value, (str, Path)) and str(value):
            setattr(owner, name, Path(value).absolute())
    dataparser = getattr(datamanager, "dataparser", None)
    if getattr(datamanager, "data", None) is not None and hasattr(dataparser, "data"):
        dataparser.data = datamanager.data  # as nerfstudio's datamanager sets it; the saved config says it once


_CREATED_RUN_DIRS: set = set()
"""Run folders this process created (in ``save_config``); a refusal during set-up removes them again."""


def remove_refused_run(base_dir: Path) -> None:
    """Remove a run folder that this process made moments ago for a run that was refused before training.

    Only a folder made by this process's ``save_config`` and holding no checkpoint goes, then its parents
    (experiment and method folders) while they are empty.
    """
    base_dir = Path(base_dir).absolute()
    if base_dir not in _CREATED_RUN_DIRS or any(base_dir.rglob("*.ckpt")):
        return
    shutil.rmtree(base_dir, ignore_errors=True)
    _CREATED_RUN_DIRS.discard(base_dir)
    for parent in list(base_dir.parents)[:2]:
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break


def raised_by_a_dataparser(error: BaseException) -> bool:
    """True when the error comes from nerfstudio's data loading code (a user's data), not from a bug of ours."""
    tb = error.__traceback__
    while tb is not None:
        if f"nerfstudio{os.sep}data{os.sep}" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


class ArtifactWorldTrainer(Trainer):
    """nerfstudio's trainer, with :func:`preflight` first and scene-loading errors as one sentence."""

    def setup(self, test_mode="val") -> None:
        try:
            self._checked_setup(test_mode)
        except SystemExit as refusal:
            if refusal.code == 2:  # a refusal (:func:`stop`): leave no empty run folder behind
                remove_refused_run(self.base_dir)
            raise

    def _checked_setup(self, test_mode: str) -> None:
        try:
            preflight(self.config)
        except PreflightError as error:
            stop(str(error))
        try:
            super().setup(test_mode=test_mode)
        except DATA_ERRORS as error:
            if not raised_by_a_dataparser(error):
                raise
            data = self.config.pipeline.datamanager.data
            detail = str(error).splitlines()[0] if str(error) else "no details"
            stop(f"Loading the scene {data} failed ({type(error).__name__}: {detail}); check its files and --data.")


@dataclass
class ArtifactWorldTrainerConfig(TrainerConfig):
    """nerfstudio's TrainerConfig with the method's checks (see :mod:`artifactworld_ns.preflight`)."""

    _target: Type = field(default_factory=lambda: ArtifactWorldTrainer)

    def print_to_terminal(self) -> None:
        # ns-train prints (and then saves) the config before anything else: check the input first, so a
        # bad option or scene is refused in one sentence, without the config dump and without a run folder.
        try:
            preflight(self)
        except PreflightError as error:
            stop(str(error))
        absolute_paths(self)
        super().print_to_terminal()

    def save_config(self) -> None:
        absolute_paths(self)
        # ns-train writes config.yml before the trainer exists: check the folder first.
        base_dir = self.get_base_dir().absolute()
        try:
            check_output_writable(base_dir)
        except PreflightError as error:
            stop(str(error))
        if not base_dir.exists():
            _CREATED_RUN_DIRS.add(base_dir)
        super().save_config()
