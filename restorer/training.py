"""Training the two LoRA adapters with masked flow matching (paper Sec. 4.3, Eq. 3).

Both stages train a peft LoRA on the frozen LTX transformer, on the same token sequences the
restorer samples from (:mod:`restorer.heatmap`, :mod:`restorer.aatf`):

* **stage 1** (LoRA1, heatmap predictor): ``[z_ref, z_hm_s]``, per-token timesteps ``[0, s]``;
  the target ``z0`` is the pseudo-GT heatmap latent;
* **stage 2** (LoRA2, AATF restorer): ``[z_ref, z_target_s, z~hm(s)]``, timesteps ``[0, s, 0]``;
  the target ``z0`` is the clean video latent and the heatmap context is blended from
  ``z_full`` / ``z_hm`` / ``z_null`` with the weights inference uses at the same ``s``
  (:func:`heatmap_weights_at`).

**Masked flow matching (Eq. 3).** With ``eps ~ N(0, I)`` only the target tokens are noised,
``z_s = (1 - s) z0 + s eps``; the model sees timestep ``1000 s`` on them and 0 on the clean
context, and the loss is the MSE between the predicted velocity on the *target slice only* and
``eps - z0`` (:func:`masked_flow_matching_loss`). All segments share the target's RoPE coordinates.

**Sampling s.** ``logit_normal`` (default, as LTX-Video training does): ``s = sigmoid(m + d n)``,
``n ~ N(0, 1)`` (``m = 0, d = 1``), optionally time-shifted ``s <- k s / (1 + (k - 1) s)``
(``--shift k``, 1 = off); ``uniform``: ``s ~ U(0, 1)`` with the same shift.

**Stage-2 heatmap at s.** The preset's heatmap schedule (the paper's 8-step blend table unless
``--decay-thresholds`` gives Eq. 2's tau form) is evaluated as inference does: the scheduler's
sigmas for ``--inference-steps`` steps split ``(0, 1]`` into intervals ``(sigma_{i+1}, sigma_i]``;
an ``s`` in interval ``i`` gets step ``i``'s weights (the tau form uses ``s`` itself).

Saved adapters use the release's names and diffusers key format
(``transformer.<module>.lora_A.weight`` / ``lora_B.weight``) with the LoRA scale ``alpha / rank``
folded into ``lora_B``, so :func:`restorer.lora.load_lora_adapter` (which assumes ``alpha = rank``
when a file has no ``.alpha`` entries) reproduces the trained layers exactly.
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
import torch.nn.functional as F
from torch import Tensor, nn

from restorer.aatf import (
    PAPER_BEST_SCHEDULE,
    STAGE2_ADAPTER,
    STAGE2_ROLES,
    BlendTable,
    BlendWeights,
    HeatmapSchedule,
    PiecewiseDecay,
    blend_heatmap_latent,
)
from restorer.errors import RestorerInputError
from restorer.heatmap import STAGE1_ADAPTER, STAGE1_ROLES
from restorer.loading import STAGE1_LORA_FILE, STAGE2_LORA_FILE, load_backbone
from restorer.prompts import PromptEmbedding
from restorer.sampler import TARGET, flow_sigmas, latent_video_coords, pack_latents, sequence_coords, sequence_timesteps

DEFAULT_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
DEFAULT_RANK = {"full": 128, "tiny": 4}
STAGE_ADAPTERS = {1: STAGE1_ADAPTER, 2: STAGE2_ADAPTER}
RELEASE_FILES = {1: STAGE1_LORA_FILE, 2: STAGE2_LORA_FILE}
CHECKPOINTS_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class TrainConfig:
    """Train one ArtifactWorld LoRA adapter (stage 1 heatmap predictor or stage 2 AATF restorer)."""

    stage: int
    """1 = heatmap predictor (LoRA1), 2 = heatmap-guided restorer (LoRA2)."""
    data: Path
    """Pairs folder written by aw-make-pairs with the same --preset."""
    output_dir: Path
    """Where the adapter, its JSON config, checkpoints/ and logs/ go."""
    preset: Literal["tiny", "full"] = "full"
    """Backbone: 'full' = LTX-Video 0.9.7-dev 13B; 'tiny' = the untrained random-init model (tests, smoke runs)."""
    steps: int = 2000
    """Optimizer steps in total (a resumed run continues up to this number)."""
    rank: int | None = None
    """LoRA rank (default 128 for full, 4 for tiny)."""
    alpha: float | None = None
    """LoRA alpha (default: the rank, i.e. scale 1)."""
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    """Linear layers that get the adapter, matched by name suffix as peft does."""
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    """Micro-batches (one pair each) per optimizer step."""
    gradient_checkpointing: bool = True
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """'auto' = bf16 on CUDA, none on CPU (frozen backbone in bf16, LoRA weights in float32)."""
    timestep_sampling: Literal["logit_normal", "uniform"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0
    """Time shift k applied to sampled s (s <- k s / (1 + (k - 1) s)); 1 = none."""
    decay_thresholds: tuple[float, float] | None = None
    """Stage 2: Eq. 2's (tau1, tau2) instead of the preset's blend table."""
    inference_steps: int | None = None
    """Stage 2: steps of the inference schedule the heatmap blend follows (default: the preset's)."""
    checkpoint_every: int = 500
    """Save OUTPUT/checkpoints/step-N every this many steps (and at the end)."""
    resume: bool = False
    """Continue from the latest OUTPUT/checkpoints/step-N."""
    seed: int = 0
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

    @property
    def steps_per_second(self) -> float:
        done = self.end_step - self.start_step
        return done / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------------------------- loss


@dataclass
class FlowBatch:
    """One training sequence: model inputs, the velocity target and where the target tokens are."""

    hidden: Tensor  # [1, segments * tokens, C]
    timesteps: Tensor  # [1, segments * tokens]
    coords: Tensor  # [1, 3, segments * tokens]
    velocity: Tensor  # [1, tokens, C] = eps - z0
    target: slice


def sample_sigma(config: TrainConfig, generator: torch.Generator) -> float:
    """One flow-matching time ``s`` in ``(0, 1)`` (see module doc)."""
    if config.timestep_sampling == "uniform":
        s = float(torch.rand((), generator=generator))
    else:
        n = float(torch.randn((), generator=generator))
        s = 1.0 / (1.0 + math.exp(-(config.logit_mean + config.logit_std * n)))
    k = config.shift
    s = k * s / (1.0 + (k - 1.0) * s)
    return min(max(s, 1e-4), 1.0 - 1e-4)


def heatmap_weights_at(schedule: HeatmapSchedule, sigmas: Tensor, sigma: float) -> BlendWeights:
    """The stage-2 blend weights inference uses at time ``sigma`` (the step whose interval holds it)."""
    num_steps = len(sigmas) - 1
    step = int((sigmas[1:num_steps] >= sigma).sum())
    return schedule.weights(min(step, num_steps - 1), num_steps, sigma)


def build_flow_batch(
    stage: int,
    latents: dict[str, Tensor],
    sigma: float,
    noise: Tensor,
    heatmap_weights: BlendWeights | None = None,
    frame_rate: float = 25.0,
) -> FlowBatch:
    """Assemble the stage's sequence with the target noised to ``sigma`` and the context clean (timestep 0)."""
    _, _, frames, height, width = latents["z_ref"].shape
    z0 = pack_latents(latents["z_heatmap" if stage == 1 else "z_clean"].float())
    noise = (pack_latents(noise.float()) if noise.ndim == 5 else noise).to(z0)  # latent-shaped or already tokens
    context = {"reference": pack_latents(latents["z_ref"].float())}
    if stage == 1:
        roles = STAGE1_ROLES
    else:
        roles = STAGE2_ROLES
        if heatmap_weights is None:
            raise ValueError("stage 2 needs the heatmap blend weights at sigma")
        context["heatmap"] = blend_heatmap_latent(
            heatmap_weights, *(pack_latents(latents[k].float()) for k in ("z_full", "z_heatmap", "z_null"))
        )
    tokens = z0.shape[1]
    z_s = (1.0 - sigma) * z0 + sigma * noise
    hidden = torch.cat([z_s if role == TARGET else context[role] for role in roles], dim=1)
    index = list(roles).index(TARGET)
    return FlowBatch(
        hidden=hidden,
        timesteps=sequence_timesteps(roles, tokens, sigma),
        coords=sequence_coords(latent_video_coords(frames, height, width, frame_rate=frame_rate), len(roles)),
        velocity=noise - z0,
        target=slice(index * tokens, (index + 1) * tokens),
    )


def masked_flow_matching_loss(prediction: Tensor, batch: FlowBatch) -> Tensor:
    """Eq. 3: MSE between the predicted velocity on the target slice and ``eps - z0``; other tokens are ignored."""
    return F.mse_loss(prediction[:, batch.target].float(), batch.velocity.to(prediction.device).float())


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
    """Inject a fresh peft LoRA (``lora_B = 0``, so it starts as the bare backbone); return its float32 parameters."""
    from peft import LoraConfig, inject_adapter_in_model

    names = lora_target_names(transformer, targets)
    check_rank(transformer, names, rank)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=names, lora_dropout=0.0, init_lora_weights=True)
    inject_adapter_in_model(config, transformer, adapter_name=adapter)
    transformer.requires_grad_(False)
    params = []
    for module in transformer.modules():
        if hasattr(module, "lora_A") and isinstance(module.lora_A, nn.ModuleDict) and adapter in module.lora_A:
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
    """The adapter's weights. ``release``: diffusers keys (``transformer.`` prefix) with ``alpha / r`` folded
    into ``lora_B``; otherwise the raw peft weights (checkpoints)."""
    state = {}
    prefix = "transformer." if release else ""
    for name, module in _lora_layers(transformer, adapter):
        scale = float(module.scaling[adapter]) if release else 1.0
        state[f"{prefix}{name}.lora_A.weight"] = module.lora_A[adapter].weight.detach().float().cpu().contiguous()
        state[f"{prefix}{name}.lora_B.weight"] = (module.lora_B[adapter].weight.detach().float().cpu() * scale).contiguous()
    return state


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
    save_file(state, str(tmp))
    os.replace(tmp, path)


def config_dict(config: TrainConfig, **extra) -> dict:
    data = {k: (str(v) if isinstance(v, Path) else (list(v) if isinstance(v, tuple) else v)) for k, v in asdict(config).items()}
    data.update(extra)
    return data


def save_sampling_state(folder: Path, process_index: int, generator: torch.Generator, pending: list[int]) -> None:
    """Each process's data/noise sampling state (its generator and the epoch's pairs it has not used yet)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"sampling-rank{process_index}.pt"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"generator": generator.get_state(), "pending": list(pending)}, tmp)
    os.replace(tmp, path)


def save_checkpoint(output_dir: Path, step: int, transformer: nn.Module, adapter: str, optimizer, config: TrainConfig) -> Path:
    """``step-N/``: raw adapter weights, optimizer state, and ``state.json`` (written last: marks it complete)."""
    folder = Path(output_dir) / CHECKPOINTS_DIR / f"step-{step}"
    folder.mkdir(parents=True, exist_ok=True)
    _save_file_atomic(adapter_state_dict(transformer, adapter, release=False), folder / "adapter.safetensors")
    tmp = folder / f".optimizer.pt.tmp-{os.getpid()}"
    torch.save(optimizer.state_dict(), tmp)
    os.replace(tmp, folder / "optimizer.pt")
    (folder / "state.json").write_text(json.dumps(config_dict(config, global_step=step), indent=2) + "\n")
    return folder


# ---------------------------------------------------------------------------------------------- training


def validate_config(config: TrainConfig) -> None:
    """One sentence per bad setting (checked before anything is loaded)."""
    if config.stage not in (1, 2):
        raise RestorerInputError(f"--stage must be 1 (heatmap predictor) or 2 (AATF restorer), got {config.stage}.")
    if config.steps < 1:
        raise RestorerInputError(f"--steps must be at least 1, got {config.steps}.")
    if config.rank is not None and config.rank < 1:
        raise RestorerInputError(f"LoRA rank {config.rank} does not fit: the rank must be at least 1.")
    if config.gradient_accumulation_steps < 1 or config.checkpoint_every < 1:
        raise RestorerInputError("--gradient-accumulation-steps and --checkpoint-every must be at least 1.")
    if config.learning_rate <= 0:
        raise RestorerInputError(f"--learning-rate must be positive, got {config.learning_rate}.")
    if config.shift <= 0:
        raise RestorerInputError(f"--shift must be positive, got {config.shift}.")


def stage2_schedule(config: TrainConfig, preset_name: str) -> tuple[HeatmapSchedule, int]:
    """The heatmap schedule stage-2 training follows and its inference step count (the preset's unless overridden)."""
    from method_configs.restorer_presets import get_preset

    preset = get_preset(preset_name)
    steps = config.inference_steps or preset.num_inference_steps
    if config.decay_thresholds is not None:
        return PiecewiseDecay(*config.decay_thresholds), steps
    if preset.decay_thresholds is not None:
        return PiecewiseDecay(*preset.decay_thresholds), steps
    table = BlendTable(tuple(tuple(r) for r in preset.blend_table)) if preset.blend_table is not None else PAPER_BEST_SCHEDULE
    if len(table.rows) != steps:
        raise RestorerInputError(
            f"The heatmap blend table has {len(table.rows)} rows but --inference-steps is {steps}; "
            "give matching steps or --decay-thresholds."
        )
    return table, steps


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

    from restorer.pairs import open_pairs, prompt_embeddings, resolve_preset

    validate_config(config)
    dataset = open_pairs(config.data, preset=config.preset)
    models = resolve_preset(config.preset)
    rank = config.rank or DEFAULT_RANK[config.preset]
    alpha = float(config.alpha if config.alpha is not None else rank)
    adapter = STAGE_ADAPTERS[config.stage]
    if config.stage == 2:
        schedule, inference_steps = stage2_schedule(config, config.preset)

    device_name = config.device or models.device
    cpu = device_name == "cpu" or not torch.cuda.is_available()
    mixed = config.mixed_precision if config.mixed_precision != "auto" else ("no" if cpu else "bf16")
    accelerator = Accelerator(mixed_precision=mixed, cpu=cpu)
    device = accelerator.device
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed, torch.float32)

    backbone = load_backbone(models.roots, device, dtype)
    transformer, scheduler = backbone.transformer, backbone.scheduler
    del backbone
    prompts = dataset.prompts or prompt_embeddings(models, device)
    prompt = prompts[adapter]
    params = add_trainable_lora(transformer, adapter, rank, alpha, tuple(config.target_modules))
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed + 1000 * accelerator.process_index)

    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    start = 0
    indices: list[int] = []  # this epoch's pairs not yet used (this process's shard)
    if config.resume and (ckpt := latest_checkpoint(output_dir)) is not None:
        from safetensors.torch import load_file

        load_raw_adapter(transformer, adapter, load_file(str(ckpt / "adapter.safetensors")), str(ckpt))
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=False))
        sampling = ckpt / f"sampling-rank{accelerator.process_index}.pt"
        if sampling.exists():  # absent when resuming with more processes than before: fresh sampling state
            state = torch.load(sampling, map_location="cpu", weights_only=False)
            generator.set_state(state["generator"])
            indices.extend(i for i in state["pending"] if i < len(dataset))
        start = int(json.loads((ckpt / "state.json").read_text())["global_step"])
    model, optimizer = accelerator.prepare(transformer, optimizer)

    logger = _Logger(config.log_with, output_dir, config, accelerator.is_main_process)
    sigmas_cache: dict[int, Tensor] = {}
    losses: list[float] = []
    result = TrainResult(output_dir / RELEASE_FILES[config.stage], output_dir / f"{Path(RELEASE_FILES[config.stage]).stem}.json", start, start)

    def next_item() -> dict[str, Tensor]:
        if not indices:
            order = torch.randperm(len(dataset), generator=generator).tolist()
            indices.extend(order[accelerator.process_index :: accelerator.num_processes] or order[:1])
        return dataset[indices.pop(0)]

    def micro_step(scale: float) -> float:
        latents = next_item()
        sigma = sample_sigma(config, generator)
        noise = torch.randn(latents["z_ref"].shape, generator=generator)
        weights = None
        if config.stage == 2:
            tokens = math.prod(latents["z_ref"].shape[2:])
            if tokens not in sigmas_cache:
                sigmas_cache[tokens] = flow_sigmas(scheduler, inference_steps, tokens)
            weights = heatmap_weights_at(schedule, sigmas_cache[tokens], sigma)
        batch = build_flow_batch(config.stage, latents, sigma, noise, weights, models.frame_rate)
        with accelerator.autocast():
            prediction = predict_velocity(model, batch, prompt, device, dtype)
            loss = masked_flow_matching_loss(prediction, batch)
        accelerator.backward(loss * scale)
        return float(loss.detach())

    progress_cm = contextlib.nullcontext(None)
    if config.show_progress and accelerator.is_main_process and start < config.steps:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        label = "[tiny preset: UNTRAINED backbone] " if models.untrained else ""
        progress_cm = Progress(
            TextColumn(f"{label}stage {config.stage} LoRA"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        )
    began = time.perf_counter()
    step = start
    try:
        with progress_cm as progress:
            task = progress.add_task("train", total=config.steps, completed=start, loss="-") if progress else None
            while step < config.steps:
                accum = config.gradient_accumulation_steps
                total = 0.0
                for micro in range(accum):
                    sync = contextlib.nullcontext() if micro == accum - 1 else accelerator.no_sync(model)
                    with sync:
                        total += micro_step(1.0 / accum) / accum
                grad_norm = accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                losses.append(total)
                logger.log({"train/loss": total, "train/grad_norm": float(grad_norm), "train/lr": config.learning_rate}, step)
                if on_step is not None:
                    on_step(step, total)
                if progress:
                    progress.update(task, completed=step, loss=f"{total:.4f}")
                if step % config.checkpoint_every == 0 or step == config.steps:
                    folder = output_dir / CHECKPOINTS_DIR / f"step-{step}"
                    save_sampling_state(folder, accelerator.process_index, generator, indices)
                    accelerator.wait_for_everyone()
                    if accelerator.is_main_process:
                        save_checkpoint(output_dir, step, accelerator.unwrap_model(model), adapter, optimizer, config)
    finally:
        logger.close()
    result.seconds = time.perf_counter() - began
    result.end_step = step
    result.losses = losses
    result.peak_memory_bytes = peak_memory_bytes(device)

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save_file_atomic(adapter_state_dict(accelerator.unwrap_model(model), adapter, release=True), result.adapter_path)
        info = config_dict(
            config, rank=rank, alpha=alpha, adapter=adapter, global_step=step, release_file=result.adapter_path.name,
            key_format="diffusers (transformer.<module>.lora_A/lora_B.weight, alpha/rank folded into lora_B)",
            backbone=str(models.roots.ltx_097_dev), untrained_backbone=models.untrained, pairs_meta=dataset.meta,
            final_loss=losses[-1] if losses else None, steps_per_second=result.steps_per_second,
            peak_memory_bytes=result.peak_memory_bytes,
        )
        tmp = result.config_path.with_name(f".{result.config_path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, result.config_path)
    return result


@torch.no_grad()
def evaluate_loss(
    transformer: nn.Module, stage: int, items: list[dict[str, Tensor]], prompt: PromptEmbedding,
    sigmas: tuple[float, ...] = (0.2, 0.5, 0.8), seed: int = 0, heatmap_weights: BlendWeights = (0.0, 1.0, 0.0),
) -> float:
    """Mean masked flow-matching loss over fixed ``sigmas`` and fixed noise (a deterministic yardstick)."""
    param = next(transformer.parameters())
    generator = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for latents in items:
        for sigma in sigmas:
            noise = torch.randn(latents["z_ref"].shape, generator=generator)
            batch = build_flow_batch(stage, latents, sigma, noise, heatmap_weights)
            prediction = predict_velocity(transformer, batch, prompt, param.device, param.dtype)
            total += float(masked_flow_matching_loss(prediction, batch))
            count += 1
    return total / count
