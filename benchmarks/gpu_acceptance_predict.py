"""What ``gpu_acceptance.py`` puts beside each measured figure: the predictions of ``restorer/memory_profiles.py``
(bytes) and of ``full_scale.py``'s model (seconds), for one memory profile at the run's depth.

Memory, per phase of a stage (``transformer`` = the sampling steps, ``vae_encode``, ``vae_decode``), three
levels of the same model, so each assumption is checked on its own::

    allocated = weights on the GPU + activations                       (counted + measured on a CPU)
    reserved  = weights on the GPU + ALLOCATOR_SLACK x activations     (+ the assumed 1.1 allocator factor)
    device    = CUDA_OVERHEAD + reserved                               (+ the assumed 0.8 GB context: phase_peaks)

Seconds: the FLOPs that ``full_scale.py`` counted (``RELEASE_FLOPS``) at its stated utilisation of the GPU's
dense bf16 peak, with its weight streaming under group offload (``full_scale.seconds_per_clip``). A stage runs
its sampling steps, one VAE encode (stage 1 the reference, stage 2 the handed-off heatmap; stage 2 reuses
stage 1's reference latent) and one decode. Moving the restorer off and back onto the GPU (``offload()`` and
``to(device)``) moves the weights that are on the GPU over the host link ``full_scale.GPUS`` assumes.
"""

from __future__ import annotations

from dataclasses import replace

from full_scale import GPUS, VAE_UTILISATION, seconds_per_clip
from full_scale_workers import STEPS_PER_STAGE

from artifactworld_ns.restorer.memory_profiles import (
    ALLOCATOR_SLACK,
    CUDA_OVERHEAD,
    RELEASE_FIGURES,
    get_profile,
    phase_peaks,
    resident_bytes,
)

RELEASE_FLOPS = {
    "stage1": {"fixed": 3.19e12, "per_block": 9.49e12},
    "stage2": {"fixed": 4.77e12, "per_block": 16.39e12},
    "vae": {
        False: {"encode": 149.1e12, "decode": 64.3e12},
        True: {"encode": 188.8e12, "decode": 81.4e12},
    },
}
"""FLOPs of one denoising step (``fixed + depth x per_block``; real-width blocks measured on a CPU) and of one VAE
encode / decode of 97 x 544 x 960 (traced on the meta device; tiled or not), from ``python benchmarks/full_scale.py``
(2026-11-22, benchmarks/README.md)."""

GPU_SPECS = {
    **GPUS,
    "H200-SXM-141GB": {"bf16_tflops": 989.0, "hbm_tbps": 4.8, "host_gbps": 50.0, "splatfacto_min": 12.0},
}
"""``full_scale.GPUS`` and the H200 (the H100's dense bf16 peak, its own HBM bandwidth; datasheet)."""

STAGE_PHASES = {
    "stage1": {"transformer": "stage 1 sampling", "vae_encode": "VAE encode", "vae_decode": "VAE decode"},
    "stage2": {"transformer": "stage 2 sampling", "vae_encode": "VAE encode", "vae_decode": "VAE decode"},
}
"""Each measured phase of a stage and its phase in ``memory_profiles.phase_peaks``."""


def gpu_spec(device_name: str | None) -> tuple[str, dict, bool]:
    """``(name, spec, recognised)`` of the GPU the seconds are predicted for; an unknown GPU (or none) gets the
    H100's figures, with ``recognised`` False."""
    for key, name in (("H200", "H200-SXM-141GB"), ("H100", "H100-SXM5-80GB"), ("A100", "A100-SXM4-80GB")):
        if device_name and key in device_name.upper():
            return name, GPU_SPECS[name], True
    return "H100-SXM5-80GB", GPU_SPECS["H100-SXM5-80GB"], False


def profile_predictions(profile_name: str, depth: int, steps: int, gpu: dict) -> dict:
    """Predicted bytes per stage and phase, seconds per stage and phase, and seconds to offload / reload, for the
    13B width at ``depth`` blocks, the official 97 x 544 x 960 reference and ``steps`` steps per stage."""
    profile = get_profile(profile_name)
    fp8, offload, tiled = profile.fp8_transformer_storage, profile.group_offload, profile.vae_tiling
    figures = replace(RELEASE_FIGURES, num_blocks=depth)
    resident = resident_bytes(figures, fp8, offload)
    transient = figures.largest_layer_bf16 if fp8 else 0
    device = phase_peaks(figures, fp8, offload, tiled)
    suffix = "_tiled" if tiled else ""
    activations = {
        "stage1": {"transformer": figures.activations["stage1"]},
        "stage2": {"transformer": figures.activations["stage2"]},
    }
    for stage in activations:
        activations[stage]["vae_encode"] = figures.activations[f"vae_encode{suffix}"]
        activations[stage]["vae_decode"] = figures.activations[f"vae_decode{suffix}"]

    step_flops = {s: RELEASE_FLOPS[s]["fixed"] + depth * RELEASE_FLOPS[s]["per_block"] for s in ("stage1", "stage2")}
    clip = seconds_per_clip(gpu, figures, step_flops, RELEASE_FLOPS["vae"], fp8, offload, tiled)
    vae_rate = gpu["bf16_tflops"] * 1e12 * VAE_UTILISATION
    stages = {}
    for stage, phases in STAGE_PHASES.items():
        extra = {p: (transient if p == "transformer" else 0) for p in phases}
        memory = {
            p: {
                "allocated": resident + activations[stage][p] + extra[p],
                "reserved": resident + int(ALLOCATOR_SLACK * activations[stage][p]) + extra[p],
                "device": device[name],
            }
            for p, name in phases.items()
        }
        seconds = {
            "transformer": clip[stage] * steps / STEPS_PER_STAGE,
            "vae_encode": RELEASE_FLOPS["vae"][tiled]["encode"] / vae_rate,
            "vae_decode": RELEASE_FLOPS["vae"][tiled]["decode"] / vae_rate,
        }
        stages[stage] = {
            "memory": memory,
            "peak": {level: max(m[level] for m in memory.values()) for level in ("allocated", "reserved", "device")},
            "seconds": seconds,
            "stage_seconds": sum(seconds.values()),
        }
    moved = resident if not offload else figures.vae
    return {
        "stages": stages,
        "restore_seconds": stages["stage1"]["stage_seconds"] + stages["stage2"]["stage_seconds"],
        "offload_seconds": moved / (gpu["host_gbps"] * 1e9),
        "reload_seconds": moved / (gpu["host_gbps"] * 1e9),
        "moved_bytes": moved,
        "cuda_overhead_bytes": CUDA_OVERHEAD,
    }
