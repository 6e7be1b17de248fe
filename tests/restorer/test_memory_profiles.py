"""The GPU memory profiles: the peak formula by hand, the figures against a meta-device count, the
one-sentence refusal, and the profile reaching the restorer from the preset and the CLIs."""

import pytest
from restorer_fixtures import aw_cache  # noqa: F401

from artifactworld_ns.restorer import RestorerInputError
from artifactworld_ns.restorer.memory_profiles import (
    ALLOCATOR_SLACK,
    CUDA_OVERHEAD,
    GB,
    PROFILES,
    RELEASE_FIGURES,
    FullSizeFigures,
    check_gpu_fits,
    count_release_weights,
    phase_peaks,
    predicted_peak_bytes,
)
from artifactworld_ns.restorer.pipeline import ArtifactRestorer

SMALL = FullSizeFigures(
    transformer_block_bf16=100,
    transformer_block_fp8=50,
    transformer_other_bf16=7,
    lora_block=10,
    vae=20,
    text_encoder=1000,
    largest_layer_bf16=30,
    num_blocks=4,
    activations={
        "stage1": 200,
        "stage2": 300,
        "vae_encode": 600,
        "vae_decode": 500,
        "vae_encode_tiled": 100,
        "vae_decode_tiled": 90,
    },
)


def test_phase_peaks_by_hand():
    act = lambda b: int(ALLOCATOR_SLACK * b)  # noqa: E731
    # everything resident: 7 + 4 * (100 + 10) + 20 = 467
    assert phase_peaks(SMALL) == {
        "stage 1 sampling": CUDA_OVERHEAD + 467 + act(200),
        "stage 2 sampling": CUDA_OVERHEAD + 467 + act(300),
        "VAE encode": CUDA_OVERHEAD + 467 + act(600),
        "VAE decode": CUDA_OVERHEAD + 467 + act(500),
    }
    # fp8 storage: 7 + 4 * (50 + 10) + 20 = 267, plus one upcast layer (30) while sampling; tiled VAE
    peaks = phase_peaks(SMALL, fp8_transformer_storage=True, vae_tiling=True)
    assert peaks["stage 2 sampling"] == CUDA_OVERHEAD + 267 + act(300) + 30
    assert peaks["VAE encode"] == CUDA_OVERHEAD + 267 + act(100)
    # group offload: 2 blocks on the GPU with a prefetch stream (7 + 2 * 110 + 20 = 247), 1 without (137)
    assert phase_peaks(SMALL, group_offload=True)["stage 1 sampling"] == CUDA_OVERHEAD + 247 + act(200)
    assert phase_peaks(SMALL, group_offload=True, offload_stream=False)[
        "stage 1 sampling"
    ] == CUDA_OVERHEAD + 137 + act(200)


def test_profiles_fit_their_gpus_and_get_smaller():
    peaks = {name: predicted_peak_bytes(name) for name in PROFILES}
    for name, profile in PROFILES.items():
        assert peaks[name] <= profile.gpu_gb * GB, f"{name} is predicted at {peaks[name] / GB:.1f} GB"
    assert peaks["24gb"] < peaks["40gb"] <= peaks["80gb"]


def test_a_smaller_gpu_is_refused_in_one_sentence_unless_forced():
    line = check_gpu_fits("24gb", total_gpu_bytes=24 * GB)
    assert "predicted peak" in line and "24gb" in line
    with pytest.raises(RestorerInputError) as err:
        check_gpu_fits("80gb", total_gpu_bytes=16 * GB)
    message = str(err.value)
    assert "80gb" in message and "16.0 GB" in message and "--force" in message and "24gb" in message
    assert message.count(". ") == 0 and "\n" not in message
    assert "predicted peak" in check_gpu_fits("80gb", total_gpu_bytes=16 * GB, force=True)
    with pytest.raises(RestorerInputError, match="Unknown memory profile '12gb'"):
        check_gpu_fits("12gb", None)


@pytest.mark.slow
def test_release_figures_match_a_meta_device_count():
    counted = count_release_weights()
    assert counted["transformer_params"] == 13_042_569_344  # the 13B configuration (restorer.configs.LTXV_13B_CONFIG)
    assert counted["transformer_blocks"] == RELEASE_FIGURES.num_blocks == 48
    assert counted["transformer_block_bf16"] == RELEASE_FIGURES.transformer_block_bf16
    assert counted["transformer_block_fp8"] == RELEASE_FIGURES.transformer_block_fp8
    assert counted["transformer_other_bf16"] == RELEASE_FIGURES.transformer_other_bf16
    assert counted["lora_block_both_adapters"] == RELEASE_FIGURES.lora_block
    # rank 128 on six targets of one block, two adapters, bf16: q,k,v,out of attn1 and attn2 (4096 -> 4096)
    # and ff.net.0.proj (4096 -> 16384), ff.net.2 (16384 -> 4096)
    assert RELEASE_FIGURES.lora_block == 2 * 2 * 128 * (8 * (4096 + 4096) + 2 * (4096 + 16384))
    assert counted["vae_bf16"] == RELEASE_FIGURES.vae
    assert counted["text_encoder_bf16"] == RELEASE_FIGURES.text_encoder
    assert counted["largest_layer_bf16"] == RELEASE_FIGURES.largest_layer_bf16


def test_a_profile_sets_the_restorer_options(capsys):
    restorer = ArtifactRestorer.from_preset("tiny", memory_profile="24gb", show_progress=False)
    assert restorer.group_offloaded and restorer.vae.use_tiling
    err = capsys.readouterr().err
    assert "predicted peak" in err and "No GPU in use" in err
    plain = ArtifactRestorer.from_preset("tiny", show_progress=False)
    assert not plain.group_offloaded and not plain.vae.use_tiling


def test_the_clis_pass_the_profile_on():
    from artifactworld_ns.render import RestoreOptions
    from artifactworld_ns.restorer.cli_restore import RestoreArgs, restorer_overrides

    args = RestoreArgs(input_folder="in", output_folder="out", profile="24gb", force=True, device="cpu")
    assert restorer_overrides(args)["memory_profile"] == "24gb" and restorer_overrides(args)["force_memory_profile"]
    assert RestoreOptions(profile="40gb").restorer_overrides()["memory_profile"] == "40gb"
    assert "memory_profile" not in RestoreOptions().restorer_overrides()
