"""Restorer presets: the inference settings of stage 1 (heatmap) and stage 2 (AATF restore).

Pure data; imports nothing from nerfstudio (or from ``restorer``), so the
restorer can use it on a GPU box that only restores videos.

* ``full`` -- the released weights (LTX-Video 0.9.7-dev 13B + the two ArtifactWorld
  LoRAs), 8 Euler steps per stage, the paper's best heatmap schedule (Table 5, Exp 7).
  The release README names no processing resolution, so clips are processed at their
  native size conformed to multiples of 32 (960x540 -> 960x544); set
  ``processing_max_side`` to cap the long side.
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
    """Stage-2 Euler steps (the paper's Table 5 uses 8)."""
    heatmap_steps: int = 8
    """Stage-1 Euler steps."""
    blend_table: tuple[tuple[float, float, float], ...] | None = None
    """Explicit per-step (w_full, w_heatmap, w_null); None -> the paper's best 8-step schedule."""
    decay_thresholds: tuple[float, float] | None = None
    """(tau1, tau2) for Eq. 2's threshold form with linear alpha/beta; overrides ``blend_table``."""
    processing_max_side: int | None = None
    """Cap on the long side the model sees (inputs are resized down and back); None = native."""
    frame_rate: float = 25.0
    """Frame rate used to scale the temporal RoPE coordinate (LTX convention)."""
    seed: int = 0
    max_prompt_tokens: int = 128
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
    """Encode/decode with the VAE in spatial tiles (diffusers ``enable_tiling``): lower peak memory at large
    sizes, small seams possible. Off by default: not yet measured on a GPU (see benchmarks/README.md)."""
    fp8_transformer_storage: bool = False
    """Store the transformer's linear/conv weights as float8_e4m3fn and upcast each layer to the compute
    dtype when it runs (diffusers ``enable_layerwise_casting``; norms, embeddings and LoRA weights stay in
    the compute dtype). About halves the transformer's weight memory in bf16; off by default (not measured)."""
    model_cpu_offload: bool = False
    """Keep only the model that is working on the GPU: the transformer waits in CPU memory while the VAE
    encodes/decodes and the VAE while the transformer samples. Frees the transformer's weights for the VAE's
    peak at large sizes, at the cost of moving them each stage; off by default (not measured)."""


PRESETS: dict[str, RestorerPreset] = {
    "full": RestorerPreset(name="full"),
    "tiny": RestorerPreset(
        name="tiny",
        untrained=True,
        build_tiny_release=True,
        processing_max_side=256,
        max_prompt_tokens=32,
        seed=0,
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
