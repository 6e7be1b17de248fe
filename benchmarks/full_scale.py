"""The full-size restorer without a GPU: weights, real-width blocks, FLOPs, the VAE, and the GPU model.

    python benchmarks/full_scale.py --out full.json [--vae-frames 17]

What it does, and what each figure is:

1. **Weights (counted).** The exact 13B transformer, both rank-128 LoRA adapters (peft), the LTX
   0.9.7/0.9.8 VAE and the T5-XXL encoder are built on the meta device (no memory) and their bytes
   counted for bf16, fp8 layerwise storage (diffusers ``enable_layerwise_casting``) and block-level
   group offload (what stays on the GPU: the parts outside the blocks plus one block, two with a
   prefetch stream).
2. **Real-width blocks (measured on this CPU).** 1 and then 2 transformer blocks of the real width in
   bf16, with both adapters, one denoising step of each stage at the official token counts (13,260 and
   19,890), run through the project's own stage code (``sample_heatmap_latent``,
   ``sample_restored_latent``), each in a fresh process. Measured: wall time, peak process memory above
   the weights (``VmHWM`` after a reset, minus ``VmRSS`` before), peak live tensor bytes above the weights
   (a storage-tracking dispatch mode: what a GPU's caching allocator would hold) and FLOPs (``FlopCounterMode``).
   Derived, from ``x(L) = fixed + L * per_block``: ``per_block = x(2) - x(1)``, ``fixed = x(1) - per_block``,
   ``x(48) = fixed + 48 * per_block``.
3. **The VAE (traced at full size, measured at --vae-frames).** Encode and decode of 97 x 544 x 960
   with and without tiling through ``encode_video`` / ``decode_latents``: FLOPs and peak live tensor
   bytes traced on the meta device (exact tensor sizes, no arithmetic); the same on the CPU for real at
   ``--vae-frames`` frames (time, process peak, tensor peak), which validates the trace at that size.
4. **The GPU model (derived).** Peak GPU memory per profile from ``restorer/memory_profiles.py``'s
   formula with the figures above, and seconds per clip and per scene on an A100 and an H100 from the
   FLOPs at a stated utilisation, beside the paper's Table 6 and the official two-process design.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from full_scale_report import report
from full_scale_workers import OFFICIAL_CLIP, STEPS_PER_STAGE, quiet_libraries, run_in_fresh_process

from artifactworld_ns.restorer.atomic import atomic_path
from artifactworld_ns.restorer.memory_profiles import count_release_weights

ROUNDS, CLIPS_PER_ROUND = 5, 4
"""The ``artifactworld`` method's closed loop: rounds at 10 .. 50 % of 30,000 iterations, 4 clips each."""
GIB = 1024**3

GPUS = {
    "A100-SXM4-80GB": {"bf16_tflops": 312.0, "hbm_tbps": 2.039, "host_gbps": 25.0, "splatfacto_min": 20.0},
    "H100-SXM5-80GB": {"bf16_tflops": 989.0, "hbm_tbps": 3.35, "host_gbps": 50.0, "splatfacto_min": 12.0},
}
"""Datasheet dense bf16 peak and HBM bandwidth; host link = what pinned copies reach over PCIe 4.0 / 5.0
x16 (about half the 32 / 64 GB/s link rate, stated, not measured); splatfacto's own 30,000 iterations
per scene, assumed (not measured here)."""
TRANSFORMER_UTILISATION = 0.45
"""Stated: fraction of peak the transformer's GEMMs and flash attention reach at 13k-20k tokens."""
VAE_UTILISATION = 0.30
"""Stated: fraction of peak the VAE's 3D convolutions and norms reach."""
DISK_GBPS = 2.0
"""Stated: checkpoint read speed (NVMe) for loading the backbone."""
PAPER_TABLE6 = {"minutes_per_scene": 113.3, "peak_gb": 46.3, "gpu": "A100"}


def linear_fit(one: float, two: float, depth: int = 48) -> dict:
    """``x(L) = fixed + L * per_block`` from ``x(1)`` and ``x(2)``."""
    per_block = two - one
    return {"per_block": per_block, "fixed": one - per_block, "at_depth": one - per_block + depth * per_block}


# ----------------------------------------------------------------------------- 4. the GPU model


def figures_from(weights: dict, blocks: dict, vae_full: dict):
    from artifactworld_ns.restorer.memory_profiles import FullSizeFigures

    return FullSizeFigures(
        transformer_block_bf16=weights["transformer_block_bf16"],
        transformer_block_fp8=weights["transformer_block_fp8"],
        transformer_other_bf16=weights["transformer_other_bf16"],
        lora_block=weights["lora_block_both_adapters"],
        vae=weights["vae_bf16"],
        text_encoder=weights["text_encoder_bf16"],
        largest_layer_bf16=weights["largest_layer_bf16"],
        activations={
            "stage1": max(blocks["stage1"]["tensor_peak"]["at_depth"], blocks["stage1"]["tensor_peak"]["fixed"]),
            "stage2": max(blocks["stage2"]["tensor_peak"]["at_depth"], blocks["stage2"]["tensor_peak"]["fixed"]),
            "vae_encode": vae_full[False]["encode"]["tensor_peak_bytes"],
            "vae_decode": vae_full[False]["decode"]["tensor_peak_bytes"],
            "vae_encode_tiled": vae_full[True]["encode"]["tensor_peak_bytes"],
            "vae_decode_tiled": vae_full[True]["decode"]["tensor_peak_bytes"],
        },
        num_blocks=weights["transformer_blocks"],
    )


def seconds_per_clip(
    gpu: dict, figures, step_flops: dict, vae_flops: dict, fp8: bool, offload: bool, tiled: bool
) -> dict:
    """Derived: compute at the stated utilisation; weight streaming over the host link under group offload
    (overlapped with compute on a stream: ``max``); fp8 upcasts read fp8 and write + read bf16 per step."""
    tflops = gpu["bf16_tflops"] * 1e12
    streamed = figures.num_blocks * (
        (figures.transformer_block_fp8 if fp8 else figures.transformer_block_bf16) + figures.lora_block
    )
    upcast_traffic = (
        figures.num_blocks * (figures.transformer_block_fp8 + 2 * figures.transformer_block_bf16) if fp8 else 0
    )
    out = {}
    for stage in ("stage1", "stage2"):
        compute = step_flops[stage] / (tflops * TRANSFORMER_UTILISATION) + upcast_traffic / (gpu["hbm_tbps"] * 1e12)
        transfer = streamed / (gpu["host_gbps"] * 1e9) if offload else 0.0
        out[stage] = STEPS_PER_STAGE * max(compute, transfer)
    vae = 2 * vae_flops[tiled]["encode"] + 2 * vae_flops[tiled]["decode"]
    out["vae"] = vae / (tflops * VAE_UTILISATION)
    out["clip"] = out["stage1"] + out["stage2"] + out["vae"]
    return out


def predictions(weights: dict, blocks: dict, vae_full: dict) -> dict:
    from artifactworld_ns.restorer.memory_profiles import PROFILES, phase_peaks

    figures = figures_from(weights, blocks, vae_full)
    step_flops = {s: blocks[s]["flops"]["at_depth"] for s in ("stage1", "stage2")}
    vae_flops = {t: {p: vae_full[t][p]["flops"] for p in ("encode", "decode")} for t in (False, True)}
    combos = []
    for fp8 in (False, True):
        for offload in (False, True):
            for tiled in (False, True):
                peaks = phase_peaks(figures, fp8, offload, tiled)
                row = {
                    "fp8": fp8,
                    "group_offload": offload,
                    "vae_tiling": tiled,
                    "peak_bytes": max(peaks.values()),
                    "phases": peaks,
                }
                for name, gpu in GPUS.items():
                    row[name] = seconds_per_clip(gpu, figures, step_flops, vae_flops, fp8, offload, tiled)
                combos.append(row)
    profiles = {}
    for name, profile in PROFILES.items():
        row = next(
            c
            for c in combos
            if (c["fp8"], c["group_offload"], c["vae_tiling"])
            == (profile.fp8_transformer_storage, profile.group_offload, profile.vae_tiling)
        )
        profiles[name] = {"row": row, "fits": row["peak_bytes"] <= profile.gpu_gb * 1e9}
    load_s = (
        weights["transformer_bf16"]
        + weights["transformer_blocks"] * weights["lora_block_both_adapters"]
        + weights["vae_bf16"]
    ) / (DISK_GBPS * 1e9)
    official = official_two_process(weights, figures, step_flops, vae_flops)
    per_scene = {}
    for name, gpu in GPUS.items():
        for profile_name, p in profiles.items():
            clip = p["row"][name]["clip"]
            restore_min = (load_s + ROUNDS * CLIPS_PER_ROUND * clip) / 60
            per_scene[f"{profile_name} on {name}"] = {
                "seconds_per_clip": clip,
                "restoration_minutes": restore_min,
                "splatfacto_minutes_assumed": gpu["splatfacto_min"],
                "minutes_per_scene": restore_min + gpu["splatfacto_min"],
            }
        clip = official[name]["seconds_per_clip"]
        per_scene[f"official two-process on {name}"] = {
            "seconds_per_clip": clip,
            "restoration_minutes": ROUNDS * CLIPS_PER_ROUND * clip / 60,
            "splatfacto_minutes_assumed": gpu["splatfacto_min"],
            "minutes_per_scene": ROUNDS * CLIPS_PER_ROUND * clip / 60 + gpu["splatfacto_min"],
        }
    return {
        "figures": figures.__dict__,
        "combinations": combos,
        "profiles": profiles,
        "per_scene": per_scene,
        "official_two_process": official,
        "load_seconds": load_s,
    }


def official_two_process(weights: dict, figures, step_flops: dict, vae_flops: dict) -> dict:
    """The official scripts: one process per stage, each loading the bf16 backbone (with its one adapter) and
    T5, running T5 and keeping it on the GPU; peak by the same formula as the profiles."""
    from artifactworld_ns.restorer.memory_profiles import ALLOCATOR_SLACK, CUDA_OVERHEAD

    one_adapter = weights["lora_block_both_adapters"] // 2 * weights["transformer_blocks"]
    resident = weights["transformer_bf16"] + one_adapter + weights["vae_bf16"] + weights["text_encoder_bf16"]
    load_s = resident / (DISK_GBPS * 1e9)
    peak = CUDA_OVERHEAD + resident + int(ALLOCATOR_SLACK * max(figures.activations.values()))
    out = {"peak_bytes_if_t5_stays_on_gpu": peak, "load_seconds_per_stage": load_s}
    for name, gpu in GPUS.items():
        ours = seconds_per_clip(gpu, figures, step_flops, vae_flops, False, False, False)
        out[name] = {"seconds_per_clip": ours["clip"] + 2 * load_s}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("full_scale.json"))
    parser.add_argument(
        "--vae-frames", type=int, default=17, help="frames of the measured CPU VAE run (97 = full size, ~30 min more)"
    )
    args = parser.parse_args(argv)
    quiet_libraries()

    from rich.progress import Progress

    started = time.perf_counter()
    result: dict = {
        "clip": OFFICIAL_CLIP,
        "torch_threads": torch.get_num_threads(),
        "gpus": GPUS,
        "utilisation": {"transformer": TRANSFORMER_UTILISATION, "vae": VAE_UTILISATION},
        "paper_table6": PAPER_TABLE6,
    }
    jobs = [("block", dict(stage=s, depth=d)) for s in (1, 2) for d in (1, 2)]
    jobs += [
        ("vae", dict(device="meta", frames=f, tiled=t))
        for f in (OFFICIAL_CLIP[0], args.vae_frames)
        for t in (False, True)
    ]
    jobs += [("vae", dict(device="cpu", frames=args.vae_frames, tiled=t)) for t in (False, True)]
    with Progress() as progress:
        task = progress.add_task("full-scale measurements", total=len(jobs) + 1)
        result["weights"] = count_release_weights()
        progress.advance(task)
        runs = []
        for worker, kwargs in jobs:
            progress.update(task, description=f"{worker} {kwargs}")
            runs.append((worker, kwargs, run_in_fresh_process(worker, **kwargs)))
            progress.advance(task)
    blocks = {}
    for stage in (1, 2):
        r = [out for w, k, out in runs if w == "block" and k["stage"] == stage]
        blocks[f"stage{stage}"] = {
            "runs": r,
            "seconds": linear_fit(r[0]["seconds"], r[1]["seconds"]),
            "tensor_peak": linear_fit(r[0]["tensor_peak_bytes"], r[1]["tensor_peak_bytes"]),
            "process_peak": linear_fit(r[0]["process_peak_bytes"], r[1]["process_peak_bytes"]),
            "flops": linear_fit(r[0]["flops"], r[1]["flops"]),
        }
    result["blocks"] = blocks
    result["vae"] = [out for w, k, out in runs if w == "vae"]
    vae_full = {v["tiled"]: v for v in result["vae"] if v["device"] == "meta" and v["frames"] == OFFICIAL_CLIP[0]}
    result["predictions"] = predictions(result["weights"], blocks, vae_full)
    result["wall_seconds"] = time.perf_counter() - started
    report(result)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {args.out} in {result['wall_seconds'] / 60:.1f} min")
    return result


if __name__ == "__main__":
    main()
