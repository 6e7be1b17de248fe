"""LoRA adapters on the one shared transformer (the paper's homogeneous dual model).

Both released LoRA files are loaded as *named* peft adapters (``stage1``,
``stage2``) on the same frozen transformer; :func:`set_active_adapter` switches
between them. Two key formats are accepted:

* diffusers: ``transformer.<module>.lora_A.weight`` / ``lora_B.weight``
* ComfyUI (what LTX-Video-Trainer exports): ``diffusion_model.<module>.lora_A.weight`` ...

(``lora_down`` / ``lora_up``, per-module ``.alpha`` entries and the ``base_model.model.`` /
``model.diffusion_model.`` prefixes are understood too.) Every module named by the file must exist as a
linear layer with matching shapes; otherwise loading fails with one sentence saying why, before diffusers'
LTX LoRA loader (:func:`load_lora_adapter`) places the adapter.
"""

from __future__ import annotations

import re
import warnings
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
            raise RestorerInputError(
                f"The {source} targets {name!r}, which is a {type(base).__name__}, not a linear layer."
            )
        if (
            lora.up.shape[1] != lora.rank
            or lora.down.shape[1] != base.in_features
            or lora.up.shape[0] != base.out_features
        ):
            raise RestorerInputError(
                f"The {source} has rank/shape A{tuple(lora.down.shape)} B{tuple(lora.up.shape)} for {name!r}, "
                f"which does not fit its {base.in_features}->{base.out_features} linear layer."
            )


def diffusers_lora_state(state_dict: dict[str, torch.Tensor], weights: dict[str, LoraWeights]):
    """The file's tensors in the forms diffusers' LTX loader reads, and its alphas as ``network_alphas``.

    diffusers covers the two official layouts as they are (``transformer.*`` and, through
    ``LTXVideoLoraLoaderMixin.lora_state_dict``, an all-``diffusion_model.*`` file). What it lacks, and this
    step supplies (keys only; tensors untouched):

    * other prefixes (``base_model.model.``, ``model.diffusion_model.``, none) and files that mix them:
      the LTX conversion knows ``diffusion_model.`` alone and rejects a file where not every key has it;
    * ``lora_down`` / ``lora_up``: its unet-style renaming is tried only when the first key lacks ``lora_A``;
    * ``.alpha`` entries: the transformer loader would take them for target modules; they go in as
      ``network_alphas``, where a lone value applies to every module, so modules without one get
      ``alpha = rank`` (what no alpha means).
    """
    comfy = all(key.startswith(("diffusion_model.", "model.diffusion_model.")) for key in state_dict)
    prefix = "diffusion_model." if comfy else "transformer."
    kinds = {"lora_down": "lora_A", "lora_up": "lora_B"}
    tensors = {}
    for raw_key, tensor in state_dict.items():
        if m := _SUFFIX.match(strip_prefix(raw_key)):
            tensors[f"{prefix}{m['module']}.{kinds.get(m['kind'], m['kind'])}.weight"] = tensor
    alphas = None
    if any(w.alpha is not None for w in weights.values()):
        alphas = {f"transformer.{n}.alpha": float(w.rank) if w.alpha is None else w.alpha for n, w in weights.items()}
    return tensors, alphas


def load_lora_adapter(transformer: nn.Module, path: str | Path, adapter_name: str) -> int:
    """Load a LoRA file as the named peft adapter ``adapter_name``; return how many modules it landed in.

    The pre-checks (one sentence each) are ours: diffusers skips or merely logs keys that do not fit. The
    loading is diffusers' own: ``LTXVideoLoraLoaderMixin.lora_state_dict`` (ComfyUI -> diffusers keys) and
    the transformer's ``load_lora_adapter`` (ranks and alphas -> ``LoraConfig``, peft injection, weights).

    Raises:
        RestorerInputError: the file is missing, its keys match no module, or rank/targets do not fit.
    """
    from diffusers.loaders import LTXVideoLoraLoaderMixin, PeftAdapterMixin
    from safetensors.torch import load_file

    path = Path(path)
    source = f"LoRA file {path}"
    if not path.exists():
        raise RestorerInputError(f"The {source} does not exist.")
    if not isinstance(transformer, PeftAdapterMixin):
        kind = type(transformer).__name__
        raise TypeError(f"LoRA adapters load into a diffusers PeftAdapterMixin model, not a {kind}.")
    state_dict = load_file(str(path))
    weights = parse_lora_state_dict(state_dict, source)
    check_fits(transformer, weights, source)
    if adapter_name in adapter_names(transformer):
        raise RestorerInputError(f"The transformer already has a LoRA adapter named {adapter_name!r}.")

    tensors, alphas = diffusers_lora_state(state_dict, weights)
    tensors = LTXVideoLoraLoaderMixin.lora_state_dict(tensors)
    with warnings.catch_warnings():
        # peft warns when a second named adapter joins the first: that is the point here.
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        transformer.load_lora_adapter(tensors, prefix="transformer", adapter_name=adapter_name, network_alphas=alphas)
    landed = len(lora_modules(transformer, adapter_name))
    if landed != len(weights):
        raise RestorerInputError(
            f"The {source} landed in {landed} of its {len(weights)} target modules; peft could not place the rest."
        )
    transformer.requires_grad_(False)
    return landed


def adapter_names(transformer: nn.Module) -> set[str]:
    """Names of the LoRA adapters present on the transformer (peft's ``peft_config`` registry)."""
    return set(getattr(transformer, "peft_config", {}))


def lora_modules(transformer: nn.Module, adapter_name: str) -> set[str]:
    """Names of the modules that carry ``adapter_name``."""
    from peft.tuners.lora import LoraLayer

    layers = ((name, module) for name, module in transformer.named_modules() if isinstance(module, LoraLayer))
    return {name for name, module in layers if adapter_name in module.lora_A}


def set_active_adapter(transformer: nn.Module, adapter_name: str) -> None:
    """Make ``adapter_name`` the only active adapter on every LoRA layer (layers without it run bare)."""
    if adapter_name not in adapter_names(transformer):
        raise RestorerInputError(f"The transformer has no LoRA adapter named {adapter_name!r}; load it first.")
    transformer.set_adapter(adapter_name)  # diffusers' PeftAdapterMixin
    transformer.requires_grad_(False)  # peft's set_adapter marks the active adapter trainable
