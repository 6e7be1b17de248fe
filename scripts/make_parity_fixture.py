"""Run the *official* ArtifactWorld inference pipeline on the tiny random release and store its numbers.

This drives the official code; it contains none of it. Point ``--official-src`` at a folder that
holds the official ``ltxv_pipeline.py`` (``stages/stage2/src`` of a checkout of the official
repository at commit 9250e9235a2456e66199eead7ca45b890373d1bf, or any folder with the file), e.g.::

    git -C ArtifactWorld checkout 9250e9235a2456e66199eead7ca45b890373d1bf
    .venv/bin/python scripts/make_parity_fixture.py --official-src ArtifactWorld/stages/stage2/src \\
        --output tests/restorer/data/official_parity.pt

What it does, as the official scripts do (``scripts/run_stage1_infer.sh`` / ``run_stage2_infer.sh``
-> ``stages/*/scripts/validate.py`` -> ``trainer._sample_videos``), with the tiny release in place of
the real weights and float32 on the CPU in place of bf16 autocast on a GPU:

* the components are loaded the official way (``model_loader.py``): scheduler from the 0.9.7-dev
  root, VAE and T5 from the LTX-Video root, the transformer with ``from_single_file(file, config=json)``,
  the LoRA as the peft ``default`` adapter (``_setup_lora`` + ``_load_checkpoint`` key renames), one
  transformer per stage (two processes in the official flow);
* stage 1: ``prompt="predict artifact map"``, 8 steps, guidance 1, seed 42, the reference video;
* hand-off: stage 1's frames as 8-bit levels (the PIL frames it writes) with the last 9 frames black;
* stage 2: ``prompt="remove artifact"``, ``generate_noisemap=True``, the two auxiliary latent files,
  the official ``noisemap_blend_weights`` and ``noisemap_feature_scale = 0.05``.

Deviations forced by the tiny release: its tokenizer is a fast word-level tokenizer (loaded with
``AutoTokenizer``; the official ``T5Tokenizer`` needs a sentencepiece model), and its stage-2 LoRA is in
ComfyUI key format (renamed to the diffusers keys the official loader expects). The fixture stores the
inputs (8-bit), the seed, the tiny release's identity (per-tensor
fingerprints, compared with a tolerance: file bytes change with the CPU and thread count) and both stages' outputs (float32).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path

import torch

REFERENCE_FRAMES, HEIGHT, WIDTH = 17, 32, 64
SEED = 42
OFFICIAL_BLEND = [
    [0.8, 0.0, 0.2],
    [0.0, 0.0, 1.0],
    [0.0, 0.0, 1.0],
    [0.0, 0.0, 1.0],
    [0.0, 0.25, 0.75],
    [0.0, 0.5, 0.5],
    [0.0, 0.75, 0.25],
    [0.0, 1.0, 0.0],
]


def reference_video_uint8() -> torch.Tensor:
    """A deterministic DBA-shaped reference ``[F, H, W, 3]`` uint8: smooth content, anchor A, then anchor B x 9."""
    g = torch.Generator().manual_seed(7)
    base = torch.nn.functional.interpolate(
        torch.rand(1, 3, REFERENCE_FRAMES, 4, 8, generator=g),
        size=(REFERENCE_FRAMES, HEIGHT, WIDTH),
        mode="trilinear",
        align_corners=False,
    )[0].permute(1, 2, 3, 0)
    video = (base + 0.15 * torch.rand(base.shape, generator=g)).clamp(0, 1)
    video[-9:] = video[-9]
    return (video * 255).round().to(torch.uint8)


def official_transformer(roots, lora_path: Path, config: dict):
    from diffusers import LTXVideoTransformer3DModel
    from peft import LoraConfig
    from safetensors.torch import load_file

    from artifactworld_ns.restorer.configs import OFFICIAL_LORA_TARGETS
    from artifactworld_ns.restorer.roots import TRANSFORMER_SINGLE_FILE

    with tempfile.NamedTemporaryFile(mode="w", suffix=".json") as f:  # as model_loader._load_ltxv_13b_transformer
        json.dump({"_class_name": "LTXVideoTransformer3DModel", **config}, f)
        f.flush()
        transformer = LTXVideoTransformer3DModel.from_single_file(
            str(roots.ltx_main / TRANSFORMER_SINGLE_FILE), config=f.name, torch_dtype=torch.float32
        )
    state = load_file(str(lora_path))
    rank = next(v.shape[0] for k, v in state.items() if "lora_A" in k)
    transformer.add_adapter(  # the release's `lora:` config block, at the tiny rank
        LoraConfig(
            r=rank,
            lora_alpha=rank,
            target_modules=list(OFFICIAL_LORA_TARGETS),
            lora_dropout=0.0,
            init_lora_weights=True,
        )
    )
    state = {k.replace("diffusion_model.", "transformer.", 1): v for k, v in state.items()}  # ComfyUI -> diffusers keys
    state = {k.replace("transformer.", "", 1): v for k, v in state.items()}
    state = {k.replace("lora_A", "lora_A.default", 1): v for k, v in state.items()}
    state = {k.replace("lora_B", "lora_B.default", 1): v for k, v in state.items()}
    _, unexpected = transformer.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"Failed to load some LoRA weights: {unexpected}")
    return transformer.eval().requires_grad_(False)


def official_pipeline(module, roots, lora_path: Path, config: dict):
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler
    from transformers import AutoTokenizer, T5EncoderModel

    return module.LTXConditionPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(roots.ltx_097_dev, subfolder="scheduler"),
        vae=AutoencoderKLLTXVideo.from_pretrained(roots.ltx_main, subfolder="vae", torch_dtype=torch.float32).eval(),
        text_encoder=T5EncoderModel.from_pretrained(
            roots.ltx_main, subfolder="text_encoder", torch_dtype=torch.float32
        ).eval(),
        tokenizer=AutoTokenizer.from_pretrained(roots.ltx_main, subfolder="tokenizer"),
        transformer=official_transformer(roots, lora_path, config),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--official-src",
        type=Path,
        required=True,
        help="folder holding the official ltxv_pipeline.py (or ltxv_trainer/)",
    )
    parser.add_argument("--output", type=Path, default=Path("tests/restorer/data/official_parity.pt"))
    args = parser.parse_args()

    sys.path.insert(0, str(args.official_src.resolve()))
    try:
        module = importlib.import_module("ltxv_trainer.ltxv_pipeline")
    except ModuleNotFoundError:
        module = importlib.import_module("ltxv_pipeline")

    from artifactworld_ns.restorer.configs import TINY_TRANSFORMER_CONFIG
    from artifactworld_ns.restorer.tiny import (
        TINY_RELEASE_SEED,
        TINY_RELEASE_VERSION,
        release_fingerprints,
        save_tiny_release,
    )

    work = Path(tempfile.mkdtemp(prefix="aw-parity-"))
    roots = save_tiny_release(work, seed=TINY_RELEASE_SEED)
    reference = reference_video_uint8()
    reference_fchw = reference.permute(0, 3, 1, 2).float() / 255.0  # read_video's [F, C, H, W] in [0, 1]
    common = dict(
        negative_prompt="worst quality, inconsistent motion, blurry, jittery, distorted",
        width=WIDTH,
        height=HEIGHT,
        num_frames=REFERENCE_FRAMES,
        num_inference_steps=8,
        guidance_scale=1.0,
        output_reference_comparison=False,
        output_type="pt",
        reference_video=reference_fchw,
        max_sequence_length=256,
    )

    with torch.no_grad():
        stage1 = official_pipeline(module, roots, roots.stage1_lora, TINY_TRANSFORMER_CONFIG)
        stage1.set_progress_bar_config(disable=True)
        heatmap = stage1(
            prompt="predict artifact map", generator=torch.Generator("cpu").manual_seed(SEED), **common
        ).frames[0]
        handed = (heatmap * 255).round().to(torch.uint8)  # [F, C, H, W]: the PIL frames stage 1 writes
        handed[-9:] = 0  # "Replace last 9 frames with black frames"

        stage2 = official_pipeline(module, roots, roots.stage2_lora, TINY_TRANSFORMER_CONFIG)
        stage2.set_progress_bar_config(disable=True)
        stage2.noisemap_feature_scale = 0.05
        restored = stage2(
            prompt="remove artifact",
            generator=torch.Generator("cpu").manual_seed(SEED),
            generate_noisemap=True,
            noisemap_video=handed.float() / 255.0,
            auxiliary_latent_path=str(roots.auxiliary_latent("z_full.pt")),
            auxiliary_latent_b_path=str(roots.auxiliary_latent("z_null.pt")),
            noisemap_blend_weights=OFFICIAL_BLEND,
            **common,
        ).frames[0]

    fixture = {
        "official_commit": "9250e9235a2456e66199eead7ca45b890373d1bf",
        "seed": SEED,
        "tiny_release": {
            "version": TINY_RELEASE_VERSION,
            "seed": TINY_RELEASE_SEED,
            "tensors": release_fingerprints(work),
        },
        "reference_uint8": reference,  # [F, H, W, 3]
        "stage1_heatmap": heatmap.permute(0, 2, 3, 1).contiguous().float(),  # [F, H, W, 3]
        "stage2_heatmap_input_uint8": handed.permute(0, 2, 3, 1).contiguous(),  # [F, H, W, 3]
        "stage2_restored": restored.permute(0, 2, 3, 1).contiguous().float(),  # [F, H, W, 3]
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f".{args.output.name}.tmp")
    torch.save(fixture, tmp)
    tmp.replace(args.output)
    print(
        f"wrote {args.output}: stage 1 {tuple(fixture['stage1_heatmap'].shape)}, stage 2 {tuple(fixture['stage2_restored'].shape)}"
    )


if __name__ == "__main__":
    main()
