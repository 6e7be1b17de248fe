"""Trainable LoRA adapters and their files, as the official trainer writes them (see :mod:`artifactworld_ns.restorer.training`).

A fresh peft LoRA is injected with the official init (kaiming ``lora_A``, ``lora_B = 0``, no dropout);
the release file uses the diffusers keys ``transformer.<module>.lora_A/B.weight``, the ComfyUI copy
``comfy_<name>`` the ``diffusion_model.`` keys; checkpoints hold the raw peft weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .atomic import atomic_path
from .errors import RestorerInputError

COMFY_PREFIX = "comfy_"


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
    smallest = min(
        names, key=lambda n: min(transformer.get_submodule(n).in_features, transformer.get_submodule(n).out_features)
    )
    layer = transformer.get_submodule(smallest)
    limit = min(layer.in_features, layer.out_features)
    if not 1 <= rank <= limit:
        raise RestorerInputError(
            f"LoRA rank {rank} does not fit: target {smallest} is a {layer.in_features}->{layer.out_features} "
            f"linear layer, so the rank must be between 1 and {limit}."
        )


def add_trainable_lora(
    transformer: nn.Module, adapter: str, rank: int, alpha: float, targets: tuple[str, ...]
) -> list[nn.Parameter]:
    """Add a fresh peft LoRA (official init: kaiming ``lora_A``, ``lora_B = 0``, no dropout); return its float32 parameters.

    diffusers' ``add_adapter`` injects and activates it (as the official trainer does); ``cast_training_params``
    upcasts the trainable weights.
    """
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    names = lora_target_names(transformer, targets)
    check_rank(transformer, names, rank)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=names, lora_dropout=0.0, init_lora_weights=True)
    transformer.add_adapter(config, adapter_name=adapter)  # peft leaves only this adapter's weights trainable
    cast_training_params(transformer, dtype=torch.float32)
    return [param for param in transformer.parameters() if param.requires_grad]


def adapter_state_dict(transformer: nn.Module, adapter: str, release: bool = True) -> dict[str, Tensor]:
    """The adapter's weights (peft's ``get_peft_model_state_dict``: ``<module>.lora_A/B.weight``).

    ``release``: the official diffusers keys ``transformer.<module>.lora_A/B.weight``; ``lora_B`` is
    multiplied by ``alpha / rank`` only when that is not 1 (the files carry no alpha). Otherwise the
    raw peft weights under bare module names (checkpoints).
    """
    from peft import get_peft_model_state_dict

    raw = get_peft_model_state_dict(transformer, adapter_name=adapter, save_embedding_layers=False)
    state = {}
    for key, tensor in raw.items():
        value = tensor.detach().float().cpu()
        if release and key.endswith(".lora_B.weight"):
            # peft keeps alpha / rank as the layer's scaling; the release files have no place for it
            scale = float(transformer.get_submodule(key.removesuffix(".lora_B.weight")).scaling[adapter])
            value = value * scale if scale != 1.0 else value
        state[("transformer." if release else "") + key] = value.contiguous()
    return state


def comfy_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The ComfyUI copy of a diffusers-format adapter: ``transformer.`` -> ``diffusion_model.`` (official ``convert_checkpoint``)."""
    return {
        ("diffusion_model." + k[len("transformer.") :] if k.startswith("transformer.") else k): v
        for k, v in state.items()
    }


def comfy_path_for(adapter_path: Path) -> Path:
    """``comfy_<name>`` next to the adapter, as the official trainer names its ComfyUI copy."""
    return adapter_path.with_name(COMFY_PREFIX + adapter_path.name)


def save_release_adapter(transformer: nn.Module, adapter: str, path: Path) -> Path:
    """Write the diffusers-format adapter to ``path`` and its ComfyUI copy next to it; return the copy's path."""
    state = adapter_state_dict(transformer, adapter, release=True)
    save_file_atomic(state, path)
    comfy = comfy_path_for(path)
    save_file_atomic(comfy_state_dict(state), comfy)
    return comfy


def load_raw_adapter(transformer: nn.Module, adapter: str, state: dict[str, Tensor], source: str) -> None:
    """Put a checkpoint's raw weights into the adapter (peft's ``set_peft_model_state_dict``, in place).

    The key and shape checks are ours: peft would skip unknown keys with a warning and fail on a shape
    with a long traceback.
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    expected = get_peft_model_state_dict(transformer, adapter_name=adapter, save_embedding_layers=False)
    if set(state) != set(expected):
        raise RestorerInputError(
            f"The checkpoint {source} was saved with other LoRA targets or rank than this run uses."
        )
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise RestorerInputError(
                f"The checkpoint {source} has LoRA rank {value.shape} where this run needs {tuple(expected[key].shape)}."
            )
    set_peft_model_state_dict(transformer, state, adapter_name=adapter)


def save_file_atomic(state: dict[str, Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
