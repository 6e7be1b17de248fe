"""The settings of one LoRA training run (:mod:`artifactworld_ns.restorer.training`), their official defaults and checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .aatf import NOISEMAP_FEATURE_SCALE
from .configs import OFFICIAL_LORA_TARGETS
from .errors import RestorerInputError
from .flow_matching import FIRST_FRAME_CONDITIONING_P

DEFAULT_TARGET_MODULES = OFFICIAL_LORA_TARGETS
DEFAULT_RANK = {"full": 128, "tiny": 4}
WORLD_MODEL_STAGE = "world-model"
OFFICIAL_STEPS = {1: 7500, 2: 12010, WORLD_MODEL_STAGE: 12010}
"""Optimizer steps of the official runs (``configs/stage1_infer.yaml``, ``configs/stage2_infer.yaml``); the paper
gives none for the world model (Sec. 3.3), which takes stage 2's."""


@dataclass
class TrainConfig:
    """Train one ArtifactWorld LoRA adapter the way the official trainer does (stage 1 heatmap predictor or stage 2 restorer)."""

    stage: int | str
    """1 = heatmap predictor (LoRA1), 2 = heatmap-guided restorer (LoRA2), world-model = the Artifact World Model
    (paper Sec. 3.3: clean clip + shuffled artifact types -> degraded clip; restorer/flywheel/world_model.py)."""
    data: Path
    """Pairs folder written by aw-make-pairs with the same --preset (labelled pairs for the world model)."""
    output_dir: Path
    """Where the adapter, its ComfyUI copy, its JSON config, checkpoints/ and logs/ go."""
    preset: Literal["tiny", "full"] = "full"
    """Backbone: 'full' = LTX-Video 0.9.8-distilled 13B (the official base); 'tiny' = the untrained random-init model (tests, smoke runs)."""
    steps: int | None = None
    """Optimizer steps in total (a resumed run continues up to this number); default: the official 7500 (stage 1) / 12010 (stage 2)."""
    rank: int | None = None
    """LoRA rank (default 128 for full, as released, 4 for tiny)."""
    alpha: float | None = None
    """LoRA alpha (default: the rank, as released; other values are folded into lora_B when saving)."""
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    """Linear layers that get the adapter, matched by name suffix as peft does."""
    learning_rate: float = 2e-4
    """AdamW learning rate at step 0 (official 2e-4)."""
    lr_schedule: Literal["linear", "constant"] = "linear"
    """'linear' = LinearLR from 1.0 to --lr-end-factor over --steps (official); 'constant' = none."""
    lr_end_factor: float = 0.1
    weight_decay: float = 0.01
    """AdamW weight decay (official: torch's default, 0.01)."""
    max_grad_norm: float = 1.0
    """Gradient-norm clipping (0 = off)."""
    gradient_accumulation_steps: int = 1
    """Micro-batches (one pair each) per optimizer step (official batch 1, no accumulation)."""
    gradient_checkpointing: bool = True
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """'auto' = bf16 on CUDA (official), none on CPU (frozen backbone in bf16, LoRA weights in float32)."""
    timestep_sampling: Literal["shifted_logit_normal", "uniform"] = "shifted_logit_normal"
    logit_std: float = 1.0
    """Standard deviation of the shifted logit-normal sampler (official 1.0)."""
    first_frame_conditioning_p: float = FIRST_FRAME_CONDITIONING_P
    """Probability that a sample keeps the target's first latent frame clean as conditioning (official 0.2)."""
    noisemap_feature_scale: float = NOISEMAP_FEATURE_SCALE
    """Stage 2: factor on the heatmap latent (official 0.05; must match inference)."""
    checkpoint_every: int = 500
    """Save a checkpoint (OUTPUT/checkpoints/checkpoint_K, its step in state.json) every this many steps and at the end."""
    checkpoints_total_limit: int | None = 3
    """Keep the newest N checkpoints, deleting older ones before each save (accelerate's ProjectConfiguration total_limit; a full-size checkpoint is about 8 GB); None keeps all."""
    resume: bool = False
    """Continue from the latest checkpoint (adapter, optimizer, LR schedule, sampling state); a run that already reached --steps is left as it is."""
    seed: int = 42
    log_with: Literal["tensorboard", "wandb", "none"] = "tensorboard"
    device: str | None = None
    """'cpu' forces the CPU; otherwise accelerate picks the device (cuda:LOCAL_RANK when CUDA is there). The tiny preset uses cpu."""
    show_progress: bool = True
    world_model_base: Literal["2b", "13b"] = "2b"
    """World model only: its base transformer, LTX-Video 0.9.8-distilled 2B (the paper's) or the restorer's 13B."""
    prompt_orders: int = 8
    """World model only: shuffled prompt orders per artifact-type set that the steps draw from."""
    source_weights: dict[str, float] | None = None
    """Draw pairs by source with these weights, e.g. --source-weights simulated 1 generated 0.5 (sources from the
    pairs' labels; a source left out gets 0); default: every pair once per epoch, as the official trainer."""


@dataclass
class TrainResult:
    adapter_path: Path
    config_path: Path
    start_step: int
    end_step: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    peak_memory_bytes: int = 0
    comfy_path: Path | None = None
    already_finished: bool = False
    """``--resume`` found the run finished: nothing was trained or written."""

    @property
    def steps_per_second(self) -> float:
        done = self.end_step - self.start_step
        return done / self.seconds if self.seconds > 0 else 0.0


def total_steps(config: TrainConfig) -> int:
    """The run's optimizer steps: ``--steps`` or the official count for the stage."""
    return config.steps if config.steps is not None else OFFICIAL_STEPS.get(config.stage, 1)


def validate_config(config: TrainConfig) -> None:
    """One sentence per bad setting (checked before anything is loaded)."""
    if config.stage not in OFFICIAL_STEPS:
        raise RestorerInputError(
            f"--stage must be 1 (heatmap predictor), 2 (AATF restorer) or world-model, got {config.stage}."
        )
    if config.prompt_orders < 1:
        raise RestorerInputError(f"--prompt-orders must be at least 1, got {config.prompt_orders}.")
    if config.steps is not None and config.steps < 1:
        raise RestorerInputError(f"--steps must be at least 1, got {config.steps}.")
    if config.rank is not None and config.rank < 1:
        raise RestorerInputError(f"LoRA rank {config.rank} does not fit: the rank must be at least 1.")
    if config.gradient_accumulation_steps < 1 or config.checkpoint_every < 1:
        raise RestorerInputError("--gradient-accumulation-steps and --checkpoint-every must be at least 1.")
    if config.checkpoints_total_limit is not None and config.checkpoints_total_limit < 1:
        raise RestorerInputError(
            f"--checkpoints-total-limit must be at least 1 (or None to keep every checkpoint), got "
            f"{config.checkpoints_total_limit}."
        )
    if config.learning_rate <= 0:
        raise RestorerInputError(f"--learning-rate must be positive, got {config.learning_rate}.")
    if not 0 < config.lr_end_factor <= 1:
        raise RestorerInputError(f"--lr-end-factor must be in (0, 1], got {config.lr_end_factor}.")
    if config.logit_std <= 0:
        raise RestorerInputError(f"--logit-std must be positive, got {config.logit_std}.")
    if not 0 <= config.first_frame_conditioning_p <= 1:
        raise RestorerInputError(
            f"--first-frame-conditioning-p must be between 0 and 1, got {config.first_frame_conditioning_p}."
        )
    if config.noisemap_feature_scale < 0:
        raise RestorerInputError(f"--noisemap-feature-scale must not be negative, got {config.noisemap_feature_scale}.")
