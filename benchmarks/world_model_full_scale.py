"""The full-size Artifact World Model (LTX-Video 2B + a rank-128 LoRA, paper Sec. 3.3) without a GPU.

    python benchmarks/world_model_full_scale.py --out world_model.json

Each figure is labelled: **counted** (parameters built on the meta device), **traced** (FLOPs of the real 2B
width at 1 and 2 blocks on the meta device, exact shapes, no arithmetic, by the same counter as
``benchmarks/full_scale.py``; ``x(28) = fixed + 28 * per_block``) or **derived** (formulas stated below, at the
utilisation ``benchmarks/full_scale.py`` states). The world model's sequence is ``[clean, degraded]``: at the
training clip (89 frames, laid out as 97, 544 x 960) that is 2 x 6,630 = 13,260 tokens, like stage 1.

Derived: a training step = forward + backward (2 x forward) + the forward recomputed by gradient checkpointing
= 4 x the forward FLOPs; sampling = 8 forward passes (no guidance). Training memory = bf16 base weights + the
LoRA in float32 with its gradient and two AdamW moments (4 x 4 bytes per weight) + with gradient checkpointing one
block input per block kept (tokens x width x 2 bytes) + one block's recomputed activations, taken as
34 x tokens x width x 2 bytes (Korthikanti et al. 2022's per-layer estimate without stored attention scores, since
SDPA's flash kernel keeps none) + the VAE and CUDA context as ``restorer/memory_profiles.py`` counts them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from full_scale import GPUS, TRANSFORMER_UTILISATION, linear_fit
from full_scale_workers import _flop_counter, quiet_libraries

from artifactworld_ns.restorer.atomic import atomic_path
from artifactworld_ns.restorer.configs import LTXV_2B_CONFIG, LTXV_VAE_CONFIG, OFFICIAL_LORA_RANK, OFFICIAL_LORA_TARGETS
from artifactworld_ns.restorer.memory_profiles import CUDA_OVERHEAD

TOKENS_PER_SEGMENT = 13 * 17 * 30  # 97 x 544 x 960 (the 89-frame training clip laid out as T + 8)
SEGMENTS = 2
SAMPLING_STEPS = 8
ACTIVATION_FACTOR = 34
PAPER_PAIRS, PAPER_GENERATED = 4385, 83188


def counted() -> dict:
    """counted: the 2B transformer, one rank-128 adapter on the official targets, the VAE (meta device)."""
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
    from peft import LoraConfig, inject_adapter_in_model

    with torch.device("meta"):
        model = LTXVideoTransformer3DModel(**LTXV_2B_CONFIG).to(torch.bfloat16)
        vae = AutoencoderKLLTXVideo(**LTXV_VAE_CONFIG).to(torch.bfloat16)
    base = sum(p.numel() for p in model.parameters())
    config = LoraConfig(r=OFFICIAL_LORA_RANK, lora_alpha=OFFICIAL_LORA_RANK, target_modules=list(OFFICIAL_LORA_TARGETS))
    inject_adapter_in_model(config, model, adapter_name="world_model")
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    return {
        "transformer_params": base,
        "transformer_bf16_bytes": 2 * base,
        "lora_params": lora,
        "lora_training_bytes": 16 * lora,  # float32 weight, gradient, two AdamW moments
        "vae_bf16_bytes": sum(p.numel() * 2 for p in vae.parameters()),
        "width": LTXV_2B_CONFIG["num_attention_heads"] * LTXV_2B_CONFIG["attention_head_dim"],
        "blocks": LTXV_2B_CONFIG["num_layers"],
    }


def traced_forward_flops(depth: int) -> float:
    """traced: one forward of the 2B width at ``depth`` blocks over the world model's sequence, on meta."""
    from diffusers import LTXVideoTransformer3DModel

    from artifactworld_ns.restorer.flow_matching import training_video_coords

    tokens = SEGMENTS * TOKENS_PER_SEGMENT
    with torch.device("meta"):
        model = LTXVideoTransformer3DModel(**{**LTXV_2B_CONFIG, "num_layers": depth}).to(torch.bfloat16)
        hidden = torch.zeros(1, tokens, 128, dtype=torch.bfloat16)
        text = torch.zeros(1, 256, 4096, dtype=torch.bfloat16)
        mask = torch.ones(1, 256, dtype=torch.long)
        timestep = torch.zeros(1, tokens)
    coords = training_video_coords(13, 17, 30, SEGMENTS).to("meta")
    with _flop_counter() as flops, torch.no_grad():
        model(
            hidden_states=hidden,
            encoder_hidden_states=text,
            timestep=timestep,
            encoder_attention_mask=mask,
            video_coords=coords,
            return_dict=False,
        )
    return float(flops.get_total_flops())


def derived(weights: dict, forward: float) -> dict:
    tokens = SEGMENTS * TOKENS_PER_SEGMENT
    act = 2 * tokens * weights["width"] * (weights["blocks"] + ACTIVATION_FACTOR)
    train_peak = CUDA_OVERHEAD + weights["transformer_bf16_bytes"] + weights["lora_training_bytes"] + act
    sample_peak = (
        CUDA_OVERHEAD
        + weights["transformer_bf16_bytes"]
        + weights["vae_bf16_bytes"]
        + 2 * 2 * tokens * weights["width"] * 8
    )
    out = {"training_peak_bytes": train_peak, "sampling_peak_bytes_transformer_phase": sample_peak, "per_gpu": {}}
    for name, gpu in GPUS.items():
        rate = gpu["bf16_tflops"] * 1e12 * TRANSFORMER_UTILISATION
        step = 4 * forward / rate
        clip = SAMPLING_STEPS * forward / rate
        out["per_gpu"][name] = {
            "training_step_seconds": step,
            "training_12010_steps_hours": step * 12010 / 3600,
            "sampling_seconds_per_clip_transformer": clip,
            "paper_83188_clips_gpu_hours_transformer": clip * PAPER_GENERATED / 3600,
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("world_model_full_scale.json"))
    args = parser.parse_args(argv)
    quiet_libraries()
    weights = counted()
    fit = linear_fit(traced_forward_flops(1), traced_forward_flops(2), depth=weights["blocks"])
    result = {
        "counted": weights,
        "traced_forward_flops": fit,
        "derived": derived(weights, fit["at_depth"]),
        "utilisation_stated": TRANSFORMER_UTILISATION,
        "note": "VAE encode/decode time not included here: the same VAE as the restorer (benchmarks/full_scale.py).",
    }
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
