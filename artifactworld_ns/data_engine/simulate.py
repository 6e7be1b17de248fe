"""One scene of ``aw-simulate``, start to end: plan (trajectory filter, split, recipes), train, render, encode, label.

    >>> from artifactworld_ns.data_engine.simulate import SimulationConfig, simulate_scene
    >>> result = simulate_scene(Path("data/garden"), Path("out"), SimulationConfig(clip_frames=17))
    >>> result.labels, result.seconds   # ClipLabel records; {"training", "rendering", "metrics", "encoding", ...}

:func:`simulate_scene` is the unit of work of a batch: it writes ``OUT/gt/NAME.mp4``, ``OUT/artifact/NAME.mp4``
for every clip of the scene and then the scene's record (:mod:`.records`), which marks it finished. Clips
are staged in ``OUT/staging/SCENE/`` and moved into place only when the whole scene succeeded; an interrupted
scene leaves no record, so the next run redoes it from the start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch

from artifactworld_ns.data_engine.clips import SparseSplit, sparse_split
from artifactworld_ns.data_engine.recipes import ClipJob, RecipeConfig, RunPlan, ScenePlan, plan_scene
from artifactworld_ns.data_engine.records import WORK_DIR
from artifactworld_ns.data_engine.scenes import Capture, SceneError, SceneTooShortError, read_capture
from artifactworld_ns.data_engine.trajectory_filter import (
    TrajectoryFilterConfig,
    TrajectoryReport,
    filter_trajectory,
)
from artifactworld_ns.model import ArtifactWorldModelConfig
from artifactworld_ns.restorer import (
    ARTIFACT_TYPES,
    ArtifactWorldError,
    ClipLabel,
    LabelError,
    is_clip_length,
    parse_artifact_types,
    write_video,
)


class SimulationInputError(ArtifactWorldError, ValueError):
    """A bad option of ``aw-simulate``; the message is one sentence saying what to change."""


@dataclass
class SimulationConfig(RecipeConfig):
    """Everything ``aw-simulate`` does to a scene (recipe options in :class:`RecipeConfig`)."""

    types: tuple[str, ...] = ARTIFACT_TYPES
    """Artifact types to simulate (the paper's nine names, any case; "Floaters,Needles" or several values)."""
    clip_frames: int = 89
    """Frames per clip, 8n+1 (89 = the length the restorer was trained on)."""
    device: Optional[Literal["cpu", "cuda"]] = None
    """Torch device for training and rendering (default: cuda when available, else cpu)."""
    max_num_iterations: Optional[int] = None
    """Override the length of every training run (default: the latest checkpoint a run's clips use); checkpoints beyond it are clamped to it."""
    schedule_scale: float = 1.0
    """Multiply splatfacto's step-counted schedule (warm-up, refinement interval, resolution and SH schedules, stop-split step) for short trial runs; 1 = splatfacto's own."""
    downscale_factor: Optional[int] = None
    """Use the scene's images_N/ folders (nerfstudio's convention); default: nerfstudio's choice (largest side at most 1600 px where images_N exist)."""
    fps: float = 24.0
    """Frame rate written into the clips (our choice)."""
    crf: int = 18
    """x264 constant rate factor of the clips (18 = visually lossless)."""
    trajectory_filter: TrajectoryFilterConfig = field(default_factory=TrajectoryFilterConfig)
    """Trajectory smoothness filter (paper Sec. 3.2)."""
    model: ArtifactWorldModelConfig = field(default_factory=ArtifactWorldModelConfig)
    """splatfacto's model settings for every training run (nerfstudio's defaults)."""

    def resolved_device(self) -> str:
        if self.device is not None:
            return self.device
        return "cuda" if torch.cuda.is_available() else "cpu"


def validate_config(config: SimulationConfig) -> list[str]:
    """Check every option before any scene is read; return the canonical types. Raises :class:`SimulationInputError`."""
    try:
        types = parse_artifact_types(config.types)
    except LabelError as error:
        raise SimulationInputError(str(error).replace("artifact type", "artifact type in --types", 1)) from None
    low, high = config.checkpoint_range
    problems = [
        (
            not is_clip_length(config.clip_frames),
            f"--clip-frames {config.clip_frames} is not 8n+1; use 9, 17, 25, ... or 89 (the trained length).",
        ),
        (
            config.frame_step < 2,
            f"--frame-step {config.frame_step} leaves no held-out frame for clips; use 2 or more (the paper trains on every 8th).",
        ),
        (
            not 1 <= low <= high,
            f"--checkpoint-range {low} {high} is not MIN <= MAX with MIN >= 1; e.g. 1500 12000 (the paper's).",
        ),
        (
            not 0 <= config.early_fraction <= 1,
            f"--early-fraction {config.early_fraction} is not a fraction; use a value from 0 to 1.",
        ),
        (config.clips_per_recipe < 1, f"--clips-per-recipe {config.clips_per_recipe} makes no clip; use 1 or more."),
        (
            config.crack_strength < 0 or config.sh_noise_std < 0,
            "--crack-strength and --sh-noise-std must not be negative.",
        ),
        (
            config.aliasing_factor < 1,
            f"--aliasing-factor {config.aliasing_factor} must be at least 1 (1 = full resolution).",
        ),
        (
            not 0 <= config.point_dropout < 1,
            f"--point-dropout {config.point_dropout} must be in [0, 1); the paper uses 0.2.",
        ),
        (
            not 0 <= config.ghost_fraction <= 1,
            f"--ghost-fraction {config.ghost_fraction} is not a fraction; use a value from 0 to 1.",
        ),
        (config.ghost_radius <= 0, f"--ghost-radius {config.ghost_radius} must be positive."),
        (
            config.max_num_iterations is not None and config.max_num_iterations < 1,
            "--max-num-iterations must be at least 1.",
        ),
        (config.schedule_scale <= 0, f"--schedule-scale {config.schedule_scale} must be positive."),
        (config.fps <= 0, f"--fps {config.fps} must be positive."),
        (not 0 <= config.crf <= 51, f"--crf {config.crf} is not an x264 rate factor; use 0 to 51."),
        (
            config.device == "cuda" and not torch.cuda.is_available(),
            "--device cuda was asked for but no CUDA GPU is available; pass --device cpu.",
        ),
    ]
    for bad, message in problems:
        if bad:
            raise SimulationInputError(message)
    return types


@dataclass
class PreparedScene:
    """A scene read, filtered and planned: everything known before training."""

    capture: Capture
    report: TrajectoryReport
    split: SparseSplit
    plan: ScenePlan


def prepare_scene(folder: Path, name: str, config: SimulationConfig, types: list[str]) -> PreparedScene:
    """Read the capture, run the trajectory filter, split it and plan its clips; raises :class:`SceneError`."""
    capture = read_capture(folder, name, config.downscale_factor)
    try:
        report = filter_trajectory(capture.camera_to_worlds, config.trajectory_filter)
    except ValueError as error:
        raise SceneError(f"{folder}: {error}") from None
    split = sparse_split(report.kept, config.frame_step, config.clip_frames)
    if not split.windows:
        raise SceneTooShortError(
            f"{folder} is too short for one clip: its longest stretch of smooth frames holds {split.longest_stretch} "
            f"held-out frames ({len(capture)} frames, {report.summary()}), fewer than --clip-frames {config.clip_frames}; "
            "lower --clip-frames or --frame-step, or use a longer capture."
        )
    plan = plan_scene(name, split, types, config, config.max_num_iterations)
    return PreparedScene(capture, report, split, plan)


@dataclass
class SceneResult:
    """What one scene produced and where its time went (seconds per phase)."""

    name: str
    labels: list[ClipLabel]
    seconds: dict[str, float]
    trainings: int
    iterations: int
    report: str = ""


@dataclass
class _Timer:
    seconds: dict[str, float] = field(
        default_factory=lambda: {"training": 0.0, "rendering": 0.0, "metrics": 0.0, "encoding": 0.0}
    )

    def add(self, phase: str, start: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


def simulate_scene(
    scene: Path | PreparedScene,
    output_dir: Path,
    config: SimulationConfig,
    *,
    progress=None,
    metrics=None,
    local_rank: int = 0,
) -> SceneResult:
    """Simulate every planned clip of one scene into ``output_dir`` and write its record (see the module doc).

    ``scene`` is a scene folder or a :class:`PreparedScene`; ``progress`` a rich Progress for per-run bars;
    ``metrics`` a :class:`artifactworld_ns.metrics.MetricSuite` (built once per process when omitted).
    """
    from artifactworld_ns.data_engine import records
    from artifactworld_ns.data_engine.training import train_run, write_run_data
    from artifactworld_ns.metrics import MetricSuite

    types = validate_config(config)
    started = time.perf_counter()
    if not isinstance(scene, PreparedScene):
        scene = prepare_scene(Path(scene), Path(scene).name, config, types)
    capture, plan = scene.capture, scene.plan
    device = config.resolved_device()
    if metrics is None:
        metrics = MetricSuite.build(device, with_video_metrics=False)
    work = Path(output_dir) / WORK_DIR / plan.name
    if work.exists():
        shutil.rmtree(work)  # an interrupted attempt: redo the scene from the start
    staging = work / "clips"
    timer = _Timer()
    labels: dict[str, ClipLabel] = {}
    frame_of_path = {str(p.resolve()): i for i, p in enumerate(capture.image_paths)}
    try:
        for run in plan.runs:
            jobs = [job for job in plan.jobs if job.recipe.run == run.name]
            transient = _transient(capture, scene.split, run, config)
            held_out = sorted({frame for job in jobs for frame in job.frames})
            transforms = write_run_data(capture, scene.split, held_out, work / run.name / "data", transient)
            bars = _RunBars(progress, plan.name, run, jobs)

            def on_checkpoint(iterations: int, pipeline, jobs=jobs, transient=transient, bars=bars) -> None:
                for job in (j for j in jobs if j.checkpoint == iterations):
                    labels[job.name] = _make_clip(
                        job, pipeline, capture, frame_of_path, staging, config, metrics, timer, transient
                    )
                    bars.clip_done()

            times = train_run(
                transforms,
                work / run.name,
                run,
                device=device,
                seed=config.seed,
                schedule_scale=config.schedule_scale,
                on_checkpoint=on_checkpoint,
                on_step=bars.step,
                local_rank=local_rank,
                model=config.model,
            )
            timer.seconds["training"] += times.training
            bars.close()
        ordered = [labels[job.name] for job in plan.jobs]
        start = time.perf_counter()
        for label in ordered:
            for kind in ("gt", "artifact"):
                target = Path(output_dir) / kind / f"{label.name}.mp4"
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / kind / f"{label.name}.mp4", target)
        timer.add("encoding", start)
        timer.seconds["total"] = time.perf_counter() - started
        result = SceneResult(plan.name, ordered, timer.seconds, len(plan.runs), plan.iterations, scene.report.summary())
        records.write_done(Path(output_dir), capture.folder, result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(OSError):
            work.parent.rmdir()  # OUT/work, once no scene is in progress
    return result


def _transient(capture: Capture, split: SparseSplit, run: RunPlan, config: SimulationConfig):
    if run.name != "ghosting":
        return None
    from artifactworld_ns.data_engine.transients import plan_transient

    return plan_transient(capture.camera_to_worlds, split.train, run.ghost_fraction, config.ghost_radius)


def _make_clip(
    job: ClipJob,
    pipeline,
    capture: Capture,
    frame_of_path: dict[str, int],
    staging: Path,
    config: SimulationConfig,
    metrics,
    timer: _Timer,
    transient,
) -> ClipLabel:
    """Render one clip at the live checkpoint, score it against the captured frames, stage both videos."""
    from artifactworld_ns.data_engine.rendering import HeldOutViews, render_background, render_clip

    start = time.perf_counter()
    views = HeldOutViews(pipeline, frame_of_path)
    gt = views.gt(job.frames, render_background(pipeline))
    rgb, _ = render_clip(pipeline, views.cameras(job.frames), job.recipe.perturbation, job.strength, job.seed)
    timer.add("rendering", start)
    if not torch.isfinite(rgb).all():
        raise SceneError(
            f"the {job.recipe.run} run rendered non-finite pixels at iteration {job.checkpoint} (training diverged); "
            "lower --checkpoint-range or check the capture's poses."
        )
    if rgb.shape != gt.shape:
        raise SceneError(
            f"clip {job.name} renders {tuple(rgb.shape[1:3])} but its images are {tuple(gt.shape[1:3])}; "
            "every held-out image of a clip needs the size its camera states."
        )
    start = time.perf_counter()
    scores = metrics.score(rgb, gt)
    timer.add("metrics", start)
    start = time.perf_counter()
    write_video(staging / "gt" / f"{job.name}.mp4", gt, config.fps, crf=config.crf)
    write_video(staging / "artifact" / f"{job.name}.mp4", rgb, config.fps, crf=config.crf)
    timer.add("encoding", start)
    params = dict(job.params)
    if transient is not None:
        params["transient_frames"] = list(transient.frames)
    return ClipLabel(
        name=job.name,
        types=list(job.recipe.types),
        source="simulated",
        recipe=job.recipe.recipe,
        params=params,
        scene=str(capture.folder),
        frame_indices=list(job.frames),
        metrics={k: (None if v is None or not np.isfinite(v) else float(v)) for k, v in scores.items()},
    )


class _RunBars:
    """Per-run progress: training iterations, then clips rendered; no-op without a Progress."""

    def __init__(self, progress, scene: str, run: RunPlan, jobs: list[ClipJob]) -> None:
        self.progress = progress
        self.tasks = []
        if progress is None:
            return
        recipes = ", ".join(dict.fromkeys(f"{job.recipe.recipe} ({', '.join(job.recipe.types)})" for job in jobs))
        self.train = progress.add_task(f"  {scene}: {run.name} training", total=run.iterations, current="")
        self.clips = progress.add_task(f"  {scene}: clips of {recipes}", total=len(jobs), current="")
        self.tasks = [self.train, self.clips]

    def step(self, done: int) -> None:
        if self.progress is not None:
            self.progress.update(self.train, completed=done)

    def clip_done(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.clips)

    def close(self) -> None:
        for task in self.tasks:
            self.progress.remove_task(task)
