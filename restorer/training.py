"""Training the two LoRA adapters as the official trainer does (paper Sec. 4.3, Eq. 3).

Our own implementation of the behaviour of the official ArtifactWorld trainer (repository
``fyting/ArtifactWorld`` at commit ``9250e92``: ``stages/stage{1,2}/src/ltxv_trainer/
training_strategies.py``, ``trainer.py``, ``config.py``; run settings from ``configs/stage{1,2}_infer.yaml``
at commit ``681c9a9``) and of LTX-Video-Trainer's timestep sampler (``src/ltxv_trainer/
timestep_samplers.py``), so adapters trained here are interchangeable with the released ones.
Sequences, masked flow matching, first-frame conditioning and timesteps: :mod:`restorer.flow_matching`;
the adapter and its files: :mod:`restorer.lora_training`.

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
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from .aatf import STAGE2_ADAPTER
from .checkpoints import (
    CHECKPOINTS_DIR,
    config_dict,
    latest_checkpoint,
    load_checkpoint_state,
    load_sampling_state,
    save_checkpoint,
    save_sampling_state,
)
from .errors import RestorerInputError
from .flow_matching import (
    build_flow_batch,
    draw_first_frame_conditioning,
    masked_flow_matching_loss,
    predict_velocity,
    sample_sigma,
)
from .heatmap import STAGE1_ADAPTER
from .lora_training import (
    add_trainable_lora,
    comfy_path_for,
    load_raw_adapter,
    save_release_adapter,
)
from .roots import STAGE1_LORA_FILE, STAGE2_LORA_FILE
from .train_config import DEFAULT_RANK, TrainConfig, TrainResult, total_steps, validate_config

STAGE_ADAPTERS = {1: STAGE1_ADAPTER, 2: STAGE2_ADAPTER}
RELEASE_FILES = {1: STAGE1_LORA_FILE, 2: STAGE2_LORA_FILE}


# ---------------------------------------------------------------------------------------------- backbone


def load_training_transformer(models, device, dtype) -> nn.Module:
    """The preset's frozen base transformer (the official base: 0.9.8-distilled 13B; tiny for tests)."""
    from .loading import load_transformer

    transformer = load_transformer(models.roots, dtype, models.transformer_source, models.transformer_config)
    return transformer.requires_grad_(False).eval().to(device)


# ---------------------------------------------------------------------------------------------- optimizer


def make_lr_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps: int):
    """Official ``_create_scheduler`` for ``linear``: ``LinearLR(1.0 -> end_factor, total_iters=steps)``; None for constant."""
    if config.lr_schedule == "constant":
        return None
    return torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=config.lr_end_factor, total_iters=steps)


# ---------------------------------------------------------------------------------------------- training


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


@dataclass
class _Run:
    """One run's models, optimizer and sampling state, set up by :func:`_set_up`."""

    config: TrainConfig
    steps: int
    dataset: object
    models: object
    rank: int
    alpha: float
    adapter: str
    accelerator: object
    device: torch.device
    dtype: torch.dtype
    prompt: object
    params: list
    transformer: nn.Module
    optimizer: object
    scheduler: object
    generator: torch.Generator
    start: int = 0
    indices: list[int] = field(default_factory=list)  # this epoch's pairs not yet used (this process's shard)
    model: nn.Module | None = None

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)

    def next_item(self) -> dict:
        if not self.indices:
            order = torch.randperm(len(self.dataset), generator=self.generator).tolist()
            self.indices.extend(order[self.accelerator.process_index :: self.accelerator.num_processes] or order[:1])
        return self.dataset[self.indices.pop(0)]

    def micro_step(self, scale: float) -> float:
        config, generator = self.config, self.generator
        latents = self.next_item()
        tokens = math.prod(latents["z_ref"].shape[2:])
        first_frame = draw_first_frame_conditioning(config.first_frame_conditioning_p, generator)
        sigma = sample_sigma(config.timestep_sampling, tokens, generator, config.logit_std)
        noise = torch.randn((1, tokens, latents["z_ref"].shape[1]), generator=generator)
        batch = build_flow_batch(config.stage, latents, sigma, noise, first_frame, config.noisemap_feature_scale)
        with self.accelerator.autocast():
            prediction = predict_velocity(self.model, batch, self.prompt, self.device, self.dtype)
            loss = masked_flow_matching_loss(prediction, batch)
        self.accelerator.backward(loss * scale)
        return float(loss.detach())

    def optimizer_step(self) -> tuple[float, Tensor]:
        """One optimizer step over the accumulated micro-batches; returns (mean loss, gradient norm)."""
        accum = self.config.gradient_accumulation_steps
        total = 0.0
        for micro in range(accum):
            sync = contextlib.nullcontext() if micro == accum - 1 else self.accelerator.no_sync(self.model)
            with sync:
                total += self.micro_step(1.0 / accum) / accum
        max_norm = self.config.max_grad_norm
        grad_norm = self.accelerator.clip_grad_norm_(self.params, max_norm) if max_norm > 0 else torch.zeros(())
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total, grad_norm

    def checkpoint(self, step: int) -> None:
        folder = self.output_dir / CHECKPOINTS_DIR / f"step-{step}"
        save_sampling_state(folder, self.accelerator.process_index, self.generator, self.indices)
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            unwrapped = self.accelerator.unwrap_model(self.model)
            save_checkpoint(self.output_dir, step, unwrapped, self.adapter, self.optimizer, self.scheduler, self.config)


def _set_up(config: TrainConfig) -> _Run:
    """Pairs, backbone, fresh adapter, optimizer, schedule and generator (restored from the latest checkpoint
    with ``resume``), prepared by accelerate."""
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
    params = add_trainable_lora(transformer, adapter, rank, alpha, tuple(config.target_modules))
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    run = _Run(
        config, steps, dataset, models, rank, alpha, adapter, accelerator, device, dtype, prompts[adapter], params,
        transformer, optimizer, make_lr_scheduler(optimizer, config, steps),
        torch.Generator().manual_seed(config.seed + 1000 * accelerator.process_index),
    )
    run.output_dir.mkdir(parents=True, exist_ok=True)
    if config.resume and (ckpt := latest_checkpoint(run.output_dir)) is not None:
        from safetensors.torch import load_file

        load_raw_adapter(transformer, adapter, load_file(str(ckpt / "adapter.safetensors")), str(ckpt))
        run.start = load_checkpoint_state(ckpt, optimizer, run.scheduler)
        load_sampling_state(ckpt, accelerator.process_index, run.generator, run.indices, len(dataset))
    if run.scheduler is not None:
        run.model, run.optimizer, run.scheduler = accelerator.prepare(transformer, optimizer, run.scheduler)
    else:
        run.model, run.optimizer = accelerator.prepare(transformer, optimizer)
    return run


def _progress_bar(run: _Run, console):
    """A rich progress bar on the main process (labelled UNTRAINED on the tiny preset), else a null context."""
    if not (run.config.show_progress and run.accelerator.is_main_process and run.start < run.steps):
        return contextlib.nullcontext(None)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    label = "[tiny preset: UNTRAINED backbone] " if run.models.untrained else ""
    return Progress(
        TextColumn(f"{label}stage {run.config.stage} LoRA"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
    )


def _write_run_info(run: _Run, result: TrainResult) -> None:
    """The adapter's JSON config next to it (atomic)."""
    config, rank, alpha, models = run.config, run.rank, run.alpha, run.models
    info = config_dict(
        config, steps=run.steps, rank=rank, alpha=alpha, adapter=run.adapter, global_step=result.end_step,
        release_file=result.adapter_path.name, comfy_file=result.comfy_path.name,
        key_format="diffusers (transformer.<module>.lora_A/lora_B.weight); ComfyUI copy with diffusion_model. keys"
        + ("" if alpha == rank else f"; alpha/rank = {alpha / rank:g} folded into lora_B"),
        backbone=f"{models.transformer_source} ({models.transformer_config})", untrained_backbone=models.untrained,
        pairs_meta=run.dataset.meta, final_loss=result.losses[-1] if result.losses else None,
        steps_per_second=result.steps_per_second, peak_memory_bytes=result.peak_memory_bytes,
    )
    tmp = result.config_path.with_name(f".{result.config_path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, result.config_path)


def train(config: TrainConfig, console=None, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train the stage's adapter; return where it was written and the per-step losses of this run."""
    run = _set_up(config)
    accelerator, steps = run.accelerator, run.steps
    logger = _Logger(config.log_with, run.output_dir, config, accelerator.is_main_process)
    adapter_path = run.output_dir / RELEASE_FILES[config.stage]
    result = TrainResult(adapter_path, run.output_dir / f"{adapter_path.stem}.json", run.start, run.start)
    progress_cm = _progress_bar(run, console)
    began = time.perf_counter()
    step = run.start
    try:
        with progress_cm as progress:
            task = progress.add_task("train", total=steps, completed=run.start, loss="-") if progress else None
            while step < steps:
                total, grad_norm = run.optimizer_step()
                step += 1
                result.losses.append(total)
                lr = float(run.optimizer.param_groups[0]["lr"])
                logger.log({"train/loss": total, "train/grad_norm": float(grad_norm), "train/lr": lr}, step)
                if on_step is not None:
                    on_step(step, total)
                if progress:
                    progress.update(task, completed=step, loss=f"{total:.4f}")
                if step % config.checkpoint_every == 0 or step == steps:
                    run.checkpoint(step)
    finally:
        logger.close()
    result.seconds = time.perf_counter() - began
    result.end_step = step
    result.peak_memory_bytes = peak_memory_bytes(run.device)

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        result.comfy_path = save_release_adapter(accelerator.unwrap_model(run.model), run.adapter, result.adapter_path)
        _write_run_info(run, result)
    else:
        result.comfy_path = comfy_path_for(result.adapter_path)
    return result
