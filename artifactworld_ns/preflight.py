"""Checks before ``ns-train artifactworld`` does any work: bad input gets one sentence, not a traceback.

nerfstudio's dataparser, trainer and checkpoint loader raise Python errors on a user's data (a
missing folder, a corrupt ``transforms.json``, a missing image, ``--load-dir`` without a checkpoint,
CUDA asked for on a machine without it, a read-only output folder). :class:`ArtifactWorldTrainerConfig`
runs these checks first (written by hand: nerfstudio has no validation hook), and the method's
trainer turns what is left of the dataparser's errors into one sentence naming the data.
"""

from __future__ import annotations

import json
import os
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


def check_nerfstudio_scene(data: Optional[Path]) -> None:
    """A nerfstudio-data scene: the folder, a readable ``transforms.json`` with frames, and their images."""
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


def preflight(config: TrainerConfig) -> None:
    """Every check that can run before nerfstudio touches the data, the device or a checkpoint."""
    check_device(config.machine.device_type, config.method_name or "artifactworld")
    check_load_dir(config.load_dir, config.load_step)
    dataparser = config.pipeline.datamanager.dataparser
    if isinstance(dataparser, NerfstudioDataParserConfig):
        check_nerfstudio_scene(config.pipeline.datamanager.data or getattr(dataparser, "data", None))


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

    def save_config(self) -> None:
        # ns-train writes config.yml before the trainer exists: check the folder first.
        try:
            check_output_writable(self.get_base_dir())
        except PreflightError as error:
            stop(str(error))
        super().save_config()
