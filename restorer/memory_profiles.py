"""GPU memory profiles of the full-size restorer and the model that predicts their peak.

A profile (``--profile 80gb | 40gb | 24gb``) chooses weight storage, transformer offload and VAE
tiling. Its predicted peak comes from :class:`FullSizeFigures`: weight bytes counted on the meta
device and activation bytes measured at the real width on a CPU, both by
``benchmarks/full_scale.py`` (which re-derives every figure below and says which ones were measured).

The model, per phase of a clip (the prompt embeddings are cached, so the text encoder is not resident)::

    resident  = transformer_other + k * (block + lora_block)        k = 48, or 1 / 2 under group offload
                                                                      (2 with CUDA streams: one prefetched)
              + vae
    sampling  = resident + activations[stage] + (largest_layer_bf16 if fp8 storage)
    vae       = resident + activations[vae_encode / vae_decode (tiled)]
    peak      = CUDA_OVERHEAD + max(phases), activations counted with ALLOCATOR_SLACK

where ``block`` is one transformer block's bytes in bf16 or under fp8 layerwise storage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import RestorerInputError

GB = 10**9
"""Decimal gigabytes, as GPU sizes are sold (a "24 GB" card has 24 x 10^9 bytes or a little more)."""

CUDA_OVERHEAD = int(0.8 * GB)
"""Assumed: CUDA context, cuBLAS/cuDNN workspaces (not measurable on a CPU)."""
ALLOCATOR_SLACK = 1.10
"""Assumed: the caching allocator's fragmentation on top of the live activation bytes."""


@dataclass(frozen=True)
class MemoryProfile:
    """One user profile: what it turns on, and the GPU size it is made for."""

    name: str
    gpu_gb: int
    fp8_transformer_storage: bool
    group_offload: bool
    vae_tiling: bool
    summary: str

    def options(self) -> dict[str, bool]:
        """The restorer preset fields this profile sets."""
        return {
            "fp8_transformer_storage": self.fp8_transformer_storage,
            "group_offload": self.group_offload,
            "vae_tiling": self.vae_tiling,
        }


PROFILES: dict[str, MemoryProfile] = {
    "80gb": MemoryProfile(
        "80gb",
        80,
        fp8_transformer_storage=False,
        group_offload=False,
        vae_tiling=False,
        summary="bf16 weights resident, VAE untiled: the fastest",
    ),
    "40gb": MemoryProfile(
        "40gb",
        40,
        fp8_transformer_storage=False,
        group_offload=False,
        vae_tiling=True,
        summary="bf16 weights resident, VAE in spatial tiles",
    ),
    "24gb": MemoryProfile(
        "24gb",
        24,
        fp8_transformer_storage=False,
        group_offload=True,
        vae_tiling=True,
        summary="bf16 weights in CPU memory, moved to the GPU one block at a time (CUDA streams), VAE in tiles",
    ),
}


@dataclass(frozen=True)
class FullSizeFigures:
    """Bytes of the released model at the official clip (97 x 544 x 960; 13,260 / 19,890 tokens)."""

    transformer_block_bf16: int
    """One of the 48 transformer blocks in bf16 (counted on the meta device)."""
    transformer_block_fp8: int
    """The same block under fp8 layerwise storage (counted after ``enable_layerwise_casting`` on meta)."""
    transformer_other_bf16: int
    """Everything outside the blocks: embeddings, ``proj_in`` / ``proj_out`` (counted)."""
    lora_block: int
    """Both adapters' bf16 LoRA weights (rank 128, six targets) for one block (counted)."""
    vae: int
    """The VAE in bf16 (counted)."""
    text_encoder: int
    """The T5-XXL encoder in bf16 (counted); only resident once, before the backbone, to fill the prompt cache."""
    largest_layer_bf16: int
    """The largest linear layer's bf16 weight: what fp8 layerwise casting upcasts at one time (counted)."""
    activations: dict[str, int] = field(default_factory=dict)
    """Peak bytes above the weights per phase: ``stage1``, ``stage2`` (one step, measured at the real width
    on a CPU), ``vae_encode``, ``vae_decode`` and their ``_tiled`` variants (traced at full size)."""
    num_blocks: int = 48


RELEASE_FIGURES = FullSizeFigures(
    transformer_block_bf16=537_059_328,
    transformer_block_fp8=268_570_624,
    transformer_other_bf16=306_290_944,
    lora_block=54_525_952,
    vae=2_493_827_044,
    text_encoder=9_524_621_312,
    largest_layer_bf16=201_326_592,
    activations={
        "stage1": 3_609_429_732,  # measured: 1 and 2 real-width blocks, one step, 13,260 tokens
        "stage2": 5_434_111_812,  # measured: 19,890 tokens; the second block adds 0 bytes
        "vae_encode": 6_585_446_400,  # traced on meta at 97 x 544 x 960
        "vae_decode": 5_069_517_316,
        "vae_encode_tiled": 3_761_467_392,
        "vae_decode_tiled": 2_698_113_540,
    },
)
"""Figures of the released configuration, written from ``python benchmarks/full_scale.py`` (2026-11-22)."""


def resident_bytes(
    figures: FullSizeFigures, fp8_transformer_storage: bool, group_offload: bool, offload_stream: bool = True
) -> int:
    """Weights on the GPU while a clip is restored (the text encoder is not: prompts are cached)."""
    block = figures.transformer_block_fp8 if fp8_transformer_storage else figures.transformer_block_bf16
    blocks_on_gpu = min(2 if offload_stream else 1, figures.num_blocks) if group_offload else figures.num_blocks
    return figures.transformer_other_bf16 + blocks_on_gpu * (block + figures.lora_block) + figures.vae


def phase_peaks(
    figures: FullSizeFigures,
    fp8_transformer_storage: bool = False,
    group_offload: bool = False,
    vae_tiling: bool = False,
    offload_stream: bool = True,
) -> dict[str, int]:
    """Predicted GPU bytes per phase of one clip (see the module docstring for the formula)."""
    resident = resident_bytes(figures, fp8_transformer_storage, group_offload, offload_stream)
    transient = figures.largest_layer_bf16 if fp8_transformer_storage else 0
    tiled = "_tiled" if vae_tiling else ""
    act = {name: int(ALLOCATOR_SLACK * value) for name, value in figures.activations.items()}
    return {
        "stage 1 sampling": CUDA_OVERHEAD + resident + act["stage1"] + transient,
        "stage 2 sampling": CUDA_OVERHEAD + resident + act["stage2"] + transient,
        "VAE encode": CUDA_OVERHEAD + resident + act[f"vae_encode{tiled}"],
        "VAE decode": CUDA_OVERHEAD + resident + act[f"vae_decode{tiled}"],
    }


def predicted_peak_bytes(
    profile: MemoryProfile | str, figures: FullSizeFigures = RELEASE_FIGURES, offload_stream: bool = True
) -> int:
    """The profile's predicted peak GPU bytes at the official clip size."""
    profile = get_profile(profile)
    return max(phase_peaks(figures, **profile.options(), offload_stream=offload_stream).values())


def get_profile(profile: MemoryProfile | str) -> MemoryProfile:
    if isinstance(profile, MemoryProfile):
        return profile
    if profile not in PROFILES:
        raise RestorerInputError(f"Unknown memory profile {profile!r}; choose one of {', '.join(PROFILES)}.")
    return PROFILES[profile]


def check_gpu_fits(profile: MemoryProfile | str, total_gpu_bytes: int | None, force: bool = False) -> str:
    """One line with the profile's predicted peak; raises when the detected GPU is smaller (unless ``force``).

    ``total_gpu_bytes`` is the GPU's memory (``torch.cuda.get_device_properties``), None without a GPU.
    """
    profile = get_profile(profile)
    peak = predicted_peak_bytes(profile)
    line = (
        f"Memory profile {profile.name} ({profile.summary}): predicted peak {peak / GB:.1f} GB of GPU memory "
        "at the official 97 x 544 x 960 clip."
    )
    if total_gpu_bytes is not None and total_gpu_bytes < peak and not force:
        raise RestorerInputError(
            f"The {profile.name} profile needs about {peak / GB:.1f} GB of GPU memory but this GPU has "
            f"{total_gpu_bytes / GB:.1f} GB; choose a smaller profile ({', '.join(smaller_profiles(total_gpu_bytes))}) "
            "or pass --force to try anyway."
        )
    return line


def smaller_profiles(total_gpu_bytes: int) -> list[str]:
    """Profiles predicted to fit in ``total_gpu_bytes`` (best first)."""
    fitting = [name for name, p in PROFILES.items() if predicted_peak_bytes(p) <= total_gpu_bytes]
    return fitting or ["none is predicted to fit"]


def count_release_weights() -> dict[str, int]:
    """Parameters and bytes of every part of the release, built on the meta device (no memory, ~10 s).

    The 13B transformer (bf16, and its blocks under fp8 layerwise storage), both rank-128 LoRA adapters
    (injected by peft), the LTX 0.9.7/0.9.8 VAE and the T5-XXL encoder (``google/t5-v1_1-xxl``'s shape).
    """
    import torch
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import T5Config, T5EncoderModel

    from .configs import FP8_SKIP_MODULES, LTXV_13B_CONFIG, LTXV_VAE_CONFIG, OFFICIAL_LORA_RANK, OFFICIAL_LORA_TARGETS

    def nbytes(module) -> int:
        return sum(p.numel() * p.element_size() for p in module.parameters())

    t5_xxl = T5Config(
        vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, feed_forward_proj="gated-gelu"
    )
    with torch.device("meta"):
        transformer = LTXVideoTransformer3DModel(**LTXV_13B_CONFIG).to(torch.bfloat16)
        one_block = LTXVideoTransformer3DModel(**{**LTXV_13B_CONFIG, "num_layers": 1}).to(torch.bfloat16)
        vae = AutoencoderKLLTXVideo(**LTXV_VAE_CONFIG).to(torch.bfloat16)
        t5 = T5EncoderModel(t5_xxl).to(torch.bfloat16)
    block_bf16 = nbytes(transformer.transformer_blocks[0])
    for adapter in ("stage1", "stage2"):
        config = LoraConfig(
            r=OFFICIAL_LORA_RANK, lora_alpha=OFFICIAL_LORA_RANK, target_modules=list(OFFICIAL_LORA_TARGETS)
        )
        inject_adapter_in_model(config, one_block, adapter_name=adapter)
    one_block.to(torch.bfloat16)  # peft makes adapters float32; the restorer's loader keeps them in the compute dtype
    block = one_block.transformer_blocks[0]
    lora = sum(p.numel() * p.element_size() for n, p in block.named_parameters() if "lora_" in n)
    one_block.enable_layerwise_casting(
        storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16, skip_modules_pattern=FP8_SKIP_MODULES
    )
    block_fp8 = sum(p.numel() * p.element_size() for n, p in block.named_parameters() if "lora_" not in n)
    return {
        "transformer_params": sum(p.numel() for p in transformer.parameters()),
        "transformer_blocks": len(transformer.transformer_blocks),
        "transformer_bf16": nbytes(transformer),
        "transformer_block_bf16": block_bf16,
        "transformer_block_fp8": block_fp8,
        "transformer_other_bf16": nbytes(transformer) - len(transformer.transformer_blocks) * block_bf16,
        "lora_block_both_adapters": lora,
        "largest_layer_bf16": max(
            m.weight.numel() * 2 for m in transformer.modules() if isinstance(m, torch.nn.Linear)
        ),
        "vae_params": sum(p.numel() for p in vae.parameters()),
        "vae_bf16": nbytes(vae),
        "text_encoder_params": sum(p.numel() for p in t5.parameters()),
        "text_encoder_bf16": nbytes(t5),
    }
