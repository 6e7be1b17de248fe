"""Restorer presets: the inference settings of stage 1 (heatmap) and stage 2 (AATF restore).

Pure data, owned by the restorer: resolving a preset into a loaded restorer (roots, schedule, memory
profile) is :mod:`restorer.construction`'s job.

* ``full`` -- the released weights with the official inference conventions (DESIGN.md Sec. 3a):
  LTX-Video 0.9.8-distilled 13B + the two ArtifactWorld LoRAs, 8 Euler steps per stage on LTX's
  linear-quadratic sigmas, the official heatmap blend table, seed 42, and the official size
  960 x 544 (inputs resized to cover and center-cropped; other aspect ratios at the same token
  budget, see :mod:`restorer.conform`).
* ``tiny`` -- a random-init tiny model with the same architecture family and the
  release's folder layout, built offline in seconds; UNTRAINED (random weights), for
  tests and CPU smoke runs only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


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
    """Configuration for the single-file transformer: ``ltxv-13b`` (the release's) or ``tiny``."""
    weights_root: str | None = None
    """None -> $ARTIFACTWORLD_WEIGHTS_ROOT -> <cache>/weights/ArtifactWorld."""
    ltx_main_root: str | None = None
    """None -> $ARTIFACTWORLD_LTX_MAIN_ROOT -> <cache>/weights/LTX-Video."""
    ltx_097_dev_root: str | None = None
    """None -> $ARTIFACTWORLD_LTX_097_DEV_ROOT -> <cache>/weights/LTX-Video-0.9.7-dev."""
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
