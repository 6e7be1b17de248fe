"""Restorer presets, and the one path from a preset to what a restorer is built from.

A preset (:class:`RestorerPreset`, pure data) resolves here to its release roots (:func:`preset_roots`; the tiny
preset builds its untrained release in the cache), its inference settings (:func:`settings_from_preset`) and its
memory profile (:func:`apply_memory_profile`). :meth:`artifactworld_ns.restorer.pipeline.ArtifactRestorer.from_preset`
loads a restorer from them; the training tools (``aw-make-pairs``, ``aw-train-lora``) take the same roots and
settings as :class:`PresetModels` (:func:`resolve_preset`).

* ``full`` -- the released weights with the official inference conventions:
  LTX-Video 0.9.8-distilled 13B + the two ArtifactWorld LoRAs, 8 Euler steps per stage on LTX's
  linear-quadratic sigmas, the official heatmap blend table, seed 42, and the official size
  960 x 544 (inputs resized to cover and center-cropped; other aspect ratios at the same token
  budget, see :mod:`artifactworld_ns.restorer.conform`).
* ``tiny`` -- a random-init tiny model with the same architecture family and the
  release's folder layout, built offline in seconds; UNTRAINED (random weights), for
  tests and CPU smoke runs only.

Model configurations (13B, 2B, tiny) are in :mod:`artifactworld_ns.restorer.configs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

from .aatf import OFFICIAL_BLEND_TABLE, BlendTable, HeatmapSchedule, PiecewiseDecay, official_blend_table
from .errors import RestorerInputError
from .loading import load_text_encoder, single_file_name, text_encoder_identity
from .memory_profiles import check_gpu_fits, get_profile
from .prompts import STAGE_PROMPTS, PromptEmbedding, cached_prompt_embeddings
from .roots import (
    ReleaseRoots,
    cache_dir,
    check_transformer_source,
    download_command,
    resolve_roots,
)

# ---------------------------------------------------------------------------------------------- the presets (data)


@dataclass(frozen=True)
class RestorerPreset:
    """Everything ``ArtifactRestorer.from_preset`` needs; any field can be overridden by keyword."""

    name: str
    untrained: bool = False
    """True for random-weight presets; every message they print says so."""
    build_tiny_release: bool = False
    """Build the tiny release in the cache dir (first use) and load it through the normal loader."""
    num_inference_steps: int = 8
    """Stage-2 Euler steps (the official ``inference_steps``: 8)."""
    heatmap_steps: int = 8
    """Stage-1 Euler steps (8)."""
    blend_table: tuple[tuple[float, float, float], ...] | None = None
    """Per-step heatmap blend rows in the official column order (w_full, w_null, w_heatmap), as in the
    release's ``noisemap_blend_weights``; None -> the official table (scaled to other step counts)."""
    decay_thresholds: tuple[float, float] | None = None
    """(tau1, tau2) for Eq. 2's threshold form with linear alpha/beta; overrides ``blend_table``."""
    processing_size: tuple[int, int] | None = (544, 960)
    """(height, width) the model sees: the official 544 x 960; None -> native size capped by ``processing_max_side``."""
    processing_max_side: int | None = None
    """With ``processing_size=None``: cap on the long side the model sees (resized down and back); None = native."""
    frame_rate: float = 25.0
    """Frame rate used to scale the temporal RoPE coordinate (the official pipeline's default, 25)."""
    seed: int = 42
    """The official validation seed; one generator per stage, drawn in the official order."""
    max_prompt_tokens: int = 256
    """T5 tokens per prompt, padded, with the attention mask (the official ``max_sequence_length``)."""
    transformer_source: str = "0.9.8-distilled"
    """``0.9.8-distilled`` (official: ``ltxv-13b-0.9.8-distilled.safetensors`` in the LTX-Video root) or
    ``0.9.7-dev`` (the sharded transformer of the 0.9.7-dev root, named by the release README)."""
    transformer_config: str = "ltxv-13b"
    """Configuration for the single-file transformer, a key of
    :data:`artifactworld_ns.restorer.configs.TRANSFORMER_CONFIGS`: ``ltxv-13b`` (the release's), ``ltxv-2b`` (the
    world model's base) or ``tiny``."""
    weights_root: str | None = None
    """None -> $ARTIFACTWORLD_WEIGHTS_ROOT -> <cache>/weights/ArtifactWorld."""
    ltx_main_root: str | None = None
    """None -> $ARTIFACTWORLD_LTX_MAIN_ROOT -> <cache>/weights/LTX-Video."""
    ltx_097_dev_root: str | None = None
    """Only for ``transformer_source="0.9.7-dev"``: None -> $ARTIFACTWORLD_LTX_097_DEV_ROOT -> <cache>/weights/LTX-Video-0.9.7-dev."""
    allow_download: bool = False
    """Download missing roots from the hub (huggingface_hub, only the needed files)."""
    device: str | None = None
    """None -> cuda when available, else cpu."""
    show_progress: bool = True
    """Rich progress bars for the sampling steps when no progress callback is given."""
    vae_tiling: bool = False
    """Encode/decode with the VAE in spatial tiles (diffusers ``enable_tiling``): at 97 x 544 x 960 the VAE's
    peak activations fall from 6.6 to 3.8 GB for 27 % more VAE FLOPs (traced, benchmarks/full_scale.py);
    small seams possible. Off by default; the 40gb and 24gb memory profiles turn it on."""
    fp8_transformer_storage: bool = False
    """Store the transformer's linear/conv weights as float8_e4m3fn and upcast each layer to the compute
    dtype when it runs (diffusers ``enable_layerwise_casting``; norms, embeddings and LoRA weights stay in
    the compute dtype). Halves the blocks' weights (25.8 -> 12.9 GB, counted); rounds them, so outputs change.
    Off by default and in every memory profile (they keep bf16 numbers)."""
    group_offload: bool = False
    """Keep the transformer's weights in CPU memory and move them to the GPU one block at a time when they run
    (diffusers ``enable_group_offload``, block level, prefetched on a CUDA stream when there is one). Same
    outputs; needs about 30 GB of host memory for the 13B transformer."""
    memory_profile: str | None = None
    """``80gb``, ``40gb`` or ``24gb``: sets ``group_offload`` and ``vae_tiling`` for a GPU of that size
    (``restorer/memory_profiles.py``; none turns on ``fp8_transformer_storage``); prints the predicted peak and
    refuses a smaller GPU."""
    force_memory_profile: bool = False
    """Run a memory profile even when the detected GPU is smaller than its predicted peak."""
    torch_dtype: str | None = None
    """``bfloat16`` or ``float32`` for the transformer and VAE; None -> bf16 on CUDA, float32 elsewhere."""
    transformer_num_layers: int | None = None
    """Load only this many of the transformer's blocks (full-width checks at reduced depth); None = all."""


PRESETS: dict[str, RestorerPreset] = {
    "full": RestorerPreset(name="full"),
    "tiny": RestorerPreset(
        name="tiny",
        untrained=True,
        build_tiny_release=True,
        processing_size=None,
        processing_max_side=256,
        transformer_config="tiny",
        device="cpu",
    ),
}


def preset_field_names() -> set[str]:
    return {f.name for f in fields(RestorerPreset)}


def get_preset(name: str, **overrides) -> RestorerPreset:
    """Look up a preset by name and apply keyword overrides (unknown names raise KeyError/TypeError)."""
    if name not in PRESETS:
        raise KeyError(f"Unknown restorer preset {name!r}; choose one of {sorted(PRESETS)}.")
    unknown = set(overrides) - preset_field_names()
    if unknown:
        raise TypeError(f"Unknown restorer preset option(s) {sorted(unknown)}; valid: {sorted(preset_field_names())}.")
    return replace(PRESETS[name], **overrides)


# ---------------------------------------------------------------------------------------------- inference: settings, profile, roots


@dataclass
class RestorerSettings:
    """Inference settings resolved from a preset (:func:`settings_from_preset`)."""

    num_inference_steps: int = 8
    heatmap_steps: int = 8
    schedule: HeatmapSchedule = field(default_factory=lambda: OFFICIAL_BLEND_TABLE)
    processing_max_side: int | None = None
    processing_size: tuple[int, int] | None = None
    frame_rate: float = 25.0
    seed: int = 42
    label: str = ""
    show_progress: bool = True


def console():
    from rich.console import Console

    return Console(stderr=True)


def resolve_restorer_preset(name: str, overrides: dict) -> RestorerPreset:
    """The named preset with ``overrides`` and its memory profile's options applied (one sentence if unknown)."""
    try:
        preset = get_preset(name, **overrides)
    except (KeyError, TypeError) as err:
        raise RestorerInputError(str(err.args[0])) from None
    if preset.memory_profile is not None:
        preset = apply_memory_profile(preset)
    return preset


def apply_memory_profile(preset: RestorerPreset) -> RestorerPreset:
    """The preset with its memory profile's options, after printing the predicted peak; refuses a GPU
    smaller than the prediction unless ``force_memory_profile``."""
    profile = get_profile(preset.memory_profile)
    device = torch.device(preset.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    line = check_gpu_fits(profile, total, force=preset.force_memory_profile)
    console().print(
        line if total is not None else f"{line} No GPU in use: the profile's options run on the CPU.",
        markup=False,
        soft_wrap=True,
    )
    return replace(preset, **profile.options())


def torch_dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    if name not in ("bfloat16", "float32"):
        raise RestorerInputError(f"Unknown torch_dtype {name!r}; choose bfloat16 or float32.")
    return getattr(torch, name)


def builds_tiny_release(preset: RestorerPreset) -> bool:
    """The tiny preset builds its own release in the cache, unless the user points it at roots (the one place
    this rule is written: inference and training both get their roots from :func:`preset_roots`)."""
    return preset.build_tiny_release and not any((preset.weights_root, preset.ltx_main_root, preset.ltx_097_dev_root))


def preset_roots(preset: RestorerPreset) -> ReleaseRoots:
    """The preset's release roots; the tiny preset builds its release in the cache dir on first use."""
    if builds_tiny_release(preset):
        from .tiny import ensure_tiny_release

        return ensure_tiny_release()
    return resolve_roots(preset.weights_root, preset.ltx_main_root, preset.ltx_097_dev_root)


def settings_from_preset(preset: RestorerPreset, label: str) -> RestorerSettings:
    """The preset's inference settings; its heatmap schedule must have one row per step."""
    if preset.decay_thresholds is not None:
        schedule: HeatmapSchedule = PiecewiseDecay(*preset.decay_thresholds)
    elif preset.blend_table is not None:
        schedule = BlendTable(tuple(tuple(row) for row in preset.blend_table))
    else:
        schedule = official_blend_table(preset.num_inference_steps)
    if isinstance(schedule, BlendTable) and len(schedule.rows) != preset.num_inference_steps:
        raise RestorerInputError(
            f"The heatmap blend table has {len(schedule.rows)} rows but "
            f"num_inference_steps is {preset.num_inference_steps}; give a matching blend_table or decay_thresholds."
        )
    return RestorerSettings(
        num_inference_steps=preset.num_inference_steps,
        heatmap_steps=preset.heatmap_steps,
        schedule=schedule,
        processing_max_side=preset.processing_max_side,
        processing_size=tuple(preset.processing_size) if preset.processing_size else None,
        frame_rate=preset.frame_rate,
        seed=preset.seed,
        label=label,
        show_progress=preset.show_progress,
    )


# ---------------------------------------------------------------------------------------------- training: roots and models


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
    """Configuration of the single-file transformer (``ltxv-13b``, ``ltxv-2b`` for the world model, or ``tiny`` for
    the tiny preset)."""


def resolve_preset(name: str, transformer_config: str | None = None) -> PresetModels:
    """Roots and settings of a restorer preset (``tiny`` builds its untrained release in the cache on first use).

    ``transformer_config`` (e.g. ``ltxv-2b`` for the world model) replaces the preset's base transformer, except on
    the untrained tiny preset, whose one tiny transformer stands in for every base.

    Unlike inference, training needs only the LTX roots (VAE, text encoder, base transformer),
    not the released LoRA files (:func:`check_training_roots`).
    """
    try:
        preset = get_preset(name)
    except KeyError as err:
        raise RestorerInputError(str(err.args[0])) from None
    roots = preset_roots(preset)
    config_name = preset.transformer_config if preset.untrained or not transformer_config else transformer_config
    if preset.transformer_source == "0.9.7-dev" and config_name != "ltxv-13b":
        raise RestorerInputError(
            f"The preset {name!r} takes its transformer from the 0.9.7-dev shards, which are the 13B only; "
            f"{config_name} needs its single file, so use a preset with transformer_source='0.9.8-distilled'."
        )
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

    Training needs no released LoRA file; the transformer is the single file
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


def load_training_transformer(models: PresetModels, device: torch.device | str, dtype: torch.dtype) -> torch.nn.Module:
    """The preset's frozen base transformer (the official base: 0.9.8-distilled 13B; the world model's 2B; tiny for
    tests), as training and the world model's sampling load it."""
    from .loading import load_transformer

    transformer = load_transformer(models.roots, dtype, models.transformer_source, models.transformer_config)
    return transformer.requires_grad_(False).eval().to(device)


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
