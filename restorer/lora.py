"""LoRA adapters on the one shared transformer (the paper's homogeneous dual model).

Both released LoRA files are loaded as *named* peft adapters (``stage1``,
``stage2``) on the same frozen transformer; :func:`set_active_adapter` switches
between them. Two key formats are accepted:

* diffusers: ``transformer.<module>.lora_A.weight`` / ``lora_B.weight``
* ComfyUI (what LTX-Video-Trainer exports): ``diffusion_model.<module>.lora_A.weight`` ...

(``lora_down`` / ``lora_up`` and per-module ``.alpha`` entries are understood too.)
Every module named by the file must exist as a linear layer with matching
shapes; otherwise loading fails with one sentence saying why.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import RestorerInputError

KEY_PREFIXES = ("base_model.model.", "transformer.", "model.diffusion_model.", "diffusion_model.")
_SUFFIX = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_down|lora_up)\.weight$")
_ALPHA = re.compile(r"^(?P<module>.+)\.alpha$")


@dataclass
class LoraWeights:
    """One module's low-rank pair: ``delta W = (alpha / r) * B @ A``."""

    down: torch.Tensor  # lora_A, [r, in_features]
    up: torch.Tensor  # lora_B, [out_features, r]
    alpha: float | None = None

    @property
    def rank(self) -> int:
        return self.down.shape[0]


def strip_prefix(key: str) -> str:
    """Drop the diffusers (``transformer.``) or ComfyUI (``diffusion_model.``) prefix."""
    for prefix in KEY_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def parse_lora_state_dict(state_dict: dict[str, torch.Tensor], source: str = "LoRA file") -> dict[str, LoraWeights]:
    """Group a LoRA state dict by target module name (prefix stripped, A/B paired)."""
    downs: dict[str, torch.Tensor] = {}
    ups: dict[str, torch.Tensor] = {}
    alphas: dict[str, float] = {}
    for raw_key, tensor in state_dict.items():
        key = strip_prefix(raw_key)
        if m := _SUFFIX.match(key):
            target = downs if m["kind"] in ("lora_A", "lora_down") else ups
            target[m["module"]] = tensor
        elif m := _ALPHA.match(key):
            alphas[m["module"]] = float(tensor.item())
        else:
            raise RestorerInputError(
                f"The {source} has a key that is not a LoRA weight ({raw_key!r}); expected keys like "
                "'transformer.transformer_blocks.0.attn1.to_q.lora_A.weight'."
            )
    if not downs and not ups:
        raise RestorerInputError(f"The {source} contains no LoRA weights.")
    unpaired = sorted(set(downs) ^ set(ups))
    if unpaired:
        raise RestorerInputError(f"The {source} has an unpaired lora_A/lora_B for module {unpaired[0]!r}.")
    return {name: LoraWeights(downs[name], ups[name], alphas.get(name)) for name in sorted(downs)}


def _base_linear(module: nn.Module) -> nn.Module:
    return getattr(module, "base_layer", module)


def check_fits(transformer: nn.Module, weights: dict[str, LoraWeights], source: str) -> None:
    """Raise unless every LoRA target is a linear layer of the transformer with fitting shapes."""
    modules = dict(transformer.named_modules())
    known = [name for name in weights if name in modules]
    if not known:
        example = next(iter(weights))
        raise RestorerInputError(
            f"The {source} matches no module of the transformer (it targets e.g. {example!r}), "
            "so it was made for a different model or uses an unknown key format."
        )
    unknown = [name for name in weights if name not in modules]
    if unknown:
        raise RestorerInputError(
            f"The {source} targets {len(unknown)} module(s) the transformer does not have (e.g. {unknown[0]!r}), "
            "so its targets do not fit this backbone."
        )
    for name, lora in weights.items():
        base = _base_linear(modules[name])
        if not isinstance(base, nn.Linear):
            raise RestorerInputError(f"The {source} targets {name!r}, which is a {type(base).__name__}, not a linear layer.")
        if lora.up.shape[1] != lora.rank or lora.down.shape[1] != base.in_features or lora.up.shape[0] != base.out_features:
            raise RestorerInputError(
                f"The {source} has rank/shape A{tuple(lora.down.shape)} B{tuple(lora.up.shape)} for {name!r}, "
                f"which does not fit its {base.in_features}->{base.out_features} linear layer."
            )


def load_lora_adapter(transformer: nn.Module, path: str | Path, adapter_name: str) -> int:
    """Load a LoRA file as the named peft adapter ``adapter_name``; return how many modules it landed in.

    Raises:
        RestorerInputError: the file is missing, its keys match no module, or rank/targets do not fit.
    """
    from peft import LoraConfig, inject_adapter_in_model
    from safetensors.torch import load_file

    path = Path(path)
    source = f"LoRA file {path}"
    if not path.exists():
        raise RestorerInputError(f"The {source} does not exist.")
    weights = parse_lora_state_dict(load_file(str(path)), source)
    check_fits(transformer, weights, source)

    ranks = Counter(w.rank for w in weights.values())
    rank = ranks.most_common(1)[0][0]
    alphas = {name: (w.alpha if w.alpha is not None else float(w.rank)) for name, w in weights.items()}
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=sorted(weights),
        rank_pattern={f"^{re.escape(n)}$": w.rank for n, w in weights.items() if w.rank != rank},
        alpha_pattern={f"^{re.escape(n)}$": a for n, a in alphas.items() if a != alpha},
        lora_dropout=0.0,
        init_lora_weights=False,
    )
    with warnings.catch_warnings():
        # peft warns when a second named adapter joins the first: that is the point here.
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        inject_adapter_in_model(config, transformer, adapter_name=adapter_name)

    landed = 0
    with torch.no_grad():
        for name, lora in weights.items():
            module = transformer.get_submodule(name)
            if not hasattr(module, "lora_A") or adapter_name not in module.lora_A:
                continue
            module.lora_A[adapter_name].weight.copy_(lora.down)
            module.lora_B[adapter_name].weight.copy_(lora.up)
            landed += 1
    if landed != len(weights):
        raise RestorerInputError(
            f"The {source} landed in {landed} of its {len(weights)} target modules; peft could not place the rest."
        )
    transformer.requires_grad_(False)
    return landed


def adapter_names(transformer: nn.Module) -> set[str]:
    """Names of the LoRA adapters present on the transformer."""
    names: set[str] = set()
    for module in transformer.modules():
        if hasattr(module, "lora_A") and isinstance(module.lora_A, nn.ModuleDict):
            names.update(module.lora_A.keys())
    return names


def lora_modules(transformer: nn.Module, adapter_name: str) -> set[str]:
    """Names of the modules that carry ``adapter_name``."""
    return {
        name
        for name, module in transformer.named_modules()
        if hasattr(module, "lora_A") and isinstance(module.lora_A, nn.ModuleDict) and adapter_name in module.lora_A
    }


def set_active_adapter(transformer: nn.Module, adapter_name: str) -> None:
    """Make ``adapter_name`` the only active adapter on every LoRA layer (layers without it run bare)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    if adapter_name not in adapter_names(transformer):
        raise RestorerInputError(f"The transformer has no LoRA adapter named {adapter_name!r}; load it first.")
    for module in transformer.modules():
        if isinstance(module, BaseTunerLayer):
            module.set_adapter(adapter_name)
    transformer.requires_grad_(False)
