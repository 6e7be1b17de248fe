"""Training the two LoRA adapters as the official trainer does (paper Sec. 4.3, Eq. 3).

Our own implementation of the behaviour of the official ArtifactWorld trainer (repository
``fyting/ArtifactWorld`` at commit ``9250e92``: ``stages/stage{1,2}/src/ltxv_trainer/
training_strategies.py``, ``trainer.py``, ``config.py``; run settings from ``configs/stage{1,2}_infer.yaml``
at commit ``681c9a9``) and of LTX-Video-Trainer's timestep sampler (``src/ltxv_trainer/
timestep_samplers.py``), so adapters trained here are interchangeable with the released ones.
Sequences, masked flow matching, first-frame conditioning and timesteps: :mod:`artifactworld_ns.restorer.flow_matching`;
the adapter and its files: :mod:`artifactworld_ns.restorer.lora_training`.

**Optimizer.** AdamW (torch's defaults, weight decay 0.01) at lr 2e-4, ``LinearLR`` from factor 1.0
to 0.1 over the run's steps, gradient-norm clipping at 1.0; optimizer and scheduler go through
``accelerate.prepare`` as in the official ``_init_optimizer`` (so with N processes accelerate steps
the scheduler N times per optimizer step, as the official run did).

**Loop plumbing (accelerate).** Gradient accumulation by ``Accelerator(gradient_accumulation_steps)`` and
``accumulate``; checkpoints by ``save_state`` / ``load_state``, named and pruned to the newest
``--checkpoints-total-limit`` by ``ProjectConfiguration`` (adapter-only hooks and the registered
sampling state: :mod:`artifactworld_ns.restorer.checkpoints`); logging by accelerate's trackers (``init_trackers``, ``log``,
``end_training``).

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
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from .aatf import STAGE2_ADAPTER
from .atomic import atomic_path
from .checkpoints import (
    SamplingState,
    checkpoint_step,
    config_dict,
    latest_checkpoint,
    load_checkpoint,
    next_save_iteration,
    register_adapter_hooks,
    save_checkpoint,
)
from .errors import RestorerInputError
from .flow_matching import (
    build_flow_batch,
    draw_first_frame_conditioning,
    masked_flow_matching_loss,
    predict_velocity,
    sample_sigma,
)
from .flywheel.world_model import WORLD_MODEL_ADAPTER, WORLD_MODEL_LORA_FILE, WORLD_MODEL_STAGE
from .heatmap import STAGE1_ADAPTER
from .lora_training import add_trainable_lora, comfy_path_for, save_release_adapter
from .presets import load_training_transformer
from .roots import STAGE1_LORA_FILE, STAGE2_LORA_FILE
from .train_config import DEFAULT_RANK, TrainConfig, TrainResult, total_steps, validate_config
from .untrained import UNTRAINED_LABEL

STAGE_ADAPTERS = {1: STAGE1_ADAPTER, 2: STAGE2_ADAPTER, WORLD_MODEL_STAGE: WORLD_MODEL_ADAPTER}
RELEASE_FILES = {1: STAGE1_LORA_FILE, 2: STAGE2_LORA_FILE, WORLD_MODEL_STAGE: WORLD_MODEL_LORA_FILE}


# ---------------------------------------------------------------------------------------------- optimizer


def make_lr_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps: int):
    """Official ``_create_scheduler`` for ``linear``: ``LinearLR(1.0 -> end_factor, total_iters=steps)``; None for constant."""
    if config.lr_schedule == "constant":
        return None
    return torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=1.0, end_factor=config.lr_end_factor, total_iters=steps
    )


# ---------------------------------------------------------------------------------------------- training


def peak_memory_bytes(device: torch.device) -> int:
    """Peak CUDA memory allocated on ``device``, or the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


TRACKER_PROJECT = "artifactworld-lora"
LOGS_DIR = "logs"


def make_accelerator(config: TrainConfig, cpu: bool, mixed: str):
    """The run's Accelerator: mixed precision, gradient accumulation (``accumulate``), trackers and their folder,
    checkpoint names and how many are kept.

    ``log_with`` + ``ProjectConfiguration(logging_dir=OUTPUT/logs)`` replace the hand-written TensorBoard /
    wandb logger (TensorBoard events land in ``OUTPUT/logs/artifactworld-lora/``);
    ``automatic_checkpoint_naming`` + ``total_limit`` name the checkpoints ``OUTPUT/checkpoints/checkpoint_K`` and
    keep the newest ``--checkpoints-total-limit`` (a full-size one is about 8 GB)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, is_wandb_available

    if config.log_with == "wandb" and not is_wandb_available():
        raise RestorerInputError("--log-with wandb needs the wandb package; install it or use --log-with tensorboard.")
    output = Path(config.output_dir)
    return Accelerator(
        mixed_precision=mixed,
        cpu=cpu,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=None if config.log_with == "none" else config.log_with,
        project_config=ProjectConfiguration(
            project_dir=str(output),
            logging_dir=str(output / LOGS_DIR),
            automatic_checkpoint_naming=True,
            total_limit=config.checkpoints_total_limit,
            iteration=next_save_iteration(output),
        ),
    )


def tracker_config(config: TrainConfig) -> dict:
    """The run's settings as tracker hyperparameters (TensorBoard's hparams take only numbers, strings and booleans)."""
    return {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in config_dict(config).items()}


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
    dtype: torch.dtype
    prompt: object
    params: list
    model: nn.Module
    optimizer: object
    scheduler: object
    sampling: SamplingState
    start: int = 0
    prompt_source: object = None
    """The world model's per-pair shuffled prompts (:class:`artifactworld_ns.restorer.flywheel.world_model.WorldModelPrompts`)."""

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def micro_step(self) -> float:
        config, generator = self.config, self.sampling.generator
        index = self.sampling.next_index()
        latents = self.dataset[index]
        prompt = self.prompt
        if self.prompt_source is not None:  # the world model: one of the pair's shuffled prompts
            prompt = self.prompt_source.draw(index, generator).to(self.device, self.dtype)
        tokens = math.prod(latents["z_ref"].shape[2:])
        first_frame = draw_first_frame_conditioning(config.first_frame_conditioning_p, generator)
        sigma = sample_sigma(config.timestep_sampling, tokens, generator, config.logit_std)
        noise = torch.randn((1, tokens, latents["z_ref"].shape[1]), generator=generator)
        batch = build_flow_batch(config.stage, latents, sigma, noise, first_frame, config.noisemap_feature_scale)
        with self.accelerator.autocast():
            prediction = predict_velocity(self.model, batch, prompt, self.device, self.dtype)
            loss = masked_flow_matching_loss(prediction, batch)
        self.accelerator.backward(loss)  # divides by gradient_accumulation_steps
        return float(loss.detach())

    def optimizer_step(self) -> tuple[float, Tensor]:
        """One optimizer step over the accumulated micro-batches; returns (mean loss, gradient norm).

        ``accelerator.accumulate`` replaces the hand-written ``no_sync`` on all but the last micro-batch; the
        prepared optimizer and scheduler skip their step (and zero_grad) while gradients are not synced, so
        they step once per optimizer step as before, and gradients are clipped on the synced micro-batch only."""
        accum, max_norm = self.config.gradient_accumulation_steps, self.config.max_grad_norm
        total, grad_norm = 0.0, torch.zeros(())
        for _ in range(accum):
            with self.accelerator.accumulate(self.model):
                total += self.micro_step() / accum
                if self.accelerator.sync_gradients and max_norm > 0:
                    grad_norm = self.accelerator.clip_grad_norm_(self.params, max_norm)
                self.optimizer.step()
                if self.scheduler is not None:
                    self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
        return total, grad_norm


def _set_up(config: TrainConfig) -> _Run:
    """Pairs, backbone, fresh adapter, optimizer, schedule and generator, prepared by accelerate (and restored
    from the latest checkpoint by ``accelerator.load_state`` with ``resume``)."""
    from .flywheel import sources, world_model
    from .pairs import open_pairs
    from .presets import prompt_embeddings, resolve_preset

    validate_config(config)
    steps = total_steps(config)
    dataset = open_pairs(config.data, preset=config.preset)
    is_world_model = config.stage == WORLD_MODEL_STAGE
    if is_world_model:
        world_model.check_world_model_pairs(dataset)
    if config.source_weights:
        sources.pair_probabilities(sources.pair_sources(dataset), dict(config.source_weights))  # checked before loading
    base = world_model.WORLD_MODEL_BASES[config.world_model_base] if is_world_model else None
    models = resolve_preset(config.preset, base)
    rank = config.rank or DEFAULT_RANK[config.preset]
    alpha = float(config.alpha if config.alpha is not None else rank)
    adapter = STAGE_ADAPTERS[config.stage]

    device_name = config.device or models.device
    cpu = device_name == "cpu" or not torch.cuda.is_available()
    mixed = config.mixed_precision if config.mixed_precision != "auto" else ("no" if cpu else "bf16")
    accelerator = make_accelerator(config, cpu, mixed)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed, torch.float32)

    transformer = load_training_transformer(models, accelerator.device, dtype)
    if is_world_model:
        prompt_source = world_model.world_model_prompts(
            dataset, models, accelerator.device, config.seed, config.prompt_orders
        )
        prompt = None
    else:
        prompt_source = None
        prompts = dataset.prompts or prompt_embeddings(models, accelerator.device)
        prompt = prompts[adapter].to(accelerator.device, dtype)  # moved once, not on every step
    params = add_trainable_lora(transformer, adapter, rank, alpha, tuple(config.target_modules))
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = make_lr_scheduler(optimizer, config, steps)
    prepared = accelerator.prepare(transformer, optimizer, *([scheduler] if scheduler is not None else []))
    generator = torch.Generator().manual_seed(config.seed + 1000 * accelerator.process_index)
    sampling = sources.make_sampling_state(
        config, dataset, generator, accelerator.process_index, accelerator.num_processes
    )
    run = _Run(
        config,
        steps,
        dataset,
        models,
        rank,
        alpha,
        adapter,
        accelerator,
        dtype,
        prompt,
        params,
        prepared[0],
        prepared[1],
        prepared[2] if scheduler is not None else None,
        sampling,
        prompt_source=prompt_source,
    )
    register_adapter_hooks(accelerator, adapter)
    accelerator.register_for_checkpointing(sampling)  # saved / loaded by save_state / load_state
    run.output_dir.mkdir(parents=True, exist_ok=True)
    if config.resume and (ckpt := latest_checkpoint(run.output_dir)) is not None:
        run.start = load_checkpoint(accelerator, ckpt, has_scheduler=scheduler is not None)
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

    label = f"{UNTRAINED_LABEL} " if run.models.untrained else ""
    return Progress(
        TextColumn(f"{label}stage {run.config.stage} LoRA"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _write_run_info(run: _Run, result: TrainResult) -> None:
    """The adapter's JSON config next to it (atomic)."""
    from .pairs import build_settings

    config, rank, alpha, models = run.config, run.rank, run.alpha, run.models
    info = config_dict(
        config,
        steps=run.steps,
        rank=rank,
        alpha=alpha,
        adapter=run.adapter,
        global_step=result.end_step,
        release_file=result.adapter_path.name,
        comfy_file=result.comfy_path.name,
        key_format="diffusers (transformer.<module>.lora_A/lora_B.weight); ComfyUI copy with diffusion_model. keys"
        + ("" if alpha == rank else f"; alpha/rank = {alpha / rank:g} folded into lora_B"),
        backbone=f"{models.transformer_source} ({models.transformer_config})",
        untrained_backbone=models.untrained,
        pairs_meta=build_settings(run.dataset.meta),  # without the per-pair labels (one entry per pair)
        final_loss=result.losses[-1] if result.losses else None,
        steps_per_second=result.steps_per_second,
        peak_memory_bytes=result.peak_memory_bytes,
    )
    with atomic_path(result.config_path) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")


def _train_steps(run: _Run, result: TrainResult, console, on_step: Callable[[int, float], None] | None) -> None:
    """Optimizer steps from ``run.start`` to ``run.steps``: log each (``accelerator.log``), checkpoint every
    ``checkpoint_every`` and at the end; fills ``result``."""
    config, steps = run.config, run.steps
    began = time.perf_counter()
    step = run.start
    with _progress_bar(run, console) as progress:
        task = progress.add_task("train", total=steps, completed=run.start, loss="-") if progress else None
        while step < steps:
            total, grad_norm = run.optimizer_step()
            step += 1
            result.losses.append(total)
            lr = float(run.optimizer.param_groups[0]["lr"])
            run.accelerator.log({"train/loss": total, "train/grad_norm": float(grad_norm), "train/lr": lr}, step=step)
            if on_step is not None:
                on_step(step, total)
            if progress:
                progress.update(task, completed=step, loss=f"{total:.4f}")
            if step % config.checkpoint_every == 0 or step == steps:
                save_checkpoint(run.accelerator, step, config)
    result.seconds = time.perf_counter() - began
    result.end_step = step
    result.peak_memory_bytes = peak_memory_bytes(run.device)


def finished_run(config: TrainConfig) -> TrainResult | None:
    """With ``resume``: the result of a run that already reached ``--steps`` and wrote its adapter (nothing is
    loaded, nothing is written), else None."""
    if not config.resume or (ckpt := latest_checkpoint(config.output_dir)) is None:
        return None
    adapter_path = Path(config.output_dir) / RELEASE_FILES[config.stage]
    step = checkpoint_step(ckpt)
    if step < total_steps(config) or not adapter_path.is_file():
        return None
    result = TrainResult(adapter_path, adapter_path.with_suffix(".json"), step, step, already_finished=True)
    result.comfy_path = comfy_path_for(adapter_path)
    return result


def train(config: TrainConfig, console=None, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train the stage's adapter; return where it was written and the per-step losses of this run. A resumed run
    that already finished is left as it is (``TrainResult.already_finished``)."""
    validate_config(config)
    if (done := finished_run(config)) is not None:
        return done
    run = _set_up(config)
    accelerator = run.accelerator
    adapter_path = run.output_dir / RELEASE_FILES[config.stage]
    result = TrainResult(adapter_path, run.output_dir / f"{adapter_path.stem}.json", run.start, run.start)
    # init_trackers / log / end_training replace the hand-written logger (trackers run on the main process only)
    accelerator.init_trackers(
        TRACKER_PROJECT, config=tracker_config(config), init_kwargs={"wandb": {"dir": str(run.output_dir)}}
    )
    try:
        _train_steps(run, result, console, on_step)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            result.comfy_path = save_release_adapter(
                accelerator.unwrap_model(run.model), run.adapter, result.adapter_path
            )
            _write_run_info(run, result)
        else:
            result.comfy_path = comfy_path_for(result.adapter_path)
    finally:
        accelerator.end_training()  # closes the trackers (and the process group, after the last collective)
    return result
