"""Checkpoints of a training run (:mod:`restorer.training`), written by ``accelerator.save_state`` and read by
``accelerator.load_state``.

``OUTPUT/checkpoints/step-N/`` holds ``adapter.safetensors`` (the raw adapter weights, written by the save
hook in place of accelerate's full ``model.safetensors``: the production backbone has 13B frozen weights),
accelerate's ``optimizer.bin``, ``scheduler.bin`` (with the linear schedule), ``random_states_<process>.pkl``
and ``custom_checkpoint_0.pkl`` (every process's sampling state, :class:`SamplingState`), and ``state.json``
(written last: it marks the checkpoint complete).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_path
from .errors import RestorerInputError
from .lora_training import adapter_state_dict, load_raw_adapter, save_file_atomic

CHECKPOINTS_DIR = "checkpoints"
ADAPTER_FILE = "adapter.safetensors"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def latest_checkpoint(output_dir: Path) -> Path | None:
    folder = Path(output_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return None
    found = [(int(m[1]), p) for p in folder.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / "state.json").exists()]
    return max(found)[1] if found else None


def config_dict(config, **extra) -> dict:
    data = {
        k: (str(v) if isinstance(v, Path) else (list(v) if isinstance(v, tuple) else v))
        for k, v in asdict(config).items()
    }
    data.update(extra)
    return data


class SamplingState:
    """This process's data/noise sampling state: its generator and the epoch's pairs it has not used yet.

    Registered with ``accelerator.register_for_checkpointing`` (replaces the hand-written ``sampling-rank<i>.pt``
    files). accelerate writes a registered object's ``state_dict`` from the main process only, so
    ``state_dict`` gathers every process's state (``accelerate.utils.gather_object``) and ``load_state_dict``
    takes this process's entry: a process beyond the saved ones (resuming with more processes) starts fresh.
    """

    def __init__(self, generator: torch.Generator, size: int, process_index: int, num_processes: int) -> None:
        self.generator, self.size = generator, size
        self.process_index, self.num_processes = process_index, num_processes
        self.pending: list[int] = []

    def next_index(self) -> int:
        """The next pair of this process's shard, drawing a new epoch order from the generator when the last is used."""
        if not self.pending:
            order = torch.randperm(self.size, generator=self.generator).tolist()
            self.pending.extend(order[self.process_index :: self.num_processes] or order[:1])
        return self.pending.pop(0)

    def state_dict(self) -> dict:
        from accelerate.utils import gather_object

        mine = {"generator": self.generator.get_state(), "pending": list(self.pending)}
        return {"processes": gather_object([mine])}

    def load_state_dict(self, state: dict) -> None:
        processes = state["processes"]
        if self.process_index < len(processes):
            self.generator.set_state(processes[self.process_index]["generator"])
            self.pending[:] = [i for i in processes[self.process_index]["pending"] if i < self.size]


def register_adapter_hooks(accelerator, adapter: str) -> None:
    """Make ``save_state`` / ``load_state`` keep only the adapter of the prepared transformer (diffusers'
    ``train_dreambooth_lora*.py`` hooks): the save hook writes ``adapter.safetensors`` and pops the full
    state dict from ``weights``; the load hook pops the model from ``models`` and loads the adapter itself."""

    def save_adapter(models: list[nn.Module], weights: list, output_dir: str) -> None:
        if accelerator.is_main_process:
            for model in models:
                state = adapter_state_dict(accelerator.unwrap_model(model), adapter, release=False)
                save_file_atomic(state, Path(output_dir) / ADAPTER_FILE)
        weights.clear()  # nothing else of the model is written (accelerate saves what is left in `weights`)

    def load_adapter(models: list[nn.Module], input_dir: str) -> None:
        from safetensors.torch import load_file

        while models:  # popped: accelerate loads what is left in `models` from model.safetensors
            model = models.pop()
            state = load_file(str(Path(input_dir) / ADAPTER_FILE))
            load_raw_adapter(accelerator.unwrap_model(model), adapter, state, str(input_dir))

    accelerator.register_save_state_pre_hook(save_adapter)
    accelerator.register_load_state_pre_hook(load_adapter)


def save_checkpoint(accelerator, output_dir: Path, step: int, config) -> Path:
    """``step-N/`` by ``accelerator.save_state`` (replaces the hand-written adapter, optimizer, scheduler and
    sampling files; every process takes part), then ``state.json`` from the main process (written last: marks it complete)."""
    folder = Path(output_dir) / CHECKPOINTS_DIR / f"step-{step}"
    accelerator.save_state(str(folder))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with atomic_path(folder / "state.json") as tmp:
            tmp.write_text(json.dumps(config_dict(config, global_step=step), indent=2) + "\n")
    return folder


def load_checkpoint(accelerator, ckpt: Path, has_scheduler: bool) -> int:
    """Restore adapter, optimizer, LR schedule, RNG and sampling state from ``step-N/`` by
    ``accelerator.load_state`` (replaces the hand-written loads); return N."""
    from accelerate.utils import OPTIMIZER_NAME, SCHEDULER_NAME

    if not (ckpt / f"{OPTIMIZER_NAME}.bin").exists():  # accelerate's optimizer file marks a save_state checkpoint
        raise RestorerInputError(
            f"The checkpoint {ckpt} was written by an older aw-train-lora (it has no accelerate state); start a new run "
            "in another --output-dir."
        )
    if has_scheduler and not (ckpt / f"{SCHEDULER_NAME}.bin").exists():
        raise RestorerInputError(
            f"The checkpoint {ckpt} was written with --lr-schedule constant; resume it with the same setting."
        )
    accelerator.load_state(str(ckpt))
    # Checkpoints sit on optimizer-step boundaries: count micro-batches afresh, so that accelerate's
    # accumulate() syncs on this run's --gradient-accumulation-steps boundaries.
    accelerator.step = 0
    return int(json.loads((ckpt / "state.json").read_text())["global_step"])
