"""Checkpoints of a training run (:mod:`artifactworld_ns.restorer.training`), written by ``accelerator.save_state`` and read by
``accelerator.load_state``.

accelerate names and prunes them (``ProjectConfiguration(automatic_checkpoint_naming=True, total_limit=N)``):
``OUTPUT/checkpoints/checkpoint_K/`` is the run folder's K-th save, and before each save accelerate deletes the
oldest folders so that the newest ``--checkpoints-total-limit`` remain. The step a checkpoint holds is in its
``state.json``. Folders of earlier versions, ``step-N/``, are still resumed from: the next K is always above every
number in the folder names, so accelerate's pruning (oldest = smallest number) stays in save order.

``OUTPUT/checkpoints/checkpoint_K/`` holds ``adapter.safetensors`` (the raw adapter weights, written by the save
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
STATE_FILE = "state.json"
_CHECKPOINT_DIR = re.compile(r"^(?:checkpoint_|step-)(\d+)$")
"""accelerate's automatic names (``checkpoint_K``), and ``step-N`` of earlier versions."""


def checkpoint_folders(output_dir: Path) -> list[tuple[int, Path]]:
    """``(number in the name, folder)`` of every checkpoint folder, complete or not, oldest first."""
    folder = Path(output_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    return sorted((int(m[1]), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT_DIR.match(p.name)))


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint (its ``state.json`` is written last), or None."""
    complete = [p for _, p in checkpoint_folders(output_dir) if (p / STATE_FILE).exists()]
    return complete[-1] if complete else None


def checkpoint_step(checkpoint: Path) -> int:
    """The optimizer step a complete checkpoint holds."""
    return int(json.loads((Path(checkpoint) / STATE_FILE).read_text())["global_step"])


def next_save_iteration(output_dir: Path) -> int:
    """accelerate's next ``checkpoint_K``: above every number in the existing folder names, so that a new save
    never collides with an old one and accelerate's pruning deletes the oldest first."""
    folders = checkpoint_folders(output_dir)
    return folders[-1][0] + 1 if folders else 0


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


def save_checkpoint(accelerator, step: int, config) -> Path:
    """``checkpoint_K/`` by ``accelerator.save_state`` (replaces the hand-written adapter, optimizer, scheduler and
    sampling files; every process takes part; accelerate first deletes the oldest folders beyond its
    ``total_limit``), then ``state.json`` from the main process (written last: marks it complete)."""
    folder = Path(accelerator.save_state())
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with atomic_path(folder / STATE_FILE) as tmp:
            tmp.write_text(json.dumps(config_dict(config, global_step=step), indent=2) + "\n")
    return folder


def load_checkpoint(accelerator, ckpt: Path, has_scheduler: bool) -> int:
    """Restore adapter, optimizer, LR schedule, RNG and sampling state from a checkpoint folder by
    ``accelerator.load_state`` (replaces the hand-written loads); return its step."""
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
    return checkpoint_step(ckpt)
