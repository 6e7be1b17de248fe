"""ArtifactWorldPipeline: the closed loop's restoration rounds (paper Sec. 4.4).

Work that needs both the model and the data lives here, as nerfstudio intends: at ``restore_steps`` a
round plans clips along reference-guided trajectories, renders them with the current model
(:func:`artifactworld_ns.render_io.render_frames`, the function ``aw-render`` uses), restores them with the
ArtifactWorld restorer (anchors = the training images at the clip ends, opacity = the rendered
accumulation) and adds the restored frames and their cameras to the pseudo-view bank, which the
datamanager then serves next to the real views.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils import writer
from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer_elements import ViewerButton, ViewerCheckbox, ViewerControl
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from artifactworld_ns.bank import BANK_FILE, BankError, PseudoViewBank, RoundRecord
from artifactworld_ns.bank_viewer import draw_bank
from artifactworld_ns.cameras import camera_record
from artifactworld_ns.datamanager import ArtifactWorldDataManager, ArtifactWorldDataManagerConfig
from artifactworld_ns.errors import PreflightError, stop
from artifactworld_ns.model import ArtifactWorldModelConfig
from artifactworld_ns.reference_restorers import (
    IDENTITY_LABEL,
    ORACLE_LABEL,
    IdentityRestorer,
    OracleRestorer,
    SceneToDataparser,
)
from artifactworld_ns.render_io import cameras_at, render_frames
from artifactworld_ns.restorer import (
    ArtifactWorldError,
    RestorerInputError,
    StepProgress,
    announce_untrained,
    check_clip_length,
)
from artifactworld_ns.trajectories import ClipPlan, plan_clips

REFERENCE_RESTORERS = {"identity": IDENTITY_LABEL, "oracle": ORACLE_LABEL}


@dataclass
class ArtifactWorldPipelineConfig(VanillaPipelineConfig):
    """Splatfacto's pipeline plus the closed loop's restoration rounds."""

    _target: Type = field(default_factory=lambda: ArtifactWorldPipeline)
    datamanager: ArtifactWorldDataManagerConfig = field(default_factory=ArtifactWorldDataManagerConfig)
    model: ArtifactWorldModelConfig = field(default_factory=ArtifactWorldModelConfig)
    restorer_preset: Literal["full", "tiny", "identity", "oracle"] = "full"
    """Restorer of the method's restoration rounds: 'full' (the released ArtifactWorld weights on LTX-Video
    0.9.8-distilled 13B), 'tiny' (random weights, untrained; for CPU demos and CI), or a reference restorer
    for research and tests: 'identity' (returns the renders, a lower bound) or 'oracle' (returns the ground
    truth; only for aw-demo-scene scenes, an upper bound)."""
    restorer_steps: Optional[int] = None
    """Sampling steps of the restorer (default: the preset's, 8); fewer is faster."""
    restorer_profile: Optional[Literal["80gb", "40gb", "24gb"]] = None
    """GPU memory profile of the restorer (full preset): 80gb, 40gb or 24gb chooses transformer offload and VAE
    tiling (bf16 weights in all three) for a GPU of that size; prints the predicted peak and refuses a smaller GPU."""
    restorer_force: bool = False
    """Load --pipeline.restorer-profile even when the detected GPU is smaller than its predicted peak."""
    restore_steps: Optional[Tuple[int, ...]] = None
    """Iterations at which a restoration round runs (render clips, restore them, add them to the bank);
    default: at --pipeline.restore-fractions of the run."""
    restore_fractions: Tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)
    """When --pipeline.restore-steps is not given, rounds run at these fractions of the run's iterations
    (3000, 6000, ... 15000 of splatfacto's 30000)."""
    clips_per_round: int = 4
    """Clips rendered and restored per round."""
    clip_frames: int = 89
    """Frames per clip; must be 8n+1 (17, 25, ..., 89). Both end frames are training views. The restorer lays
    each clip out as the official T + 8-frame reference; 89 (-> 97) is the length the released adapters
    were trained on."""
    trajectory: Literal["reference-guided", "progressive"] = "reference-guided"
    """Clip poses: GSFixer's reference-guided sampling, or Difix3D's poses shifted toward the eval views round by round."""

    def setup(self, **kwargs) -> "ArtifactWorldPipeline":
        """An edge: nerfstudio's tools that load a run (ns-eval, ns-viewer, ns-render, aw-render) build the pipeline
        here, so an error of ours while it is built becomes one sentence and exit status 2."""
        try:
            return super().setup(**kwargs)
        except ArtifactWorldError as error:
            stop(str(error))


class ArtifactWorldPipeline(VanillaPipeline):
    """Splatfacto's pipeline that runs the restoration rounds and fills the datamanager's pseudo-view bank."""

    config: ArtifactWorldPipelineConfig
    datamanager: ArtifactWorldDataManager

    def __init__(
        self,
        config: ArtifactWorldPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        *args,
        **kwargs,
    ):
        check_round_config(config)
        training = test_mode == "val"  # ns-eval, ns-render and the viewer load runs with other modes
        if training and config.restorer_preset in ("full", "tiny"):
            check_restorer_weights(config)  # missing weights fail now, before the data loads, not at each round
        super().__init__(config, device, test_mode, *args, **kwargs)
        self.training = training
        self.bank_dir: Optional[Path] = None
        """The run's bank folder while training (set by the training callbacks)."""
        self.restore_steps: Tuple[int, ...] = ()
        """The run's round schedule, resolved when training starts."""
        self.checkpoint_step: Optional[int] = None
        """The step of the checkpoint this pipeline was loaded from (None for a fresh run)."""
        self._restorer = None
        self._round_requested = False
        self._viewer_bank_loaded = False
        if training:
            self._announce_restorer()
        # Viewer elements (nerfstudio's viewer finds them on the pipeline).
        self.viewer_control = ViewerControl()
        self.restore_button = ViewerButton(
            name="ArtifactWorld: run restoration round", cb_hook=lambda _: self._on_round_button()
        )
        self.show_bank_checkbox = ViewerCheckbox(
            name="ArtifactWorld: show bank cameras",
            default_value=False,
            cb_hook=lambda _: self.show_bank_in_viewer(),
            hint="Frustums of the restored views in the pseudo-view bank, with their images.",
        )

    def _announce_restorer(self) -> None:
        """Before training: say which restorer runs the rounds; build a reference restorer now."""
        preset = self.config.restorer_preset
        if preset in REFERENCE_RESTORERS:
            CONSOLE.print(
                f"[yellow]ArtifactWorld: {escape(REFERENCE_RESTORERS[preset])} restores the rounds; for research and tests only."
            )
            self._restorer = self._reference_restorer()
        if preset == "tiny":
            CONSOLE.print(f"[yellow]ArtifactWorld: {announce_untrained()}")  # the restorer's loader: label only

    # ------------------------------------------------------------------ schedule and bank

    def get_training_callbacks(self, attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(attributes)
        trainer = attributes.trainer
        if trainer is None:
            return callbacks
        # nerfstudio loads a resumed run's checkpoint before it asks for callbacks, and then trains
        # --max-num-iterations more steps from there.
        end = getattr(trainer, "_start_step", 0) + trainer.config.max_num_iterations
        self.restore_steps = round_schedule(self.config, end)
        self.bank_dir = trainer.base_dir / "bank"
        source = resumed_bank_dir(trainer.config.load_dir, trainer.config.load_checkpoint)
        if source is not None:
            checkpoint_step = self.checkpoint_step
            if checkpoint_step is None:  # nerfstudio resumes at the step after its checkpoint's
                checkpoint_step = getattr(trainer, "_start_step", 1) - 1
            self._resume_bank(source, checkpoint_step)
        else:
            self.datamanager.bank.save_index(self.bank_dir)
        return callbacks + [
            TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], self._before_train_iteration)
        ]

    def load_pipeline(self, loaded_state: Dict[str, Any], step: int) -> None:
        """nerfstudio loads a checkpoint here (resume, ns-eval, ns-viewer); the bank keeps the rounds up to ``step``."""
        super().load_pipeline(loaded_state, step)
        self.checkpoint_step = step

    def _resume_bank(self, source: Path, checkpoint_step: int) -> None:
        """The old run's bank as it was at the checkpoint: later rounds are dropped (and run again at their steps).

        The old run's files stay where they are; the resumed run copies the kept rounds into its own bank.
        """
        bank = PseudoViewBank.load(source)
        dropped = bank.drop_rounds_after(checkpoint_step)
        bank.copy_files_to(source, self.bank_dir)
        self.datamanager.bank = bank
        CONSOLE.print(
            f"ArtifactWorld: resumed the pseudo-view bank from {source} ({len(bank)} views, {len(bank.rounds)} rounds)."
        )
        if dropped:
            CONSOLE.print(f"[yellow]ArtifactWorld: {escape(dropped_rounds_note(dropped, checkpoint_step, source))}")

    def _before_train_iteration(self, step: int) -> None:
        done = {record.step for record in self.datamanager.bank.rounds}
        if self._round_requested or (step in self.restore_steps and step not in done):
            self._round_requested = False
            self.run_round(step)

    def request_round(self) -> None:
        """Run a restoration round before the next training step."""
        self._round_requested = True

    def _on_round_button(self) -> None:
        """The viewer's round button: a round while training; under ``ns-viewer`` a note that rounds need training."""
        if self.training:
            self.request_round()
        else:
            viewer = getattr(self.viewer_control, "viewer", None)
            run = Path(viewer.log_filename).parent if viewer is not None else Path("RUN")
            self._notify_viewer(
                "Restoration rounds run only during training (ns-train); this viewer shows a finished run. "
                "To add rounds, resume it with ns-train --load-dir.",
                f"(ns-train ... --load-dir {run / 'nerfstudio_models'})",
            )

    def show_bank_in_viewer(self) -> None:
        """Draw (or remove) the bank's cameras in the viewer (see :func:`artifactworld_ns.bank_viewer.draw_bank`).

        While training the bank is the run's own; under ``ns-viewer --load-config`` it is read from the
        ``bank`` folder beside the loaded config (the run folder, where nerfstudio's viewer finds the config).
        """
        visible = bool(self.show_bank_checkbox.value)
        if visible and self.bank_dir is None and not self._viewer_bank_loaded:
            self._load_bank_beside_config()
        draw_bank(getattr(self.viewer_control, "viser_server", None), self.datamanager.bank, visible)

    def _load_bank_beside_config(self) -> None:
        viewer = getattr(self.viewer_control, "viewer", None)
        if viewer is None:
            return
        self._viewer_bank_loaded = True
        folder = Path(viewer.log_filename).parent / "bank"
        if not (folder / BANK_FILE).is_file():
            self._notify_viewer(
                "This run has no pseudo-view bank (no bank/bank.json beside its config.yml), so there are no "
                "restored views to show.",
                f"({folder / BANK_FILE} is missing)",
            )
            return
        try:
            bank = PseudoViewBank.load(folder)
        except (BankError, OSError, ValueError, KeyError, TypeError) as error:
            self._notify_viewer(
                "The pseudo-view bank of this run cannot be read.", f"({folder}: {type(error).__name__}: {error})"
            )
            return
        self.datamanager.bank = bank
        CONSOLE.print(f"ArtifactWorld: showing the {len(bank)} views of the pseudo-view bank in {folder}.")

    def _notify_viewer(self, message: str, details: str = "") -> None:
        """Say ``message`` as a notification in every open viewer tab, and in the console with ``details``."""
        CONSOLE.print(f"[yellow]ArtifactWorld: {escape(' '.join(filter(None, (message, details))))}")
        server = getattr(self.viewer_control, "viser_server", None)
        if server is None:
            return
        for client in server.get_clients().values():
            client.add_notification(title="ArtifactWorld", body=message, auto_close=20_000)

    # ------------------------------------------------------------------ restoration rounds

    def run_round(self, step: int) -> RoundRecord:
        """Plan clips, render them, restore them, add them to the bank. A failure is logged and skipped.

        A failed round (e.g. out of memory) frees what it took: the restorer is offloaded (``_restore``'s
        ``finally``) and, once the error and its frames are gone, the round's tensors and the cached
        device memory are released, so that training goes on with the memory it had.
        """
        assert self.bank_dir is not None, "run_round needs the training callbacks set up"
        bank = self.datamanager.bank
        record = RoundRecord(round=bank.next_round, step=step, status="ok")
        label = REFERENCE_RESTORERS.get(self.config.restorer_preset, f"{self.config.restorer_preset} restorer")
        CONSOLE.print(f"ArtifactWorld: restoration round {record.round} at step {step} ({escape(label)})")
        try:
            self._round(record)
        except Exception as error:  # noqa: BLE001 - a failed round (e.g. out of memory) must not stop training
            record.status = f"failed: {type(error).__name__}: {error}"
        if record.status != "ok":
            # Outside the except block: the error's traceback (and the round's tensors its frames hold) is gone.
            release_device_memory()
            CONSOLE.print(
                f"[bold yellow]ArtifactWorld: restoration round {record.round} at step {step} failed "
                f"({escape(record.status[8:])}); training continues without it."
            )
            bank.add_failed_round(self.bank_dir, record)
            return record
        self.show_bank_in_viewer()
        CONSOLE.print(
            f"ArtifactWorld: round {record.round} added {record.num_views} views (bank: {len(bank)}); "
            + ", ".join(f"{k} {v:.1f}s" for k, v in record.seconds.items())
        )
        return record

    def _round(self, record: RoundRecord) -> None:
        """One round's work, under a progress bar (rendering, then restoring, clip by clip)."""
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=CONSOLE) as progress:
            started = time.perf_counter()
            clips = self._plan_clips(record.round)
            clip_cameras = [
                cameras_at(self.datamanager.train_dataset.cameras, clip.anchor_first, clip.camera_to_worlds)
                for clip in clips
            ]
            task = progress.add_task(f"round {record.round}: rendering {len(clips)} clips", total=len(clips))
            renders = []
            for cameras in clip_cameras:
                renders.append(render_frames(self, cameras, progress=progress, description="  frames"))
                progress.advance(task)
            record.seconds["render"] = time.perf_counter() - started

            started = time.perf_counter()
            results = self._restore(clips, clip_cameras, renders, progress, f"round {record.round}: ")
            record.seconds["restore"] = time.perf_counter() - started

        started = time.perf_counter()
        self._add_to_bank(record, clips, clip_cameras, results)
        record.seconds["inject"] = time.perf_counter() - started
        self.datamanager.bank.save_index(self.bank_dir)
        self._log_round(record.step, record, renders, results)

    def _plan_clips(self, round_index: int) -> List[ClipPlan]:
        train_poses = self.datamanager.train_dataset.cameras.camera_to_worlds
        config = self.config
        if config.trajectory == "progressive":
            return plan_clips(
                train_poses,
                config.clips_per_round,
                config.clip_frames,
                mode="progressive",
                eval_poses=self.datamanager.eval_dataset.cameras.camera_to_worlds,
                round_index=round_index,
                num_rounds=max(len(self.restore_steps), round_index + 1),
            )
        return plan_clips(train_poses, config.clips_per_round, config.clip_frames, mode="reference_guided")

    def _restore(
        self, clips: List[ClipPlan], clip_cameras: List[Cameras], renders, progress: Progress, prefix: str = ""
    ) -> list:
        """Each clip restored between its two training views (the DBA anchors), opacity = the render's accumulation.

        The restorer goes back to the CPU afterwards, also when a clip fails (it must not stay on the GPU).
        """
        restorer = self._get_restorer()
        steps = StepProgress(prefix="  ")
        steps.attach(progress)
        previous = getattr(restorer, "progress", None)
        restorer.progress = steps  # the sampler's steps, as sub-tasks of the round's bar
        task = progress.add_task(f"{prefix}restoring {len(clips)} clips", total=len(clips))
        try:
            results = []
            for clip, cameras, (rgb, accumulation) in zip(clips, clip_cameras, renders):
                first, last = (
                    self.datamanager.training_image(i, rgb.shape[1:3]) for i in (clip.anchor_first, clip.anchor_last)
                )
                extra = {"cameras": cameras} if getattr(restorer, "needs_cameras", False) else {}
                results.append(restorer.restore(rgb, first, last, opacity=accumulation, **extra))
                progress.advance(task)
            return results
        finally:
            restorer.progress = previous
            restorer.offload()

    def _add_to_bank(self, record: RoundRecord, clips: List[ClipPlan], clip_cameras: List[Cameras], results) -> None:
        """The restored inner frames (the end frames are the training views themselves) and their render cameras."""
        frames, heatmaps, cameras = [], [], []
        for clip, clip_camera, result in zip(clips, clip_cameras, results):
            inner = slice(1, len(clip.camera_to_worlds) - 1)
            frames.append(result.frames[inner])
            heatmaps.append(result.heatmap[inner])
            cameras += [camera_record(clip_camera[i]) for i in range(inner.start, inner.stop)]
            record.clips.append(
                {
                    "anchor_first": clip.anchor_first,
                    "anchor_last": clip.anchor_last,
                    "frames": len(clip.camera_to_worlds),
                }
            )
        self.datamanager.bank.add_round(self.bank_dir, record, torch.cat(frames), torch.cat(heatmaps), cameras)

    def _get_restorer(self):
        """The round's restorer; a reference restorer was already built when training started."""
        if self._restorer is None:
            from artifactworld_ns.restorer.pipeline import ArtifactRestorer

            overrides = {"device": str(self.device), **profile_overrides(self.config)}
            if self.config.restorer_steps is not None:
                overrides["num_inference_steps"] = self.config.restorer_steps
            self._restorer = ArtifactRestorer.from_preset(self.config.restorer_preset, **overrides)
        elif torch.device(self.device).type == "cuda":
            self._restorer.to(self.device)
        return self._restorer

    def _reference_restorer(self):
        """The identity or oracle reference restorer (research and tests; never a default)."""
        if self.config.restorer_preset == "identity":
            return IdentityRestorer()
        outputs = self.datamanager.train_dataparser_outputs
        to_scene = SceneToDataparser(outputs.dataparser_transform.float(), float(outputs.dataparser_scale))
        return OracleRestorer.from_scene(self.datamanager.config.data, to_scene)

    def get_average_eval_image_metrics(
        self, step: Optional[int] = None, output_path: Optional[Path] = None, get_std: bool = False
    ):
        """nerfstudio's averages, without NaN (an unavailable metric, e.g. LPIPS without its weights): ``None`` for
        ``ns-eval``, whose ``eval.json`` then holds ``null`` rather than a bare ``NaN``; left out while training
        (``step`` given), whose logger takes numbers only."""
        from artifactworld_ns.metrics import finite_or_none

        metrics = finite_or_none(super().get_average_eval_image_metrics(step, output_path, get_std))
        return metrics if step is None else {k: v for k, v in metrics.items() if v is not None}

    def _log_round(self, step: int, record: RoundRecord, renders, results) -> None:
        for clip_index, ((rgb, _), result) in enumerate(zip(renders, results)):
            middle = len(rgb) // 2
            heatmap = result.heatmap[middle][..., None].expand(-1, -1, 3)
            strip = torch.cat([rgb[middle], heatmap, result.frames[middle]], dim=1)  # render | heatmap | restored
            writer.put_image(name=f"ArtifactWorld/round_{record.round:03d}/clip_{clip_index}", image=strip, step=step)
        for phase, seconds in record.seconds.items():
            writer.put_scalar(name=f"ArtifactWorld/round_{phase}_seconds", scalar=seconds, step=step)
        writer.put_scalar(name="ArtifactWorld/bank_views", scalar=len(self.datamanager.bank), step=step)


def check_round_config(config: ArtifactWorldPipelineConfig) -> None:
    """One sentence per bad round option, before any data is loaded."""
    check_clip_length(config.clip_frames)  # --pipeline.clip-frames (ClipLengthError, its sentence says what to use)
    if any(not 0.0 < f < 1.0 for f in config.restore_fractions):
        raise PreflightError(
            f"--pipeline.restore-fractions {config.restore_fractions} must lie strictly between 0 and 1."
        )
    if config.clips_per_round < 1:
        raise PreflightError(f"--pipeline.clips-per-round {config.clips_per_round} must be at least 1.")


def round_schedule(config: ArtifactWorldPipelineConfig, end: int) -> Tuple[int, ...]:
    """The steps of the rounds of a run that stops before step ``end``; a step it never reaches stops here."""
    if config.restore_steps is None:
        steps = tuple(sorted({int(f * end) for f in config.restore_fractions}))
    else:
        steps = tuple(config.restore_steps)
    late = [s for s in steps if s > end - 1]
    if late:
        raise PreflightError(
            f"--pipeline.restore-steps {late[0]} is beyond the last iteration ({end - 1}); "
            "choose steps that training reaches (it stops after --max-num-iterations more steps)."
        )
    return steps


def profile_overrides(config: ArtifactWorldPipelineConfig) -> dict:
    """The restorer preset overrides of --pipeline.restorer-profile / restorer-force."""
    if config.restorer_profile is None:
        return {}
    return {"memory_profile": config.restorer_profile, "force_memory_profile": config.restorer_force}


def check_restorer_weights(config: ArtifactWorldPipelineConfig) -> None:
    """A preset whose weights are missing fails before training, unless the run has no rounds."""
    if config.restore_steps is not None and len(config.restore_steps) == 0:
        return
    from artifactworld_ns.restorer.pipeline import ArtifactRestorer

    try:
        ArtifactRestorer.check_weights(config.restorer_preset, **profile_overrides(config))
    except RestorerInputError as error:  # the restorer's sentence, and what else the run can do
        raise PreflightError(
            f"{error} (Or train without restoration rounds: --pipeline.restore-steps with no steps.)"
        ) from None


def resumed_bank_dir(load_dir: Optional[Path], load_checkpoint: Optional[Path]) -> Optional[Path]:
    """The bank of the run a resumed run loads its checkpoint from (``RUN/bank`` beside ``RUN/nerfstudio_models``)."""
    if load_dir is not None:
        return Path(load_dir).parent / "bank"
    if load_checkpoint is not None:
        return Path(load_checkpoint).parent.parent / "bank"
    return None


def dropped_rounds_note(dropped: List[RoundRecord], checkpoint_step: int, source: Path) -> str:
    """One line: which bank rounds a resume from ``checkpoint_step`` left out, and that their files stay."""
    rounds = ", ".join(
        f"{r.round} (step {r.step}, {r.num_views} view{'' if r.num_views == 1 else 's'})" for r in dropped
    )
    noun = "round" if len(dropped) == 1 else "rounds"
    return (
        f"the checkpoint is from step {checkpoint_step}, so the bank leaves out {noun} {rounds} made after it; "
        f"scheduled rounds run again at their steps, and {source} keeps its files."
    )


def release_device_memory() -> None:
    """Free what a failed round left: collect its tensors, then empty the device's memory cache (accelerate's)."""
    from accelerate.utils import release_memory

    release_memory()
