"""Checkpoints of a training run (:mod:`restorer.training`): ``OUTPUT/checkpoints/step-N/`` holds the raw
adapter weights, the optimizer and LR-scheduler state, each process's sampling state and ``state.json``
(written last: it marks the checkpoint complete)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .errors import RestorerInputError
from .lora_training import adapter_state_dict, save_file_atomic
from .pairs import atomic_torch_save

CHECKPOINTS_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def latest_checkpoint(output_dir: Path) -> Path | None:
    folder = Path(output_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return None
    found = [(int(m[1]), p) for p in folder.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / "state.json").exists()]
    return max(found)[1] if found else None


def config_dict(config, **extra) -> dict:
    data = {k: (str(v) if isinstance(v, Path) else (list(v) if isinstance(v, tuple) else v)) for k, v in asdict(config).items()}
    data.update(extra)
    return data


def save_sampling_state(folder: Path, process_index: int, generator: torch.Generator, pending: list[int]) -> None:
    """Each process's data/noise sampling state (its generator and the epoch's pairs it has not used yet)."""
    atomic_torch_save({"generator": generator.get_state(), "pending": list(pending)}, folder / f"sampling-rank{process_index}.pt")


def save_checkpoint(output_dir: Path, step: int, transformer: nn.Module, adapter: str, optimizer, scheduler, config) -> Path:
    """``step-N/``: raw adapter weights, optimizer and LR-scheduler state, and ``state.json`` (written last: marks it complete)."""
    folder = Path(output_dir) / CHECKPOINTS_DIR / f"step-{step}"
    folder.mkdir(parents=True, exist_ok=True)
    save_file_atomic(adapter_state_dict(transformer, adapter, release=False), folder / "adapter.safetensors")
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


def load_sampling_state(ckpt: Path, process_index: int, generator: torch.Generator, pending: list[int], size: int) -> None:
    """Restore this process's generator and unused pairs (below ``size``) from ``step-N/``, when saved there."""
    sampling = ckpt / f"sampling-rank{process_index}.pt"
    if sampling.exists():  # absent when resuming with more processes than before: fresh sampling state
        state = torch.load(sampling, map_location="cpu", weights_only=False)
        generator.set_state(state["generator"])
        pending.extend(i for i in state["pending"] if i < size)
