"""Model configurations: the LTX-Video 13B transformer and VAE of the release, the LTX-Video 2B transformer (the
world model's base), and the tiny random-weight model.

A leaf module: it imports nothing, so every other module (loading, the tiny release, memory profiles, training,
benchmarks) may import it. A new backbone is one more entry of :data:`TRANSFORMER_CONFIGS`.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------- LTX-Video 13B

LTXV_13B_CONFIG = {
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 128,
    "attention_out_bias": True,
    "caption_channels": 4096,
    "cross_attention_dim": 4096,
    "in_channels": 128,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-06,
    "num_attention_heads": 32,
    "num_layers": 48,
    "out_channels": 128,
    "patch_size": 1,
    "patch_size_t": 1,
    "qk_norm": "rms_norm_across_heads",
}
"""The LTX-Video 13B transformer's diffusers configuration (the single file ``ltxv-13b-0.9.8-distilled.safetensors``
carries none)."""

LTXV_2B_CONFIG = {**LTXV_13B_CONFIG, "attention_head_dim": 64, "cross_attention_dim": 2048, "num_layers": 28}
"""The LTX-Video 2B transformer (``ltxv-2b-0.9.8-distilled``; the Artifact World Model's base, paper Sec. 3.3):
28 blocks of 32 heads x 64 dims, cross-attention 2048, T5 captions 4096. It is the configuration diffusers'
single-file loader picks for a 28-block LTX checkpoint (``ltx-video-0.9.5``, ``Lightricks/LTX-Video-0.9.5``) and
``LTXVideoTransformer3DModel``'s defaults."""

LTXV_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 128,
    "block_out_channels": (128, 256, 512, 1024, 2048),
    "down_block_types": ("LTXVideo095DownBlock3D",) * 4,
    "decoder_block_out_channels": (256, 512, 1024),
    "layers_per_block": (4, 6, 6, 2, 2),
    "decoder_layers_per_block": (5, 5, 5, 5),
    "spatio_temporal_scaling": (True, True, True, True),
    "decoder_spatio_temporal_scaling": (True, True, True),
    "decoder_inject_noise": (False, False, False, False),
    "downsample_type": ("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
    "upsample_residual": (True, True, True),
    "upsample_factor": (2, 2, 2),
    "timestep_conditioning": True,
    "patch_size": 4,
    "patch_size_t": 1,
    "resnet_norm_eps": 1e-6,
    "scaling_factor": 1.0,
    "encoder_causal": True,
    "decoder_causal": False,
    "spatial_compression_ratio": 32,
    "temporal_compression_ratio": 8,
}
"""The VAE architecture of LTX-Video 0.9.7 / 0.9.8 (the 0.9.5 VAE; diffusers' LTX conversion script,
version ``0.9.7``), for full-size checks with random weights."""

# ---------------------------------------------------------------------------------------------- the adapters

OFFICIAL_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
"""The modules the released adapters adapt (the release's ``configs/stage*_infer.yaml``), matched as peft does
(name suffixes); the tiny release's random adapters target the same modules."""
OFFICIAL_LORA_RANK = 128
"""The released adapters' rank (= alpha)."""

FP8_SKIP_MODULES = ("pos_embed", "patch_embed", "norm", "^proj_in$", "^proj_out$", "lora_")
"""Modules kept in the compute dtype under fp8 storage: diffusers' defaults plus the LoRA adapters."""

# ---------------------------------------------------------------------------------------------- tiny (UNTRAINED)

TINY_LATENT_CHANNELS = 8
TINY_TEXT_DIM = 16
TINY_LORA_RANK = 4
TINY_AUX_REFERENCE = (17, 32, 64)
"""Reference size (frames, height, width) the tiny release's auxiliary latents are made for."""
TINY_TRANSFORMER_CONFIG = {
    "in_channels": TINY_LATENT_CHANNELS,
    "out_channels": TINY_LATENT_CHANNELS,
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 16,
    "num_layers": 2,
    "caption_channels": TINY_TEXT_DIM,
}
"""The tiny transformer's configuration (the single file carries none, as the real one)."""
TINY_VAE_CONFIG = {
    "latent_channels": TINY_LATENT_CHANNELS,
    "block_out_channels": (8, 8, 8, 8),
    "decoder_block_out_channels": (8, 8, 8, 8),
    "layers_per_block": (1, 1, 1, 1, 1),
    "decoder_layers_per_block": (1, 1, 1, 1, 1),
}
"""LTX VAE with 4 down blocks (patch 4 x 2^3 = 32x space, 2^3 = 8x time) and 8 channels."""

# ---------------------------------------------------------------------------------------------- by name

TRANSFORMER_CONFIGS: dict[str, dict] = {
    "ltxv-13b": LTXV_13B_CONFIG,
    "ltxv-2b": LTXV_2B_CONFIG,
    "tiny": TINY_TRANSFORMER_CONFIG,
}
"""The single-file transformer configurations a preset may name (``transformer_config``)."""
