"""Training the two LoRA adapters as the official trainer does (paper Sec. 4.3, Eq. 3).

Our own implementation of the behaviour of the official ArtifactWorld trainer (repository
``fyting/ArtifactWorld`` at commit ``9250e92``: ``stages/stage{1,2}/src/ltxv_trainer/
training_strategies.py``, ``trainer.py``, ``config.py``; run settings from ``configs/stage{1,2}_infer.yaml``
at commit ``681c9a9``) and of LTX-Video-Trainer's timestep sampler (``src/ltxv_trainer/
timestep_samplers.py``), so adapters trained here are interchangeable with the released ones.

**Sequences** (``ReferenceVideoTrainingStrategy.prepare_batch``), all segments the same size and on the
same RoPE coordinates:

* stage 1 (LoRA1, heatmap predictor): ``[z_ref, z_hm_s]``, target ``z0`` = the pseudo-GT heatmap latent;
* stage 2 (LoRA2, restorer): ``[z_ref, z_clean_s, 0.05 * z_hm]``, target ``z0`` = the clean video latent;
  the heatmap latent is multiplied by ``noisemap_feature_scale`` (0.05) and is clean conditioning.
  There is no AATF blending (``z_full`` / ``z_null``) and no context noise in training: both exist only
  in the official inference pipeline.

**Masked flow matching.** ``s`` is drawn per sample (:func:`sample_sigma`), ``eps ~ N(0, I)`` over the
target tokens, ``z_s = (1 - s) z0 + s eps``; conditioning tokens (the reference, stage 2's heatmap and,
with first-frame conditioning, the target's first latent frame, kept clean) get timestep 0 and the
others ``round(1000 s)``; the loss is the squared error to ``eps - z0`` on the target segment with the
conditioning tokens masked out, normalized by the unmasked share (:func:`masked_flow_matching_loss`).

**First-frame conditioning** (``_create_first_frame_conditioning_mask``): with probability
``first_frame_conditioning_p`` (0.2 in the official configs) the target's first latent frame (``h * w``
tokens) is conditioning. The official last- and middle-frame options default to 0 and are not used.

**Timesteps.** ``shifted_logit_normal`` (official): ``s = sigmoid(n * std + shift(L))``, ``n ~ N(0, 1)``,
``std = 1``, where ``L`` is the target's token count and ``shift(L)`` the line through
``(1024, 0.95)`` and ``(4096, 2.05)``, not clamped (:func:`logit_normal_shift`); ``uniform``: ``s ~ U(0, 1)``.

**Optimizer.** AdamW (torch's defaults, weight decay 0.01) at lr 2e-4, ``LinearLR`` from factor 1.0
to 0.1 over the run's steps, gradient-norm clipping at 1.0; optimizer and scheduler go through
``accelerate.prepare`` as in the official ``_init_optimizer`` (so with N processes accelerate steps
the scheduler N times per optimizer step, as the official run did).

**Output.** The adapter in the official diffusers format, ``transformer.<module>.lora_A.weight`` /
``lora_B.weight`` (what ``get_peft_model_state_dict`` + ``save_lora_weights`` write), under the
release's file name, plus the ComfyUI copy ``comfy_<name>`` with ``diffusion_model.`` keys (the
official ``convert_checkpoint(to_comfy=True)``). With ``alpha == rank`` (official: 128 / 128) the
weights are saved as trained; with ``alpha != rank`` the scale ``alpha / rank`` is folded into
``lora_B`` because the files carry no alpha (loaders assume ``alpha = rank``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import Tensor, nn

from .aatf import NOISEMAP_FEATURE_SCALE, STAGE2_ADAPTER
from .errors import RestorerInputError
from .heatmap import STAGE1_ADAPTER
from .loading import STAGE1_LORA_FILE, STAGE2_LORA_FILE
from .pairs import atomic_torch_save
from .prompts import PromptEmbedding
from .sampler import pack_latents as pack

DEFAULT_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
DEFAULT_RANK = {"full": 128, "tiny": 4}
OFFICIAL_STEPS = {1: 7500, 2: 12010}
"""Optimizer steps of the official runs (``configs/stage1_infer.yaml``, ``configs/stage2_infer.yaml``)."""
FIRST_FRAME_CONDITIONING_P = 0.2
"""The official ``first_frame_conditioning_p`` of both stages."""
STAGE_ADAPTERS = {1: STAGE1_ADAPTER, 2: STAGE2_ADAPTER}
RELEASE_FILES = {1: STAGE1_LORA_FILE, 2: STAGE2_LORA_FILE}
STAGE_SEGMENTS = {1: ("reference", "target"), 2: ("reference", "target", "heatmap")}
"""Segment order of each stage's training sequence (official: ref + target [+ noisemap])."""
COMFY_PREFIX = "comfy_"
CHECKPOINTS_DIR = "checkpoints"
TRAINING_FPS = 24.0
"""Frame rate for latents that carry none (the official ``DEFAULT_FPS``)."""
_STEP_DIR = re.compile(r"^step-(\d+)$")

# LTX-Video-Trainer's ShiftedLogitNormalTimestepSampler: shift is linear in the sequence length.
SHIFT_MIN_TOKENS, SHIFT_MAX_TOKENS = 1024, 4096
SHIFT_AT_MIN, SHIFT_AT_MAX = 0.95, 2.05


@dataclass
class TrainConfig:
    """Train one ArtifactWorld LoRA adapter the way the official trainer does (stage 1 heatmap predictor or stage 2 restorer)."""

    stage: int
    """1 = heatmap predictor (LoRA1), 2 = heatmap-guided restorer (LoRA2)."""
    data: Path
    """Pairs folder written by aw-make-pairs with the same --preset."""
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
    """Save OUTPUT/checkpoints/step-N every this many steps (and at the end)."""
    resume: bool = False
    """Continue from the latest OUTPUT/checkpoints/step-N (adapter, optimizer, LR schedule, sampling state)."""
    seed: int = 42
    log_with: Literal["tensorboard", "wandb", "none"] = "tensorboard"
    device: str | None = None
    """'cpu' forces the CPU; otherwise accelerate picks the device (cuda:LOCAL_RANK when CUDA is there). The tiny preset uses cpu."""
    show_progress: bool = True


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

    @property
    def steps_per_second(self) -> float:
        done = self.end_step - self.start_step
        return done / self.seconds if self.seconds > 0 else 0.0


def total_steps(config: TrainConfig) -> int:
    """The run's optimizer steps: ``--steps`` or the official count for the stage."""
    return config.steps if config.steps is not None else OFFICIAL_STEPS.get(config.stage, 1)


# ---------------------------------------------------------------------------------------------- timesteps


def logit_normal_shift(tokens: int) -> float:
    """Mean of the logit-normal for a target of ``tokens`` tokens (LTX-Video-Trainer ``timestep_samplers.py``).

    The line through ``(1024, 0.95)`` and ``(4096, 2.05)``, extrapolated outside that range
    (e.g. 6630 tokens, 97 x 544 x 960, -> about 2.957).
    """
    slope = (SHIFT_AT_MAX - SHIFT_AT_MIN) / (SHIFT_MAX_TOKENS - SHIFT_MIN_TOKENS)
    return slope * tokens + SHIFT_AT_MIN - slope * SHIFT_MIN_TOKENS


def sample_sigma(mode: str, tokens: int, generator: torch.Generator, std: float = 1.0) -> float:
    """One flow-matching time ``s`` for a target of ``tokens`` tokens (see module doc)."""
    if mode == "uniform":
        return float(torch.rand((), generator=generator))
    n = float(torch.randn((), generator=generator))
    return float(torch.sigmoid(torch.tensor(n * std + logit_normal_shift(tokens), dtype=torch.float32)))


def draw_first_frame_conditioning(p: float, generator: torch.Generator) -> bool:
    """Whether this sample keeps its first target frame clean: ``p > 0`` and ``u < p``, ``u ~ U(0, 1)``."""
    return p > 0 and float(torch.rand((), generator=generator)) < p


# ---------------------------------------------------------------------------------------------- batches


@dataclass
class FlowBatch:
    """One training sequence: model inputs, the velocity target, which tokens condition, where the target is."""

    hidden: Tensor  # [1, segments * tokens, C]
    timesteps: Tensor  # [1, segments * tokens]: 0 on conditioning tokens, round(1000 s) elsewhere
    coords: Tensor  # [1, 3, segments * tokens]
    velocity: Tensor  # [1, tokens, C] = eps - z0 over the whole target segment
    conditioning: Tensor  # [1, segments * tokens] bool: True = clean conditioning token (no loss)
    target: slice
    sigma: float


def training_video_coords(frames: int, height: int, width: int, num_segments: int, fps: float = TRAINING_FPS) -> Tensor:
    """RoPE coordinates ``[1, 3, segments * F*H*W]`` as the official trainer builds them.

    Latent indices (frame, row, column) times ``(8 / fps, 32, 32)`` (``prepare_video_coordinates`` and
    ``get_rope_scale_factors``), repeated for every segment. Note: no causal ``8 f - 7`` frame offset, unlike
    the official inference pipeline.
    """
    f, h, w = torch.meshgrid(
        torch.arange(frames, dtype=torch.float32),
        torch.arange(height, dtype=torch.float32),
        torch.arange(width, dtype=torch.float32),
        indexing="ij",
    )
    one = torch.stack([f.flatten() * (8.0 / fps), h.flatten() * 32.0, w.flatten() * 32.0])
    return one.repeat(1, num_segments)[None]


def conditioning_mask(stage: int, tokens: int, frame_tokens: int, first_frame: bool) -> Tensor:
    """``[1, seq]`` bool: every context segment, plus the target's first latent frame when ``first_frame``.

    The first frame is masked only when it is not the whole target (official: ``h * w < seq_len``).
    """
    segments = STAGE_SEGMENTS[stage]
    parts = []
    for role in segments:
        part = torch.full((tokens,), role != "target", dtype=torch.bool)
        if role == "target" and first_frame and frame_tokens < tokens:
            part[:frame_tokens] = True
        parts.append(part)
    return torch.cat(parts)[None]


def build_flow_batch(
    stage: int,
    latents: dict,
    sigma: float,
    noise: Tensor,
    first_frame: bool = False,
    noisemap_feature_scale: float = NOISEMAP_FEATURE_SCALE,
) -> FlowBatch:
    """Assemble the stage's training sequence at time ``sigma`` (official ``prepare_batch``, see module doc).

    Args:
        latents: ``z_ref``, ``z_clean``, ``z_heatmap`` (``[1, C, F, h, w]`` each) and optionally ``fps``.
        noise: ``eps`` for the target, latent-shaped ``[1, C, F, h, w]`` or tokens ``[1, F*h*w, C]``.
        first_frame: keep the target's first latent frame clean (timestep 0, no loss).
    """
    if stage not in STAGE_SEGMENTS:
        raise RestorerInputError(f"--stage must be 1 (heatmap predictor) or 2 (AATF restorer), got {stage}.")
    _, _, frames, height, width = latents["z_ref"].shape
    z0 = pack(latents["z_heatmap" if stage == 1 else "z_clean"].float())
    noise = (pack(noise.float()) if noise.ndim == 5 else noise.float()).to(z0)
    tokens = z0.shape[1]
    segments = STAGE_SEGMENTS[stage]
    mask = conditioning_mask(stage, tokens, height * width, first_frame)
    target = slice(segments.index("target") * tokens, (segments.index("target") + 1) * tokens)
    keep_clean = mask[:, target, None]
    z_s = torch.where(keep_clean, z0, (1.0 - sigma) * z0 + sigma * noise)
    context = {"reference": pack(latents["z_ref"].float())}
    if stage == 2:
        context["heatmap"] = pack(latents["z_heatmap"].float()) * noisemap_feature_scale
    hidden = torch.cat([z_s if role == "target" else context[role] for role in segments], dim=1)
    step_value = float(round(sigma * 1000.0))  # official: torch.round(sigmas * 1000).long()
    timesteps = torch.where(mask, torch.zeros(()), torch.full((), step_value))
    fps = float(latents.get("fps", TRAINING_FPS))
    return FlowBatch(
        hidden=hidden,
        timesteps=timesteps,
        coords=training_video_coords(frames, height, width, len(segments), fps),
        velocity=noise - z0,
        conditioning=mask,
        target=target,
        sigma=float(sigma),
    )


def masked_flow_matching_loss(prediction: Tensor, batch: FlowBatch) -> Tensor:
    """Official ``compute_loss``: squared error on the target segment, conditioning tokens masked out,
    divided by the unmasked share of the target (i.e. the mean over the unmasked target tokens)."""
    error = (prediction[:, batch.target].float() - batch.velocity.to(prediction.device).float()).pow(2)
    keep = (~batch.conditioning[:, batch.target]).to(prediction.device).unsqueeze(-1).float()
    return error.mul(keep).div(keep.mean()).mean()


def predict_velocity(transformer: nn.Module, batch: FlowBatch, prompt: PromptEmbedding, device, dtype) -> Tensor:
    """The transformer's velocity prediction for the whole sequence ``[1, seq, C]``."""
    return transformer(
        hidden_states=batch.hidden.to(device, dtype),
        encoder_hidden_states=prompt.embeds.to(device, dtype),
        timestep=batch.timesteps.to(device, torch.float32),
        encoder_attention_mask=prompt.mask.to(device),
        video_coords=batch.coords.to(device),
        return_dict=False,
    )[0]


# ---------------------------------------------------------------------------------------------- adapters


def load_training_transformer(models, device, dtype) -> nn.Module:
    """The preset's frozen base transformer (the official base: 0.9.8-distilled 13B; tiny for tests)."""
    from .loading import load_transformer

    transformer = load_transformer(models.roots, dtype, models.transformer_source, models.transformer_config)
    return transformer.requires_grad_(False).eval().to(device)


def lora_target_names(transformer: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """Linear layers whose name equals or ends with ``.<target>`` (peft's matching), in model order."""
    names = [
        name
        for name, module in transformer.named_modules()
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)
    ]
    if not names:
        raise RestorerInputError(
            f"The LoRA target modules {', '.join(targets)} match no linear layer of the transformer."
        )
    return names


def check_rank(transformer: nn.Module, names: list[str], rank: int) -> None:
    """One sentence unless ``1 <= rank <= min(in, out)`` of every target layer."""
    smallest = min(names, key=lambda n: min(transformer.get_submodule(n).in_features, transformer.get_submodule(n).out_features))
    layer = transformer.get_submodule(smallest)
    limit = min(layer.in_features, layer.out_features)
    if not 1 <= rank <= limit:
        raise RestorerInputError(
            f"LoRA rank {rank} does not fit: target {smallest} is a {layer.in_features}->{layer.out_features} "
            f"linear layer, so the rank must be between 1 and {limit}."
        )


def add_trainable_lora(transformer: nn.Module, adapter: str, rank: int, alpha: float, targets: tuple[str, ...]) -> list[nn.Parameter]:
    """Inject a fresh peft LoRA (official init: kaiming ``lora_A``, ``lora_B = 0``, no dropout); return its float32 parameters."""
    from peft import LoraConfig, inject_adapter_in_model

    names = lora_target_names(transformer, targets)
    check_rank(transformer, names, rank)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=names, lora_dropout=0.0, init_lora_weights=True)
    inject_adapter_in_model(config, transformer, adapter_name=adapter)
    transformer.requires_grad_(False)
    params = []
    for _, module in _lora_layers(transformer, adapter):
        for layer in (module.lora_A[adapter], module.lora_B[adapter]):
            layer.float()
            layer.weight.requires_grad_(True)
            params.append(layer.weight)
    return params


def _lora_layers(transformer: nn.Module, adapter: str):
    for name, module in transformer.named_modules():
        if hasattr(module, "lora_A") and isinstance(module.lora_A, nn.ModuleDict) and adapter in module.lora_A:
            yield name, module


def adapter_state_dict(transformer: nn.Module, adapter: str, release: bool = True) -> dict[str, Tensor]:
    """The adapter's weights.

    ``release``: the official diffusers keys ``transformer.<module>.lora_A/B.weight``; ``lora_B`` is
    multiplied by ``alpha / rank`` only when that is not 1 (the files carry no alpha). Otherwise the
    raw peft weights under bare module names (checkpoints).
    """
    state = {}
    prefix = "transformer." if release else ""
    for name, module in _lora_layers(transformer, adapter):
        scale = float(module.scaling[adapter]) if release else 1.0
        up = module.lora_B[adapter].weight.detach().float().cpu()
        state[f"{prefix}{name}.lora_A.weight"] = module.lora_A[adapter].weight.detach().float().cpu().contiguous()
        state[f"{prefix}{name}.lora_B.weight"] = (up * scale if scale != 1.0 else up).contiguous()
    return state


def comfy_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The ComfyUI copy of a diffusers-format adapter: ``transformer.`` -> ``diffusion_model.`` (official ``convert_checkpoint``)."""
    return {("diffusion_model." + k[len("transformer."):] if k.startswith("transformer.") else k): v for k, v in state.items()}


def comfy_path_for(adapter_path: Path) -> Path:
    """``comfy_<name>`` next to the adapter, as the official trainer names its ComfyUI copy."""
    return adapter_path.with_name(COMFY_PREFIX + adapter_path.name)


def save_release_adapter(transformer: nn.Module, adapter: str, path: Path) -> Path:
    """Write the diffusers-format adapter to ``path`` and its ComfyUI copy next to it; return the copy's path."""
    state = adapter_state_dict(transformer, adapter, release=True)
    _save_file_atomic(state, path)
    comfy = comfy_path_for(path)
    _save_file_atomic(comfy_state_dict(state), comfy)
    return comfy


def load_raw_adapter(transformer: nn.Module, adapter: str, state: dict[str, Tensor], source: str) -> None:
    layers = dict(_lora_layers(transformer, adapter))
    expected = {f"{n}.lora_{ab}.weight" for n in layers for ab in ("A", "B")}
    if set(state) != expected:
        raise RestorerInputError(f"The checkpoint {source} was saved with other LoRA targets or rank than this run uses.")
    with torch.no_grad():
        for name, module in layers.items():
            for ab, holder in (("A", module.lora_A), ("B", module.lora_B)):
                value = state[f"{name}.lora_{ab}.weight"]
                if value.shape != holder[adapter].weight.shape:
                    raise RestorerInputError(f"The checkpoint {source} has LoRA rank {value.shape} where this run needs {tuple(holder[adapter].weight.shape)}.")
                holder[adapter].weight.copy_(value)


# ---------------------------------------------------------------------------------------------- optimizer


def make_lr_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps: int):
    """Official ``_create_scheduler`` for ``linear``: ``LinearLR(1.0 -> end_factor, total_iters=steps)``; None for constant."""
    if config.lr_schedule == "constant":
        return None
    return torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=config.lr_end_factor, total_iters=steps)


# ---------------------------------------------------------------------------------------------- checkpoints


def latest_checkpoint(output_dir: Path) -> Path | None:
    folder = Path(output_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return None
    found = [(int(m[1]), p) for p in folder.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / "state.json").exists()]
    return max(found)[1] if found else None


def _save_file_atomic(state: dict[str, Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def config_dict(config: TrainConfig, **extra) -> dict:
    data = {k: (str(v) if isinstance(v, Path) else (list(v) if isinstance(v, tuple) else v)) for k, v in asdict(config).items()}
    data.update(extra)
    return data


def save_sampling_state(folder: Path, process_index: int, generator: torch.Generator, pending: list[int]) -> None:
    """Each process's data/noise sampling state (its generator and the epoch's pairs it has not used yet)."""
    atomic_torch_save({"generator": generator.get_state(), "pending": list(pending)}, folder / f"sampling-rank{process_index}.pt")


def save_checkpoint(output_dir: Path, step: int, transformer: nn.Module, adapter: str, optimizer, scheduler, config: TrainConfig) -> Path:
    """``step-N/``: raw adapter weights, optimizer and LR-scheduler state, and ``state.json`` (written last: marks it complete)."""
    folder = Path(output_dir) / CHECKPOINTS_DIR / f"step-{step}"
    folder.mkdir(parents=True, exist_ok=True)
    _save_file_atomic(adapter_state_dict(transformer, adapter, release=False), folder / "adapter.safetensors")
    atomic_torch_save(optimizer.state_dict(), folder / "optimizer.pt")
    atomic_torch_save(scheduler.state_dict() if scheduler is not None else None, folder / "scheduler.pt")
    (folder / "state.json").write_text(json.dumps(config_dict(config, global_step=step), indent=2) + "\n")
    return folder


def load_checkpoint_state(ckpt: Path, optimizer, scheduler) -> int:
    """Restore optimizer and LR-scheduler state from ``step-N/``; return N."""
    if not (ckpt / "scheduler.pt").exists():
        raise RestorerInputError(
            f"The checkpoint {ckpt} has no scheduler.pt (it predates the official LR schedule); start a new run "
            "in another --output-dir."
        )
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=False))
    state = torch.load(ckpt / "scheduler.pt", map_location="cpu", weights_only=False)
    if scheduler is not None and state is not None:
        scheduler.load_state_dict(state)
    return int(json.loads((ckpt / "state.json").read_text())["global_step"])


# ---------------------------------------------------------------------------------------------- training


def validate_config(config: TrainConfig) -> None:
    """One sentence per bad setting (checked before anything is loaded)."""
    if config.stage not in (1, 2):
        raise RestorerInputError(f"--stage must be 1 (heatmap predictor) or 2 (AATF restorer), got {config.stage}.")
    if config.steps is not None and config.steps < 1:
        raise RestorerInputError(f"--steps must be at least 1, got {config.steps}.")
    if config.rank is not None and config.rank < 1:
        raise RestorerInputError(f"LoRA rank {config.rank} does not fit: the rank must be at least 1.")
    if config.gradient_accumulation_steps < 1 or config.checkpoint_every < 1:
        raise RestorerInputError("--gradient-accumulation-steps and --checkpoint-every must be at least 1.")
    if config.learning_rate <= 0:
        raise RestorerInputError(f"--learning-rate must be positive, got {config.learning_rate}.")
    if not 0 < config.lr_end_factor <= 1:
        raise RestorerInputError(f"--lr-end-factor must be in (0, 1], got {config.lr_end_factor}.")
    if config.logit_std <= 0:
        raise RestorerInputError(f"--logit-std must be positive, got {config.logit_std}.")
    if not 0 <= config.first_frame_conditioning_p <= 1:
        raise RestorerInputError(f"--first-frame-conditioning-p must be between 0 and 1, got {config.first_frame_conditioning_p}.")
    if config.noisemap_feature_scale < 0:
        raise RestorerInputError(f"--noisemap-feature-scale must not be negative, got {config.noisemap_feature_scale}.")


def peak_memory_bytes(device: torch.device) -> int:
    """Peak CUDA memory allocated on ``device``, or the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class _Logger:
    def __init__(self, kind: str, folder: Path, config: TrainConfig, enabled: bool) -> None:
        self.writer = None
        self.wandb = None
        if not enabled or kind == "none":
            return
        if kind == "wandb":
            try:
                import wandb
            except ImportError:
                raise RestorerInputError("--log-with wandb needs the wandb package; install it or use --log-with tensorboard.") from None
            self.wandb = wandb.init(project="artifactworld-lora", config=config_dict(config), dir=str(folder))
        else:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder / "logs"))

    def log(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def train(config: TrainConfig, console=None, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train the stage's adapter; return where it was written and the per-step losses of this run."""
    from accelerate import Accelerator

    from .pairs import open_pairs, prompt_embeddings, resolve_preset

    validate_config(config)
    steps = total_steps(config)
    dataset = open_pairs(config.data, preset=config.preset)
    models = resolve_preset(config.preset)
    rank = config.rank or DEFAULT_RANK[config.preset]
    alpha = float(config.alpha if config.alpha is not None else rank)
    adapter = STAGE_ADAPTERS[config.stage]

    device_name = config.device or models.device
    cpu = device_name == "cpu" or not torch.cuda.is_available()
    mixed = config.mixed_precision if config.mixed_precision != "auto" else ("no" if cpu else "bf16")
    accelerator = Accelerator(mixed_precision=mixed, cpu=cpu)
    device = accelerator.device
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed, torch.float32)

    transformer = load_training_transformer(models, device, dtype)
    prompts = dataset.prompts or prompt_embeddings(models, device)
    prompt = prompts[adapter]
    params = add_trainable_lora(transformer, adapter, rank, alpha, tuple(config.target_modules))
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    lr_scheduler = make_lr_scheduler(optimizer, config, steps)
    generator = torch.Generator().manual_seed(config.seed + 1000 * accelerator.process_index)

    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    start = 0
    indices: list[int] = []  # this epoch's pairs not yet used (this process's shard)
    if config.resume and (ckpt := latest_checkpoint(output_dir)) is not None:
        from safetensors.torch import load_file

        load_raw_adapter(transformer, adapter, load_file(str(ckpt / "adapter.safetensors")), str(ckpt))
        start = load_checkpoint_state(ckpt, optimizer, lr_scheduler)
        sampling = ckpt / f"sampling-rank{accelerator.process_index}.pt"
        if sampling.exists():  # absent when resuming with more processes than before: fresh sampling state
            state = torch.load(sampling, map_location="cpu", weights_only=False)
            generator.set_state(state["generator"])
            indices.extend(i for i in state["pending"] if i < len(dataset))
    if lr_scheduler is not None:
        model, optimizer, scheduler = accelerator.prepare(transformer, optimizer, lr_scheduler)
    else:
        (model, optimizer), scheduler = accelerator.prepare(transformer, optimizer), None

    logger = _Logger(config.log_with, output_dir, config, accelerator.is_main_process)
    losses: list[float] = []
    adapter_path = output_dir / RELEASE_FILES[config.stage]
    result = TrainResult(adapter_path, output_dir / f"{adapter_path.stem}.json", start, start)

    def next_item() -> dict:
        if not indices:
            order = torch.randperm(len(dataset), generator=generator).tolist()
            indices.extend(order[accelerator.process_index :: accelerator.num_processes] or order[:1])
        return dataset[indices.pop(0)]

    def micro_step(scale: float) -> float:
        latents = next_item()
        tokens = math.prod(latents["z_ref"].shape[2:])
        first_frame = draw_first_frame_conditioning(config.first_frame_conditioning_p, generator)
        sigma = sample_sigma(config.timestep_sampling, tokens, generator, config.logit_std)
        noise = torch.randn((1, tokens, latents["z_ref"].shape[1]), generator=generator)
        batch = build_flow_batch(config.stage, latents, sigma, noise, first_frame, config.noisemap_feature_scale)
        with accelerator.autocast():
            prediction = predict_velocity(model, batch, prompt, device, dtype)
            loss = masked_flow_matching_loss(prediction, batch)
        accelerator.backward(loss * scale)
        return float(loss.detach())

    progress_cm = contextlib.nullcontext(None)
    if config.show_progress and accelerator.is_main_process and start < steps:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        label = "[tiny preset: UNTRAINED backbone] " if models.untrained else ""
        progress_cm = Progress(
            TextColumn(f"{label}stage {config.stage} LoRA"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        )
    began = time.perf_counter()
    step = start
    try:
        with progress_cm as progress:
            task = progress.add_task("train", total=steps, completed=start, loss="-") if progress else None
            while step < steps:
                accum = config.gradient_accumulation_steps
                total = 0.0
                for micro in range(accum):
                    sync = contextlib.nullcontext() if micro == accum - 1 else accelerator.no_sync(model)
                    with sync:
                        total += micro_step(1.0 / accum) / accum
                grad_norm = accelerator.clip_grad_norm_(params, config.max_grad_norm) if config.max_grad_norm > 0 else torch.zeros(())
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                losses.append(total)
                lr = float(optimizer.param_groups[0]["lr"])
                logger.log({"train/loss": total, "train/grad_norm": float(grad_norm), "train/lr": lr}, step)
                if on_step is not None:
                    on_step(step, total)
                if progress:
                    progress.update(task, completed=step, loss=f"{total:.4f}")
                if step % config.checkpoint_every == 0 or step == steps:
                    folder = output_dir / CHECKPOINTS_DIR / f"step-{step}"
                    save_sampling_state(folder, accelerator.process_index, generator, indices)
                    accelerator.wait_for_everyone()
                    if accelerator.is_main_process:
                        save_checkpoint(output_dir, step, accelerator.unwrap_model(model), adapter, optimizer, scheduler, config)
    finally:
        logger.close()
    result.seconds = time.perf_counter() - began
    result.end_step = step
    result.losses = losses
    result.peak_memory_bytes = peak_memory_bytes(device)

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        result.comfy_path = save_release_adapter(accelerator.unwrap_model(model), adapter, result.adapter_path)
        info = config_dict(
            config, steps=steps, rank=rank, alpha=alpha, adapter=adapter, global_step=step,
            release_file=result.adapter_path.name, comfy_file=result.comfy_path.name,
            key_format="diffusers (transformer.<module>.lora_A/lora_B.weight); ComfyUI copy with diffusion_model. keys"
            + ("" if alpha == rank else f"; alpha/rank = {alpha / rank:g} folded into lora_B"),
            backbone=f"{models.transformer_source} ({models.transformer_config})", untrained_backbone=models.untrained,
            pairs_meta=dataset.meta, final_loss=losses[-1] if losses else None,
            steps_per_second=result.steps_per_second, peak_memory_bytes=result.peak_memory_bytes,
        )
        tmp = result.config_path.with_name(f".{result.config_path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, result.config_path)
    else:
        result.comfy_path = comfy_path_for(result.adapter_path)
    return result


@torch.no_grad()
def evaluate_loss(
    transformer: nn.Module, stage: int, items: list[dict], prompt: PromptEmbedding,
    sigmas: tuple[float, ...] = (0.2, 0.5, 0.8), seed: int = 0, noisemap_feature_scale: float = NOISEMAP_FEATURE_SCALE,
) -> float:
    """Mean masked flow-matching loss over fixed ``sigmas`` and fixed noise, no first-frame conditioning (a deterministic yardstick)."""
    param = next(transformer.parameters())
    generator = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for latents in items:
        for sigma in sigmas:
            noise = torch.randn(latents["z_ref"].shape, generator=generator)
            batch = build_flow_batch(stage, latents, sigma, noise, noisemap_feature_scale=noisemap_feature_scale)
            prediction = predict_velocity(transformer, batch, prompt, param.device, param.dtype)
            total += float(masked_flow_matching_loss(prediction, batch))
            count += 1
    return total / count
