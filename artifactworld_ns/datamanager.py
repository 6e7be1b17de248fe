"""ArtifactWorldDataManager: sparse views, scheduled restoration rounds, and the pseudo-view bank.

The datamanager owns the closed loop (paper Sec. 4.4): at ``restore_steps`` it renders clips along
reference-guided trajectories with the current model, restores them with the ArtifactWorld
restorer (anchors = the training images at the clip ends, opacity = the rendered accumulation),
and adds the restored frames and their cameras to a bank that ``next_train`` draws from.
"""

from __future__ import annotations

import random
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.utils import writer
from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer_elements import ViewerButton, ViewerCheckbox, ViewerControl
from rich.markup import escape
from torch import Tensor

from artifactworld_ns.bank import BankError, PseudoViewBank, RoundRecord
from artifactworld_ns.bank_viewer import draw_bank
from artifactworld_ns.cameras import anchor_image, camera_record, pinhole_cameras, subset_dataparser_outputs
from artifactworld_ns.preflight import stop
from artifactworld_ns.reference_restorers import (
    IDENTITY_LABEL,
    ORACLE_LABEL,
    IdentityRestorer,
    OracleRestorer,
    ReferenceRestorerError,
    SceneToDataparser,
)
from artifactworld_ns.resume import load_random_extra_state, random_extra_state
from artifactworld_ns.trajectories import ClipPlan, TrajectoryError, check_clip_length, plan_clips
from artifactworld_ns.view_selection import ViewSelectionError, select_train_views


@dataclass
class ArtifactWorldDataManagerConfig(FullImageDatamanagerConfig):
    """Full-image datamanager of the ArtifactWorld method: sparse views and the closed loop."""

    _target: Type = field(default_factory=lambda: ArtifactWorldDataManager)
    restorer_preset: Literal["full", "tiny", "identity", "oracle"] = "full"
    """Restorer of the method's restoration rounds: 'full' (the released ArtifactWorld weights on LTX-Video
    0.9.8-distilled 13B), 'tiny' (random weights, untrained; for CPU demos and CI), or a reference restorer
    for research and tests: 'identity' (returns the renders, a lower bound) or 'oracle' (returns the ground
    truth; only for aw-demo-scene scenes, an upper bound)."""
    restorer_steps: Optional[int] = None
    """Sampling steps of the restorer (default: the preset's, 8); fewer is faster."""
    restorer_profile: Optional[Literal["80gb", "40gb", "24gb"]] = None
    """GPU memory profile of the restorer (full preset): 80gb, 40gb or 24gb chooses fp8 storage, transformer
    offload and VAE tiling for a GPU of that size; prints the predicted peak and refuses a smaller GPU."""
    restorer_force: bool = False
    """Load --pipeline.datamanager.restorer-profile even when the detected GPU is smaller than its predicted peak."""
    train_view_ratio: Optional[float] = None
    """Sparse-view protocol: train on this fraction of the views (e.g. 0.05, 0.1, 0.15); the others are eval views."""
    num_train_views: Optional[int] = None
    """Sparse-view protocol: train on exactly this many views (e.g. 3); the others are eval views."""
    view_selection: Literal["even", "farthest"] = "even"
    """How training views are chosen: evenly along the capture order (the paper's protocol, as GSFixer's), or
    farthest-point sampling on the camera positions."""
    restore_steps: Optional[Tuple[int, ...]] = None
    """Iterations at which a restoration round runs (render clips, restore them, add them to the bank);
    default: at --pipeline.datamanager.restore-fractions of the run."""
    restore_fractions: Tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)
    """When --pipeline.datamanager.restore-steps is not given, rounds run at these fractions of the run's
    iterations (3000, 6000, ... 15000 of splatfacto's 30000)."""
    clips_per_round: int = 4
    """Clips rendered and restored per round."""
    clip_frames: int = 89
    """Frames per clip; must be 8n+1 (17, 25, ..., 89). Both end frames are training views. The restorer lays
    each clip out as the official T + 8-frame reference; 89 (-> 97) is the length the released adapters
    were trained on."""
    trajectory: Literal["reference-guided", "progressive"] = "reference-guided"
    """Clip poses: GSFixer's reference-guided sampling, or Difix3D's poses shifted toward the eval views round by round."""
    generated_view_fraction: float = 0.5
    """Once the bank has views, the share of training steps that draw a generated view instead of a real one."""
    seed: int = 0
    """Seed of the draws between real and generated views."""


REFERENCE_RESTORERS = {"identity": IDENTITY_LABEL, "oracle": ORACLE_LABEL}


class ArtifactWorldDataManager(FullImageDatamanager):
    """Serves whole images: real training views and, after the first round, restored novel views."""

    config: ArtifactWorldDataManagerConfig

    def __init__(self, config: ArtifactWorldDataManagerConfig, *args, **kwargs):
        _check_config(config)
        self._eval_outputs: Optional[DataparserOutputs] = None
        if self.sparse_protocol(config) and hasattr(config.dataparser, "eval_mode"):
            # The protocol picks training views among all images; the rest become eval views.
            config.dataparser.eval_mode = "all"
        super().__init__(config, *args, **kwargs)
        self.bank = PseudoViewBank()
        self.bank_dir: Optional[Path] = None
        self.draws: List[Tuple[int, bool]] = []
        """(step, drew a generated view) for every training step: what ``next_train`` served."""
        self._pipeline = None
        self._restorer = None
        self._round_requested = False
        self.restore_steps: Tuple[int, ...] = ()
        """The run's round schedule, resolved when training starts."""
        self._rng = random.Random(config.seed)
        training = self.test_mode == "val"  # ns-eval, ns-render and the viewer load runs with other modes
        if training:
            _check_restorer_weights(config)
        if training and config.restorer_preset in REFERENCE_RESTORERS:
            CONSOLE.print(f"[yellow]ArtifactWorld: {escape(REFERENCE_RESTORERS[config.restorer_preset])} restores the rounds; for research and tests only.")
            try:
                self._restorer = self._reference_restorer()
            except ReferenceRestorerError as error:
                stop(str(error))
        if config.restorer_preset == "tiny":
            CONSOLE.print("[yellow]ArtifactWorld: restorer preset 'tiny' has random weights (untrained); use it for demos and CI only.")
        # Viewer elements (nerfstudio's viewer finds them on the pipeline's modules).
        self.viewer_control = ViewerControl()
        self.restore_button = ViewerButton(name="ArtifactWorld: run restoration round", cb_hook=lambda _: self.request_round())
        self.show_bank_checkbox = ViewerCheckbox(
            name="ArtifactWorld: show bank cameras", default_value=False, cb_hook=lambda _: self.show_bank_in_viewer(),
            hint="Frustums of the restored views in the pseudo-view bank, with their images.",
        )

    # ------------------------------------------------------------------ resuming (see artifactworld_ns/resume.py)

    def get_extra_state(self) -> dict:
        """Checkpointed with the pipeline: the training-view order and every generator the next steps draw from."""
        return random_extra_state(self.train_unseen_cameras, self._rng, getattr(self, "random_generator", None))

    def set_extra_state(self, state: dict) -> None:
        if state:
            self.train_unseen_cameras = load_random_extra_state(state, self._rng, getattr(self, "random_generator", None))

    # ------------------------------------------------------------------ sparse-view protocol

    @staticmethod
    def sparse_protocol(config: ArtifactWorldDataManagerConfig) -> bool:
        return config.train_view_ratio is not None or config.num_train_views is not None

    def create_train_dataset(self):
        outputs = self.train_dataparser_outputs
        if self.sparse_protocol(self.config):
            positions = outputs.cameras.camera_to_worlds[:, :3, 3]
            try:
                train_indices, eval_indices = select_train_views(
                    positions, ratio=self.config.train_view_ratio, count=self.config.num_train_views, method=self.config.view_selection
                )
            except ViewSelectionError as error:
                stop(str(error))
            CONSOLE.print(
                f"ArtifactWorld sparse-view protocol: training on {len(train_indices)} of {len(positions)} views "
                f"({self.config.view_selection}: {train_indices.tolist()}); the other {len(eval_indices)} are eval views."
            )
            self._eval_outputs = subset_dataparser_outputs(outputs, eval_indices.tolist())
            self.train_dataparser_outputs = subset_dataparser_outputs(outputs, train_indices.tolist())
        return self.dataset_type(dataparser_outputs=self.train_dataparser_outputs, scale_factor=self.config.camera_res_scale_factor)

    def create_eval_dataset(self):
        if self._eval_outputs is None:
            return super().create_eval_dataset()
        return self.dataset_type(dataparser_outputs=self._eval_outputs, scale_factor=self.config.camera_res_scale_factor)

    def _load_images(self, split: Literal["train", "eval"], cache_images_device: Literal["cpu", "gpu"]) -> List[Dict[str, torch.Tensor]]:
        # Caching "on cpu" pins host memory, which needs CUDA; when training on the CPU the images
        # already live on the training device, which is what "gpu" caching does.
        if torch.device(self.device).type == "cpu":
            cache_images_device = "gpu"
        try:
            return super()._load_images(split, cache_images_device=cache_images_device)
        except OSError as error:  # PIL's UnidentifiedImageError, truncated files, unreadable files
            stop(f"An image of the {split} views cannot be read ({error}); replace the file or remove its frame from transforms.json.")

    # ------------------------------------------------------------------ training

    def get_training_callbacks(self, attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        # A weak reference: as a plain attribute nn.Module would adopt the pipeline as a child (a cycle).
        self._pipeline = weakref.ref(attributes.pipeline)
        trainer = attributes.trainer
        if trainer is None:
            return []
        # nerfstudio loads a resumed run's checkpoint before it asks for callbacks, and then trains
        # --max-num-iterations more steps from there.
        end = getattr(trainer, "_start_step", 0) + trainer.config.max_num_iterations
        last = end - 1
        if self.config.restore_steps is None:
            self.restore_steps = tuple(sorted({int(f * end) for f in self.config.restore_fractions}))
        else:
            self.restore_steps = tuple(self.config.restore_steps)
        late = [s for s in self.restore_steps if s > last]
        if late:
            stop(
                f"--pipeline.datamanager.restore-steps {late[0]} is beyond the last iteration ({last}); "
                "choose steps that training reaches (it stops after --max-num-iterations more steps)."
            )
        self.bank_dir = trainer.base_dir / "bank"
        if trainer.config.load_dir is not None:
            source = Path(trainer.config.load_dir).parent / "bank"
            try:
                self.bank = PseudoViewBank.load(source)
            except BankError as error:
                stop(str(error))
            self.bank.copy_files_to(source, self.bank_dir)
            CONSOLE.print(f"ArtifactWorld: resumed the pseudo-view bank from {source} ({len(self.bank)} views, {len(self.bank.rounds)} rounds).")
        else:
            self.bank.save_index(self.bank_dir)
        return [TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], self._before_train_iteration)]

    def _before_train_iteration(self, step: int) -> None:
        done = {record.step for record in self.bank.rounds}
        if self._round_requested or (step in self.restore_steps and step not in done):
            self._round_requested = False
            self.run_round(step)

    def request_round(self) -> None:
        """Run a restoration round before the next training step (the viewer's button calls this)."""
        self._round_requested = True

    def show_bank_in_viewer(self) -> None:
        """Draw (or remove) the bank's cameras in the viewer (see :func:`artifactworld_ns.bank_viewer.draw_bank`)."""
        draw_bank(getattr(self.viewer_control, "viser_server", None), self.bank, bool(self.show_bank_checkbox.value))

    def next_train(self, step: int) -> Tuple[Cameras, Dict]:
        """A real training view, or with probability ``generated_view_fraction`` (once the bank
        has views) a restored one; ``data["is_generated"]`` says which."""
        generated = len(self.bank) > 0 and self._rng.random() < self.config.generated_view_fraction
        if generated:
            camera, data = self._bank_view(self._rng.randrange(len(self.bank)))
        else:
            camera, data = super().next_train(step)
            data["is_generated"] = False
        self.draws.append((step, generated))
        return camera, data

    def _bank_view(self, index: int) -> Tuple[Cameras, Dict]:
        view = self.bank.camera_for(index)
        camera = pinhole_cameras(view["camera_to_world"][None], view).to(self.device)
        data = {
            "image": self.bank.images[index].to(self.device),
            "heatmap": (self.bank.heatmaps[index].float() / 255.0).to(self.device),
            "is_generated": True,
        }
        return camera, data

    # ------------------------------------------------------------------ restoration rounds

    def run_round(self, step: int) -> Optional[RoundRecord]:
        """Render clips, restore them, add them to the bank. A failure is logged and skipped."""
        assert self._pipeline is not None and self.bank_dir is not None, "run_round needs the training callbacks set up"
        record = RoundRecord(round=self.bank.next_round, step=step, status="ok")
        label = REFERENCE_RESTORERS.get(self.config.restorer_preset, f"{self.config.restorer_preset} restorer")
        CONSOLE.print(f"ArtifactWorld: restoration round {record.round} at step {step} ({escape(label)})")
        try:
            started = time.perf_counter()
            clips = self._plan_clips(record.round)
            clip_cameras = [self._clip_cameras(clip) for clip in clips]
            renders = [self._render(cameras) for cameras in clip_cameras]
            record.seconds["render"] = time.perf_counter() - started

            started = time.perf_counter()
            restorer = self._get_restorer()
            results = []
            for clip, cameras, (rgb, accumulation) in zip(clips, clip_cameras, renders):
                first, last = (self._training_image(i, rgb.shape[1:3]) for i in (clip.anchor_first, clip.anchor_last))
                extra = {"cameras": cameras} if getattr(restorer, "needs_cameras", False) else {}
                results.append(restorer.restore(rgb, first, last, opacity=accumulation, **extra))
            if torch.device(self.device).type == "cuda":
                restorer.offload()
            record.seconds["restore"] = time.perf_counter() - started

            started = time.perf_counter()
            frames, heatmaps, cameras = [], [], []
            for clip, result in zip(clips, results):
                inner = slice(1, len(clip.camera_to_worlds) - 1)  # the end frames are the training views themselves
                frames.append(result.frames[inner])
                heatmaps.append(result.heatmap[inner])
                anchor = self.train_dataset.cameras[clip.anchor_first]
                cameras += [camera_record(pose, anchor) for pose in clip.camera_to_worlds[inner]]
                record.clips.append({"anchor_first": clip.anchor_first, "anchor_last": clip.anchor_last, "frames": len(clip.camera_to_worlds)})
            self.bank.add_round(self.bank_dir, record, torch.cat(frames), torch.cat(heatmaps), cameras)
            record.seconds["inject"] = time.perf_counter() - started
            self.bank.save_index(self.bank_dir)
            self._log_round(step, record, renders, results)
        except Exception as error:  # noqa: BLE001 - a failed round (e.g. out of memory) must not stop training
            record.status = f"failed: {type(error).__name__}: {error}"
            CONSOLE.print(f"[bold yellow]ArtifactWorld: restoration round {record.round} at step {step} failed ({record.status[8:]}); training continues without it.")
            self.bank.add_failed_round(self.bank_dir, record)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return record
        self.show_bank_in_viewer()
        CONSOLE.print(
            f"ArtifactWorld: round {record.round} added {record.num_views} views (bank: {len(self.bank)}); "
            + ", ".join(f"{k} {v:.1f}s" for k, v in record.seconds.items())
        )
        return record

    def _plan_clips(self, round_index: int) -> List[ClipPlan]:
        train_poses = self.train_dataset.cameras.camera_to_worlds
        if self.config.trajectory == "progressive":
            return plan_clips(
                train_poses, self.config.clips_per_round, self.config.clip_frames, mode="progressive",
                eval_poses=self.eval_dataset.cameras.camera_to_worlds, round_index=round_index,
                num_rounds=max(len(self.restore_steps), round_index + 1),
            )
        return plan_clips(train_poses, self.config.clips_per_round, self.config.clip_frames, mode="reference_guided")

    @torch.no_grad()
    def _clip_cameras(self, clip: ClipPlan) -> Cameras:
        """The clip's cameras: its poses with the first anchor's intrinsics."""
        return pinhole_cameras(clip.camera_to_worlds.float(), camera_record(None, self.train_dataset.cameras[clip.anchor_first]))

    def _render(self, cameras: Cameras) -> Tuple[Float[Tensor, "frames height width 3"], Float[Tensor, "frames height width"]]:
        """RGB and accumulation of a clip's cameras, rendered in eval mode."""
        model = self._pipeline().model
        was_training = model.training
        model.eval()
        try:
            outputs = [model.get_outputs_for_camera(cameras[i : i + 1]) for i in range(cameras.shape[0])]
        finally:
            model.train(was_training)
        rgb = torch.stack([o["rgb"] for o in outputs]).float().cpu()
        accumulation = torch.stack([o["accumulation"][..., 0] for o in outputs]).float().cpu()
        return rgb, accumulation

    def _training_image(self, index: int, size: torch.Size) -> Float[Tensor, "height width 3"]:
        return anchor_image(self.cached_train[index]["image"].cpu(), size)

    def _get_restorer(self):
        """The round's restorer; a reference restorer was already built when training started."""
        if self._restorer is None:
            from artifactworld_ns.restorer import ArtifactRestorer

            overrides = {"device": str(self.device), **_profile_overrides(self.config)}
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
        outputs = self.train_dataparser_outputs
        to_scene = SceneToDataparser(outputs.dataparser_transform.float(), float(outputs.dataparser_scale))
        return OracleRestorer.from_scene(self.config.data, to_scene)

    def _log_round(self, step: int, record: RoundRecord, renders, results) -> None:
        for clip_index, ((rgb, _), result) in enumerate(zip(renders, results)):
            middle = len(rgb) // 2
            heatmap = result.heatmap[middle][..., None].expand(-1, -1, 3)
            strip = torch.cat([rgb[middle], heatmap, result.frames[middle]], dim=1)  # render | heatmap | restored
            writer.put_image(name=f"ArtifactWorld/round_{record.round:03d}/clip_{clip_index}", image=strip, step=step)
        for phase, seconds in record.seconds.items():
            writer.put_scalar(name=f"ArtifactWorld/round_{phase}_seconds", scalar=seconds, step=step)
        writer.put_scalar(name="ArtifactWorld/bank_views", scalar=len(self.bank), step=step)


def _check_config(config: ArtifactWorldDataManagerConfig) -> None:
    try:
        check_clip_length(config.clip_frames)
    except TrajectoryError as error:
        stop(f"--pipeline.datamanager.clip-frames: {error}")
    if not 0.0 <= config.generated_view_fraction <= 1.0:
        stop(f"--pipeline.datamanager.generated-view-fraction {config.generated_view_fraction} is not a fraction; use a value from 0 to 1.")
    if any(not 0.0 < f < 1.0 for f in config.restore_fractions):
        stop(f"--pipeline.datamanager.restore-fractions {config.restore_fractions} must lie strictly between 0 and 1.")
    if config.clips_per_round < 1:
        stop(f"--pipeline.datamanager.clips-per-round {config.clips_per_round} must be at least 1.")


def _profile_overrides(config: ArtifactWorldDataManagerConfig) -> Dict:
    """The restorer preset overrides of --pipeline.datamanager.restorer-profile / restorer-force."""
    if config.restorer_profile is None:
        return {}
    return {"memory_profile": config.restorer_profile, "force_memory_profile": config.restorer_force}


def _check_restorer_weights(config: ArtifactWorldDataManagerConfig) -> None:
    """Before training: a preset whose weights are missing fails now, not at each round."""
    if config.restorer_preset in ("full", "tiny") and (config.restore_steps is None or len(config.restore_steps) > 0):
        from artifactworld_ns.restorer import ArtifactRestorer, RestorerInputError

        try:
            ArtifactRestorer.check_weights(config.restorer_preset, **_profile_overrides(config))
        except RestorerInputError as error:
            stop(f"{error} (Or train without restoration rounds: --pipeline.datamanager.restore-steps with no steps.)")
