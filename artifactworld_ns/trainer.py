"""The method's nerfstudio trainer and its config: an edge, where an :class:`ArtifactWorldError` becomes one sentence.

:class:`ArtifactWorldTrainerConfig` runs :func:`artifactworld_ns.preflight.preflight` before ns-train prints and
saves the config; :class:`ArtifactWorldTrainer` runs it again at set-up and turns any error of ours raised while
nerfstudio builds the datamanager, model and pipeline into ``error: <sentence>`` and exit status 2, removing the
run folder that the refused run made.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Type

from nerfstudio.engine.trainer import Trainer, TrainerConfig

from artifactworld_ns.errors import EXIT_REFUSED, stop
from artifactworld_ns.preflight import check_output_writable, preflight
from artifactworld_ns.restorer import ArtifactWorldError


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


class ArtifactWorldTrainer(Trainer):
    """nerfstudio's trainer, with :func:`preflight` first and every error of ours as one sentence."""

    def setup(self, test_mode="val") -> None:
        try:
            preflight(self.config)
            super().setup(test_mode=test_mode)
        except ArtifactWorldError as error:
            remove_refused_run(self.base_dir)
            stop(str(error))
        except SystemExit as refusal:  # a run loaded by nerfstudio's pipeline config (its own edge) was refused
            if refusal.code == EXIT_REFUSED:
                remove_refused_run(self.base_dir)
            raise


@dataclass
class ArtifactWorldTrainerConfig(TrainerConfig):
    """nerfstudio's TrainerConfig with the method's checks (see :mod:`artifactworld_ns.preflight`)."""

    _target: Type = field(default_factory=lambda: ArtifactWorldTrainer)

    def print_to_terminal(self) -> None:
        # ns-train prints (and then saves) the config before anything else: check the input first, so a
        # bad option or scene is refused in one sentence, without the config dump and without a run folder.
        try:
            preflight(self)
        except ArtifactWorldError as error:
            stop(str(error))
        absolute_paths(self)
        super().print_to_terminal()

    def save_config(self) -> None:
        absolute_paths(self)
        # ns-train writes config.yml before the trainer exists: check the folder first.
        base_dir = self.get_base_dir().absolute()
        try:
            check_output_writable(base_dir)
        except ArtifactWorldError as error:
            stop(str(error))
        if not base_dir.exists():
            _CREATED_RUN_DIRS.add(base_dir)
        super().save_config()
