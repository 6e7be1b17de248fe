"""Resuming a run exactly: what a nerfstudio checkpoint misses for splatfacto, and the optimizer fix.

**The crash (root cause).** ``Trainer.setup`` builds the optimizers around the model's Gaussian
parameters and only then loads the checkpoint. ``SplatfactoModel.load_state_dict`` replaces every
``gauss_params[name]`` by a new ``Parameter`` of the checkpoint's size, so the optimizers keep the
construction-time tensors; ``Optimizers.load_optimizers`` then attaches the checkpoint's Adam moments
to those stale tensors. gsplat's ``DefaultStrategy`` reads the parameters through the optimizers at
its first split or duplicate after resuming and indexes a construction-size tensor with checkpoint
indices: ``IndexError: index N is out of bounds``. Stock splatfacto 1.1.5 has the same bug (the same
``Trainer`` order and the same ``load_state_dict``; nothing here is ours). Smallest reproduction, on
CUDA: ``ns-train splatfacto --data SCENE --max-num-iterations 700`` then the same command with
``--load-dir RUN/nerfstudio_models``; it crashes at the first refinement after step 700 that splits or
duplicates. :func:`rebind_optimizers` points the optimizers at the loaded tensors, with their moments.

**What else a resumed run needs to continue as the uninterrupted one would** (the checkpoint holds
the pipeline's ``state_dict``, so both travel as ``_extra_state`` of the model and the datamanager):

* the densification strategy's running statistics (``grad2d``, ``count``, ``radii``), which decide
  the next splits, duplicates and prunes (:func:`strategy_extra_state`);
* the random state: the order of the training views, the draws between real and generated views,
  and torch's global generator, which splatfacto's random backgrounds and gsplat's splits use
  (:func:`random_extra_state`).
"""

from __future__ import annotations

import random
from typing import Any, Dict, Mapping, MutableMapping, Optional

import torch

from artifactworld_ns.restorer import ArtifactWorldError


class ResumeError(ArtifactWorldError, RuntimeError):
    """A checkpoint whose optimizer state does not fit the loaded Gaussians."""


def rebind_optimizers(params: Mapping[str, torch.nn.Parameter], optimizers: Mapping[str, torch.optim.Optimizer]) -> int:
    """Make each ``optimizers[name]`` optimize ``params[name]`` and carry its Adam state over.

    Returns how many parameter groups were rebound (0 when nothing was stale, e.g. a fresh run).
    Written by hand: neither nerfstudio nor gsplat re-targets an optimizer after a load.
    """
    rebound = 0
    for name, param in params.items():
        optimizer = optimizers.get(name)
        if optimizer is None:
            continue
        for group in optimizer.param_groups:
            stale = group["params"][0]
            if stale is param:
                continue
            state = optimizer.state.pop(stale, None)
            group["params"] = [param]
            if state:
                for value in state.values():
                    if torch.is_tensor(value) and value.ndim > 0 and value.shape != param.shape:
                        raise ResumeError(
                            f"The checkpoint's optimizer state for '{name}' has shape {tuple(value.shape)} but the loaded "
                            f"Gaussians have {tuple(param.shape)}; resume from a checkpoint written by one run."
                        )
                optimizer.state[param] = state  # load_state_dict already put it on the parameters' device
            rebound += 1
    return rebound


def strategy_extra_state(strategy_state: Mapping[str, Any]) -> Dict[str, Any]:
    """The strategy's running statistics as checkpointable values (tensors on the CPU, or None)."""
    return {k: (v.detach().cpu().clone() if torch.is_tensor(v) else v) for k, v in strategy_state.items()}


def load_strategy_extra_state(
    strategy_state: MutableMapping[str, Any], saved: Mapping[str, Any], device: torch.device
) -> None:
    """Put the saved statistics back (``scene_scale`` stays the model's own)."""
    for key, value in saved.items():
        if key == "scene_scale" and key in strategy_state:
            continue
        strategy_state[key] = value.to(device) if torch.is_tensor(value) else value


def random_extra_state(
    train_unseen_cameras: list, draw_rng: random.Random, camera_rng: Optional[random.Random]
) -> Dict[str, Any]:
    """Everything random that decides the next training steps (plain values: checkpoints load weights-only)."""
    state: Dict[str, Any] = {
        "train_unseen_cameras": [int(i) for i in train_unseen_cameras],
        "draw_rng": draw_rng.getstate(),
        "torch_rng": torch.get_rng_state(),
    }
    if camera_rng is not None:
        state["camera_rng"] = camera_rng.getstate()
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def load_random_extra_state(
    saved: Mapping[str, Any], draw_rng: random.Random, camera_rng: Optional[random.Random]
) -> list:
    """Restore the generators; returns the saved ``train_unseen_cameras``."""
    draw_rng.setstate(_as_rng_state(saved["draw_rng"]))
    if camera_rng is not None and "camera_rng" in saved:
        camera_rng.setstate(_as_rng_state(saved["camera_rng"]))
    torch.set_rng_state(saved["torch_rng"])
    if "cuda_rng" in saved and torch.cuda.is_available() and len(saved["cuda_rng"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    return list(saved["train_unseen_cameras"])


def _as_rng_state(value) -> tuple:
    """``random.Random.getstate()`` as saved (lists may come back where tuples went in)."""
    version, internal, gauss = value
    return int(version), tuple(int(x) for x in internal), gauss
