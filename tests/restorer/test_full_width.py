"""The released model's real width (1 of the 13B's 48 blocks, the real VAE, rank-128 LoRAs) through
``ArtifactRestorer``, loaded from a local release laid out like the real one, under every memory option:
a shape or dtype bug at the real width fails here, not on a user's GPU."""

import pytest
import torch
from restorer_fixtures import aw_cache  # noqa: F401

from artifactworld_ns.restorer.pipeline import ArtifactRestorer
from artifactworld_ns.restorer.tiny import full_width_spec, save_random_release

pytestmark = pytest.mark.slow

CLIP = (9, 64, 96)
"""A 9-frame clip: its DBA reference has 17 frames, 3 x 2 x 3 latent tokens per segment."""


@pytest.fixture(scope="module")
def full_width_roots(tmp_path_factory):
    frames, height, width = CLIP
    return save_random_release(
        tmp_path_factory.mktemp("full-width-release"), full_width_spec(1, (frames + 8, height, width))
    )


def _load(roots, **options) -> ArtifactRestorer:
    # 2 Euler steps per stage (the official blend table scaled to 2 rows): every layer runs, in a test's time
    return ArtifactRestorer.from_preset(
        "full",
        weights_root=str(roots.weights),
        ltx_main_root=str(roots.ltx_main),
        ltx_097_dev_root=str(roots.ltx_097_dev),
        torch_dtype="bfloat16",
        transformer_num_layers=1,
        device="cpu",
        processing_size=None,
        show_progress=False,
        num_inference_steps=2,
        heatmap_steps=2,
        **options,
    )


def _restore(restorer: ArtifactRestorer):
    frames, height, width = CLIP
    clip = torch.rand(frames, height, width, 3, generator=torch.Generator().manual_seed(0))
    result = restorer.restore(clip, clip[0], clip[-1])
    assert result.frames.shape == (frames, height, width, 3) and result.heatmap.shape == (frames, height, width)
    assert torch.isfinite(result.frames).all() and torch.isfinite(result.heatmap).all()
    return result


def _spy(module, name: str, calls: list) -> None:
    original = getattr(module, name)
    setattr(module, name, lambda *a, **k: calls.append(name) or original(*a, **k))


@pytest.fixture(scope="module")
def resident_result(full_width_roots):
    """The 80gb profile: bf16 weights resident, VAE untiled -- the same options as no profile."""
    restorer = _load(full_width_roots, memory_profile="80gb")
    assert not restorer.group_offloaded and not restorer.vae.use_tiling
    transformer = restorer.transformer
    assert transformer.config.num_attention_heads * transformer.config.attention_head_dim == 4096
    assert transformer.config.num_layers == 1 and restorer.vae.config.block_out_channels[-1] == 2048
    assert {p.dtype for p in transformer.parameters()} == {torch.bfloat16}
    lora_a = transformer.transformer_blocks[0].attn1.to_q.lora_A
    assert lora_a["stage1"].weight.shape == (128, 4096) and lora_a["stage2"].weight.shape == (128, 4096)
    return _restore(restorer)


def test_fp8_layerwise_storage_at_the_real_width(full_width_roots, resident_result):
    restorer = _load(full_width_roots, fp8_transformer_storage=True)
    block = restorer.transformer.transformer_blocks[0]
    assert block.ff.net[2].base_layer.weight.dtype == torch.float8_e4m3fn
    assert block.ff.net[2].lora_B["stage2"].weight.dtype == torch.bfloat16, "LoRA weights stay in the compute dtype"
    assert restorer.transformer.proj_in.weight.dtype == torch.bfloat16
    result = _restore(restorer)
    assert not torch.equal(result.frames, resident_result.frames), "fp8 storage rounds the weights"


def test_the_40gb_profile_tiles_the_vae_and_keeps_weights_resident(full_width_roots, capsys):
    # its two options run in the 80gb (resident bf16) and 24gb (tiled VAE) restores
    restorer = _load(full_width_roots, memory_profile="40gb")
    assert restorer.vae.use_tiling and not restorer.group_offloaded
    assert "Memory profile 40gb" in capsys.readouterr().err


def test_the_24gb_profile_offloads_blocks_and_tiles_the_vae_at_the_real_width(
    full_width_roots, resident_result, capsys
):
    from diffusers.hooks import HookRegistry

    restorer = _load(full_width_roots, memory_profile="24gb")
    assert "Memory profile 24gb" in capsys.readouterr().err
    assert restorer.group_offloaded and restorer.vae.use_tiling
    hooks = HookRegistry.check_if_exists_or_initialize(restorer.transformer.transformer_blocks[0])
    assert "group_offloading" in hooks.hooks
    # tiles smaller than the clip (two 64-pixel columns), so the tiled encode/decode run at this small size
    restorer.vae.enable_tiling(
        tile_sample_min_height=64, tile_sample_min_width=64, tile_sample_stride_height=64, tile_sample_stride_width=64
    )
    calls: list[str] = []
    _spy(restorer.vae, "tiled_encode", calls)
    _spy(restorer.vae, "tiled_decode", calls)
    result = _restore(restorer)
    assert calls.count("tiled_encode") == 2 and calls.count("tiled_decode") == 2, calls
    assert not torch.equal(result.frames, resident_result.frames), "tiles are encoded on their own"
