"""From a preset to what :class:`restorer.pipeline.ArtifactRestorer` is built from: the preset with its
memory profile applied, the release roots, the torch dtype and the inference settings.

:mod:`restorer.presets` holds the presets as pure data; this module resolves them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .aatf import OFFICIAL_BLEND_TABLE, BlendTable, HeatmapSchedule, PiecewiseDecay, official_blend_table
from .errors import RestorerInputError
from .memory_profiles import check_gpu_fits, get_profile
from .roots import ReleaseRoots, resolve_roots


@dataclass
class RestorerSettings:
    """Inference settings resolved from a preset (see ``restorer/presets.py``)."""

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


def resolve_restorer_preset(name: str, overrides: dict):
    """The named preset with ``overrides`` and its memory profile's options applied (one sentence if unknown)."""
    from .presets import get_preset

    try:
        preset = get_preset(name, **overrides)
    except (KeyError, TypeError) as err:
        raise RestorerInputError(str(err.args[0])) from None
    if preset.memory_profile is not None:
        preset = apply_memory_profile(preset)
    return preset


def apply_memory_profile(preset):
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


def builds_tiny_release(preset) -> bool:
    """The tiny preset builds its own release in the cache, unless the user points it at roots."""
    return preset.build_tiny_release and not any((preset.weights_root, preset.ltx_main_root, preset.ltx_097_dev_root))


def preset_roots(preset) -> ReleaseRoots:
    """The preset's release roots; the tiny preset builds its release in the cache dir on first use."""
    if builds_tiny_release(preset):
        from .tiny import ensure_tiny_release

        return ensure_tiny_release()
    return resolve_roots(preset.weights_root, preset.ltx_main_root, preset.ltx_097_dev_root)


def settings_from_preset(preset, label: str) -> RestorerSettings:
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
