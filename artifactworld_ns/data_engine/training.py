"""One training run of ``aw-simulate``: nerfstudio's Trainer on splatfacto, stopping at the clips' checkpoints.

No trainer of our own: nerfstudio's :class:`Trainer` runs splatfacto (``ArtifactWorldModel``, splatfacto
with gsplat on CUDA and :mod:`artifactworld_ns.torch_rasterizer` elsewhere, or its point-dropout
subclass for Dilation) with splatfacto's optimizers and schedule. The run's data is a ``transforms.json``
written in the scene's work folder: the capture's frames with absolute image paths (the ghosting run's
training images replaced by composited copies) and nerfstudio's ``train_filenames`` / ``val_filenames``
split, so the dataparser normalises all cameras together and the datamanager undistorts the held-out
images as it does the training ones. A training callback hands the live pipeline to ``on_checkpoint`` at
each checkpoint iteration, which renders that checkpoint's clips; nothing is written to disk in between
(a 12K-iteration checkpoint with optimizer state is hundreds of MB).
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterator, Optional, Type
from unittest import mock

import numpy as np
import torch
from nerfstudio.configs.base_config import LocalWriterConfig, LoggingConfig, MachineConfig
from nerfstudio.data.datamanagers import full_images_datamanager
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image

from artifactworld_ns.data_engine.clips import SparseSplit
from artifactworld_ns.data_engine.point_dropout import PointDropoutModelConfig
from artifactworld_ns.data_engine.recipes import RunPlan
from artifactworld_ns.data_engine.scenes import INTRINSIC_KEYS, Capture
from artifactworld_ns.data_engine.transients import Transient, composite
from artifactworld_ns.datamanager import ArtifactWorldDataManagerConfig
from artifactworld_ns.method_configs.artifactworld import splatfacto_optimizers
from artifactworld_ns.model import ArtifactWorldModelConfig
from artifactworld_ns.restorer import ArtifactWorldError

SCHEDULE_FIELDS = (
    "warmup_length",
    "refine_every",
    "resolution_schedule",
    "sh_degree_interval",
    "stop_split_at",
    "stop_screen_size_at",
)
"""splatfacto's step-counted settings that ``schedule_scale`` multiplies."""


class TrainingError(ArtifactWorldError, RuntimeError):
    """A training run that could not start or finish; the message is one sentence."""


class SimulationTrainer(Trainer):
    """nerfstudio's Trainer without checkpoint files (the clips are rendered from the live model)."""

    def save_checkpoint(self, step: int) -> None:
        return None


@dataclass
class SimulationTrainerConfig(TrainerConfig):
    """TrainerConfig with no viewer and no event writer: a run is one step of a batch job."""

    _target: Type = field(default_factory=lambda: SimulationTrainer)

    def is_viewer_legacy_enabled(self) -> bool:
        return False

    def is_viewer_enabled(self) -> bool:
        return False

    def is_wandb_enabled(self) -> bool:
        return False

    def is_tensorboard_enabled(self) -> bool:
        return False

    def is_comet_enabled(self) -> bool:
        return False


def model_config(
    run: RunPlan, base: Optional[ArtifactWorldModelConfig] = None, schedule_scale: float = 1.0
) -> ArtifactWorldModelConfig:
    """A copy of ``base`` (default: splatfacto's settings) for ``run``: the schedule scaled, point dropout for Dilation."""
    base = base if base is not None else ArtifactWorldModelConfig()
    values = {
        f.name: copy.deepcopy(getattr(base, f.name))
        for f in fields(ArtifactWorldModelConfig)
        if f.init and f.name != "_target"
    }
    if run.name == "dilation":
        config = PointDropoutModelConfig(**values, point_dropout=run.point_dropout)
    else:
        config = ArtifactWorldModelConfig(**values)
    if schedule_scale != 1.0:
        for name in SCHEDULE_FIELDS:
            setattr(config, name, max(1, int(round(getattr(config, name) * schedule_scale))))
    return config


def trainer_config(
    transforms: Path,
    run_dir: Path,
    run: RunPlan,
    device: str,
    seed: int,
    schedule_scale: float,
    model: Optional[ArtifactWorldModelConfig] = None,
) -> SimulationTrainerConfig:
    return SimulationTrainerConfig(
        method_name="splatfacto",
        experiment_name=run.name,
        timestamp="run",
        output_dir=run_dir,
        max_num_iterations=run.iterations,
        steps_per_save=10**9,
        steps_per_eval_batch=0,
        steps_per_eval_image=0,
        steps_per_eval_all_images=0,
        mixed_precision=False,
        machine=MachineConfig(device_type=device, seed=seed),
        logging=LoggingConfig(local_writer=LocalWriterConfig(enable=False), profiler="none"),
        pipeline=VanillaPipelineConfig(
            datamanager=ArtifactWorldDataManagerConfig(
                dataparser=NerfstudioDataParserConfig(data=transforms, load_3D_points=True, downscale_factor=1),
                cache_images="gpu",
                cache_images_type="uint8",
            ),
            model=model_config(run, model, schedule_scale),
        ),
        optimizers=splatfacto_optimizers(run.iterations),
        vis="tensorboard",  # unused: SimulationTrainerConfig turns every writer off
    )


def _run_frame(capture: Capture, index: int) -> dict:
    """Frame ``index`` for the run's transforms.json: its own intrinsics at its image's size, absolute mask path."""
    frame = {k: v for k, v in capture.frames[index].items() if k not in ("depth_file_path",)}
    frame.update(capture.intrinsics(index))
    frame["w"], frame["h"] = int(frame["w"]), int(frame["h"])
    if capture.downscale > 1:
        frame.pop("mask_path", None)  # masks_N/ are not looked for
    elif "mask_path" in frame:
        frame["mask_path"] = str((capture.folder / frame["mask_path"]).resolve())
    return frame


def write_run_data(
    capture: Capture,
    split: SparseSplit,
    held_out: list[int],
    folder: Path,
    transient: Optional[Transient] = None,
) -> Path:
    """The run's ``transforms.json`` in ``folder``: training frames, the held-out frames ``held_out``, their split.

    With a ``transient`` its training frames get composited copies (``folder/images``); the held-out ones never.
    """
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    dropped = ("frames", "train_filenames", "val_filenames", "test_filenames", *INTRINSIC_KEYS)
    meta = {k: v for k, v in capture.meta.items() if k not in dropped}  # intrinsics go per frame (_run_frame)
    if meta.get("ply_file_path"):
        meta["ply_file_path"] = str((capture.folder / meta["ply_file_path"]).resolve())
    frames, train_names, eval_names = [], [], []
    shown = set(transient.frames) if transient is not None else set()
    for index in sorted(set(split.train) | set(held_out)):
        path = capture.image_paths[index].resolve()
        if index in shown:
            image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
            image = composite(image, capture.camera_to_worlds[index], capture.intrinsics(index), transient, index)
            path = folder / "images" / f"{index:06d}.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path)
        frames.append({**_run_frame(capture, index), "file_path": str(path)})
        (train_names if index in split.train else eval_names).append(str(path))
    meta.update(frames=frames, train_filenames=train_names, val_filenames=eval_names, test_filenames=eval_names)
    transforms = folder / "transforms.json"
    transforms.write_text(json.dumps(meta, indent=1))
    return transforms


def seed_everything(seed: int) -> None:
    """What ``ns-train`` seeds before a run (nerfstudio's ``_set_random_seed``)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def quiet_nerfstudio() -> Iterator[list[str]]:
    """nerfstudio's console messages (set-up logs, per-run banners) captured instead of printed; our progress
    bars speak instead. Yields a list that holds the captured text when the block ends."""
    captured: list[str] = []
    # nerfstudio's image-caching bar (rich's global console) would fight our Live display: shown as nothing here.
    untracked = mock.patch.object(full_images_datamanager, "track", lambda sequence, **_: sequence)
    try:
        with CONSOLE.capture() as capture, untracked:
            yield captured
    finally:
        captured.append(capture.get())


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


@dataclass
class RunTimes:
    training: float = 0.0
    checkpoints: float = 0.0
    """Time spent in ``on_checkpoint`` (rendering, metrics, encoding): not training."""


def train_run(
    transforms: Path,
    run_dir: Path,
    run: RunPlan,
    *,
    device: str,
    seed: int,
    schedule_scale: float,
    on_checkpoint: Callable[[int, object], None],
    on_step: Optional[Callable[[int], None]] = None,
    local_rank: int = 0,
    model: Optional[ArtifactWorldModelConfig] = None,
) -> RunTimes:
    """Train ``run`` on ``transforms``; at each of ``run.checkpoints`` (iterations done) call ``on_checkpoint(iterations, pipeline)``."""
    config = trainer_config(transforms, run_dir, run, device, seed, schedule_scale, model)
    wanted = set(run.checkpoints)
    times = RunTimes()
    trainer: Optional[Trainer] = None

    def after_iteration(step: int) -> None:
        done = step + 1
        if on_step is not None:
            on_step(done)
        if done in wanted:
            start = time.perf_counter()
            on_checkpoint(done, trainer.pipeline)  # type: ignore[union-attr]
            times.checkpoints += time.perf_counter() - start

    seed_everything(seed)
    start = time.perf_counter()
    log: list[str] = []
    try:
        with quiet_nerfstudio() as log, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*GradScaler.*", category=FutureWarning)
            trainer = config.setup(local_rank=local_rank, world_size=1)
            trainer.setup()
            trainer.pipeline.model.strategy.verbose = False  # gsplat prints every densification otherwise
            trainer.callbacks.append(
                TrainingCallback(where_to_run=[TrainingCallbackLocation.AFTER_TRAIN_ITERATION], func=after_iteration)
            )
            trainer.train()
    except SystemExit:  # the method's one-sentence stops (an unreadable image, ...), printed to nerfstudio's console
        raise TrainingError(f"the {run.name} run stopped: {_last_line(''.join(log))}") from None
    times.training = time.perf_counter() - start - times.checkpoints
    trainer = None  # free the pipeline before the next run
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return times
