"""The models a restorer preset gives the training tools (``aw-make-pairs``, ``aw-train-lora``): its release
roots checked for training, its VAE and its stage prompts' T5 embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import RestorerInputError
from .loading import load_text_encoder, single_file_name, text_encoder_identity
from .prompts import STAGE_PROMPTS, PromptEmbedding, cached_prompt_embeddings
from .roots import (
    ReleaseRoots,
    cache_dir,
    check_transformer_source,
    download_command,
    resolve_roots,
)


@dataclass
class PresetModels:
    """What a preset resolves to for training: its roots and processing settings."""

    name: str
    roots: ReleaseRoots
    processing_max_side: int | None
    processing_size: tuple[int, int] | None
    """The preset's official ``(H, W)`` (cover-resize + center-crop), or None for a plain resize."""
    max_prompt_tokens: int
    frame_rate: float
    device: str | None
    untrained: bool
    transformer_source: str = "0.9.8-distilled"
    """Base transformer the adapters train on (the official ``model_source``: LTX-Video 0.9.8-distilled)."""
    transformer_config: str = "ltxv-13b"
    """Configuration of the single-file transformer (``ltxv-13b``, or ``tiny`` for the tiny preset)."""


def resolve_preset(name: str, transformer_config: str | None = None) -> PresetModels:
    """Roots and settings of a restorer preset (``tiny`` builds its untrained release in the cache on first use).

    ``transformer_config`` (e.g. ``ltxv-2b`` for the world model) replaces the preset's base transformer, except on
    the untrained tiny preset, whose one tiny transformer stands in for every base.

    Unlike inference, training needs only the LTX roots (VAE, text encoder, base transformer),
    not the released LoRA files (:func:`check_training_roots`).
    """
    from .presets import get_preset

    try:
        preset = get_preset(name)
    except KeyError as err:
        raise RestorerInputError(str(err.args[0])) from None
    if preset.build_tiny_release and not any((preset.weights_root, preset.ltx_main_root, preset.ltx_097_dev_root)):
        from .tiny import ensure_tiny_release

        roots = ensure_tiny_release()
    else:
        roots = resolve_roots(preset.weights_root, preset.ltx_main_root, preset.ltx_097_dev_root)
    config_name = preset.transformer_config if preset.untrained or not transformer_config else transformer_config
    check_training_roots(roots, preset.transformer_source, single_file_name(config_name))
    return PresetModels(
        name=name,
        roots=roots,
        processing_max_side=preset.processing_max_side,
        processing_size=_tuple_or_none(preset.processing_size),
        max_prompt_tokens=preset.max_prompt_tokens,
        frame_rate=preset.frame_rate,
        device=preset.device,
        untrained=preset.untrained,
        transformer_source=preset.transformer_source,
        transformer_config=config_name,
    )


def check_training_roots(roots: ReleaseRoots, transformer_source: str, single_file: str | None = None) -> None:
    """One sentence (with the fetch command) unless the roots hold the VAE, the text encoder and the base transformer.

    Training needs no released LoRA file and no scheduler; the transformer is the single file
    ``ltxv-13b-0.9.8-distilled.safetensors`` in the LTX-Video root (the official ``model_source``)
    or, with ``transformer_source="0.9.7-dev"``, the 0.9.7-dev root's ``transformer/``. ``single_file``: another
    single file of that root (the world model's ``ltxv-2b-0.9.8-distilled.safetensors``).
    """
    check_transformer_source(transformer_source)
    need = [("ltx_main", roots.ltx_main / "vae"), ("ltx_main", roots.ltx_main / "text_encoder")]
    if transformer_source == "0.9.7-dev":
        need.append(("ltx_097_dev_transformer", roots.ltx_097_dev / "transformer"))
    else:
        need.append(("ltx_main", roots.ltx_main / (single_file or single_file_name("ltxv-13b"))))
    for what, path in need:
        if not path.exists():
            root = roots.ltx_main if what == "ltx_main" else roots.ltx_097_dev
            raise RestorerInputError(
                f"The {what.replace('_transformer', '')} root {root} has no {path.name}; "
                f"fetch it with `{download_command(what, root, single_file)}`."
            )


def _tuple_or_none(size) -> tuple[int, int] | None:
    return None if size is None else (int(size[0]), int(size[1]))


def load_vae(models: PresetModels, device: torch.device | str, dtype: torch.dtype = torch.float32):
    """The preset's frozen VAE."""
    from diffusers import AutoencoderKLLTXVideo

    vae = AutoencoderKLLTXVideo.from_pretrained(models.roots.ltx_main, subfolder="vae", torch_dtype=dtype)
    return vae.requires_grad_(False).eval().to(device)


def prompt_embeddings(models: PresetModels, device: torch.device | str = "cpu") -> dict[str, PromptEmbedding]:
    """The stage prompts' T5 embeddings through the restorer's on-disk cache (text encoder loaded at most once)."""
    return cached_prompt_embeddings(
        STAGE_PROMPTS,
        text_encoder_identity(models.roots),
        lambda: load_text_encoder(models.roots, device, torch.float32),
        cache_dir(),
        max_tokens=models.max_prompt_tokens,
    )
