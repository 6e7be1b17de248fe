import shutil
from pathlib import Path

import pytest
import torch
from restorer_fixtures import aw_cache, load_tiny, tiny_roots  # noqa: F401

from artifactworld_ns.restorer import pipeline as pipeline_module
from artifactworld_ns.restorer.errors import RestorerInputError
from artifactworld_ns.restorer.latents import auxiliary_latents
from artifactworld_ns.restorer.loading import default_dtype, load_auxiliary_latent
from artifactworld_ns.restorer.roots import ReleaseRoots, ensure_roots, resolve_roots


def test_env_vars_pick_the_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTIFACTWORLD_WEIGHTS_ROOT", str(tmp_path / "w"))
    monkeypatch.setenv("ARTIFACTWORLD_LTX_MAIN_ROOT", str(tmp_path / "main"))
    monkeypatch.setenv("ARTIFACTWORLD_LTX_097_DEV_ROOT", str(tmp_path / "dev"))
    roots = resolve_roots()
    assert roots == ReleaseRoots(tmp_path / "w", tmp_path / "main", tmp_path / "dev")
    assert resolve_roots(weights_root=tmp_path / "x").weights == tmp_path / "x"


def test_defaults_live_under_the_cache(aw_cache):  # noqa: F811
    roots = resolve_roots()
    assert roots.weights == aw_cache / "weights" / "ArtifactWorld"
    assert roots.ltx_097_dev == aw_cache / "weights" / "LTX-Video-0.9.7-dev"


def test_subfolder_pointing_roots_are_corrected(tiny_roots):  # noqa: F811
    with pytest.warns(UserWarning) as record:
        roots = resolve_roots(tiny_roots.weights, tiny_roots.ltx_main / "vae", tiny_roots.ltx_097_dev / "transformer")
    assert roots == tiny_roots
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert any("0.9.7-dev root" in m and "points at its 'transformer' subfolder" in m for m in messages)
    assert any("LTX-Video root" in m and "points at its 'vae' subfolder" in m for m in messages)
    with pytest.warns(UserWarning, match="auxiliary_latents"):
        assert (
            resolve_roots(tiny_roots.weights / "auxiliary_latents", tiny_roots.ltx_main, tiny_roots.ltx_097_dev)
            == tiny_roots
        )


def test_missing_weights_root_names_the_download_command(tmp_path, tiny_roots):  # noqa: F811
    roots = ReleaseRoots(tmp_path / "nowhere", tiny_roots.ltx_main, tiny_roots.ltx_097_dev)
    with pytest.raises(RestorerInputError) as err:
        ensure_roots(roots)
    message = str(err.value)
    assert f"hf download buaadwxl/ArtifactWorld --local-dir {tmp_path / 'nowhere'}" in message
    assert "ARTIFACTWORLD_WEIGHTS_ROOT" in message and message.count(". ") == 0


def test_missing_ltx_roots_and_offline_hub(tmp_path, tiny_roots, monkeypatch):  # noqa: F811
    import huggingface_hub.constants

    roots = ReleaseRoots(tiny_roots.weights, tiny_roots.ltx_main, tmp_path / "dev")
    assert ensure_roots(roots) == roots  # the default path needs no 0.9.7-dev root (no scheduler is loaded)
    with pytest.raises(
        RestorerInputError, match='hf download Lightricks/LTX-Video-0.9.7-dev --include "transformer/\\*" --local-dir'
    ):
        ensure_roots(roots, transformer_source="0.9.7-dev")  # only its sharded transformer, the documented option
    roots = ReleaseRoots(tiny_roots.weights, tmp_path / "main", tmp_path / "dev")
    with pytest.raises(RestorerInputError, match='hf download Lightricks/LTX-Video --include "tokenizer/\\*"'):
        ensure_roots(roots)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RestorerInputError, match="HF_HUB_OFFLINE is set"):
        ensure_roots(roots, allow_download=True)


def test_dtype_policy():
    assert default_dtype("cpu") == torch.float32
    assert default_dtype("cuda") == torch.bfloat16


def test_release_aux_latents_equal_vae_computed_ones(tiny_roots):  # noqa: F811
    restorer = load_tiny(tiny_roots, adapters=())
    # the tiny release ships z_full as the official packed dict and z_null as a [C, F, h, w] tensor,
    # both for a 17-frame 32x64 reference (latent 3 x 1 x 2)
    z_full_file = load_auxiliary_latent(tiny_roots, "z_full.pt")
    z_full, z_null = auxiliary_latents(restorer.vae, 17, 32, 64)
    assert z_full_file.shape == z_full.shape == (1, 8, 3, 1, 2)
    assert torch.allclose(z_full_file, z_full, atol=1e-6)
    assert torch.allclose(load_auxiliary_latent(tiny_roots, "z_null.pt"), z_null, atol=1e-6)
    assert not torch.allclose(z_full, z_null)
    # a reference of another size falls back to computing them with the VAE
    other = restorer.auxiliary_latents(17, 64, 64, torch.Size((1, 8, 3, 2, 2)))
    assert other[0].shape == (1, 8, 3, 2, 2)
    assert torch.allclose(other[1], auxiliary_latents(restorer.vae, 17, 64, 64)[1])
    no_aux = tiny_roots.weights.parent / "weights-noaux"
    shutil.copytree(tiny_roots.weights, no_aux, ignore=shutil.ignore_patterns("auxiliary_latents"))
    assert load_auxiliary_latent(ReleaseRoots(no_aux, tiny_roots.ltx_main, tiny_roots.ltx_097_dev), "z_full.pt") is None


def test_every_official_z_file_format_loads(tmp_path, tiny_roots):  # noqa: F811
    from artifactworld_ns.restorer.sampler import pack_latents

    z = torch.randn(1, 8, 3, 1, 2)
    weights = tmp_path / "w"
    (weights / "auxiliary_latents").mkdir(parents=True)
    roots = ReleaseRoots(weights, tiny_roots.ltx_main, tiny_roots.ltx_097_dev)
    formats = {
        "tensor4d.pt": z[0],
        "tensor5d.pt": z,
        "packed_with_sizes.pt": {"latents": pack_latents(z)[0], "num_frames": 3, "height": 1, "width": 2},
        "packed_only.pt": {"latents": pack_latents(z)[0]},  # unpacked with the clip's latent shape
        "unpacked.pt": {"latents_unpacked": z[0], "num_frames": 3},
    }
    for name, value in formats.items():
        torch.save(value, weights / "auxiliary_latents" / name)
        assert torch.equal(load_auxiliary_latent(roots, name, (1, 8, 3, 1, 2)), z), name
    torch.save({"something": [1, 2]}, weights / "auxiliary_latents" / "bad.pt")
    with pytest.raises(RestorerInputError) as err:
        load_auxiliary_latent(roots, "bad.pt")
    assert "bad.pt is not an official z-file" in str(err.value) and str(err.value).count(". ") == 0
    (weights / "auxiliary_latents" / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(RestorerInputError, match="garbage.pt could not be read"):
        load_auxiliary_latent(roots, "garbage.pt")


def test_transformer_single_file_with_the_wrong_configuration_is_one_sentence(tiny_roots):  # noqa: F811
    from artifactworld_ns.restorer.loading import load_transformer

    with pytest.raises(RestorerInputError) as err:
        load_transformer(tiny_roots, torch.float32, "0.9.8-distilled", "ltxv-13b")
    message = str(err.value)
    assert "does not fit the ltxv-13b configuration" in message and "ltxv-13b-0.9.8-distilled.safetensors" in message
    assert "\n" not in message
    # both sources load the same tiny weights
    single = load_transformer(tiny_roots, torch.float32, "0.9.8-distilled", "tiny").state_dict()
    sharded = load_transformer(tiny_roots, torch.float32, "0.9.7-dev").state_dict()
    assert single.keys() == sharded.keys() and all(torch.equal(single[k], sharded[k]) for k in single)


def test_missing_098_file_names_both_options(tmp_path, tiny_roots):  # noqa: F811
    main = tmp_path / "main"
    shutil.copytree(tiny_roots.ltx_main, main, ignore=shutil.ignore_patterns("*.safetensors"))
    roots = ReleaseRoots(tiny_roots.weights, main, tiny_roots.ltx_097_dev)
    with pytest.raises(RestorerInputError) as err:
        ensure_roots(roots)
    message = str(err.value)
    assert "ltxv-13b-0.9.8-distilled.safetensors" in message and 'transformer_source="0.9.7-dev"' in message
    assert "--transformer-source 0.9.7-dev" in message
    assert ensure_roots(roots, transformer_source="0.9.7-dev") == roots


def test_prompt_embeddings_are_cached_and_encoder_loaded_once(tiny_roots, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("ARTIFACTWORLD_CACHE", str(tmp_path / "fresh-cache"))
    calls = []
    real = pipeline_module.load_text_encoder

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline_module, "load_text_encoder", counting)
    first = load_tiny(tiny_roots, adapters=())
    second = load_tiny(tiny_roots, adapters=())
    assert len(calls) == 1
    assert len(list((tmp_path / "fresh-cache" / "prompt_embeddings").glob("*.pt"))) == 2
    for stage in ("stage1", "stage2"):
        assert torch.equal(first.prompts[stage].embeds, second.prompts[stage].embeds)
    assert not torch.equal(first.prompts["stage1"].embeds, first.prompts["stage2"].embeds)


def test_allowed_download_fetches_only_needed_files_and_unpacks_weights(tmp_path, tiny_roots, monkeypatch):  # noqa: F811
    import tarfile

    import huggingface_hub
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    calls = []

    def fake_snapshot_download(repo_id, local_dir, allow_patterns):
        calls.append((repo_id, list(allow_patterns)))
        local_dir = Path(local_dir)
        if repo_id == "buaadwxl/ArtifactWorld":
            with tarfile.open(local_dir / "weights.tar", "w") as archive:
                archive.add(tiny_roots.weights, arcname="weights")
        else:
            source = tiny_roots.ltx_main if repo_id == "Lightricks/LTX-Video" else tiny_roots.ltx_097_dev
            shutil.copytree(source, local_dir, dirs_exist_ok=True)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    roots = ensure_roots(ReleaseRoots(tmp_path / "w", tmp_path / "main", tmp_path / "dev"), allow_download=True)
    assert calls == [
        ("buaadwxl/ArtifactWorld", ["weights.tar"]),
        ("Lightricks/LTX-Video", ["tokenizer/*", "text_encoder/*", "vae/*", "ltxv-13b-0.9.8-distilled.safetensors"]),
    ]  # nothing from the 0.9.7-dev repository on the default path
    assert roots.weights == tmp_path / "w" / "weights"
    assert roots.stage1_lora.exists() and roots.auxiliary_latent("z_null.pt").exists()


def test_official_prompts_padded_to_256_tokens_with_mask(tiny_roots, tmp_path, monkeypatch):  # noqa: F811
    from artifactworld_ns.restorer.prompts import MAX_PROMPT_TOKENS, STAGE_PROMPTS, cache_key

    # configs/stage1_infer.yaml and stage2_infer.yaml, `validation.prompts`
    assert STAGE_PROMPTS == {"stage1": "predict artifact map", "stage2": "remove artifact"}
    assert MAX_PROMPT_TOKENS == 256
    monkeypatch.setenv("ARTIFACTWORLD_CACHE", str(tmp_path / "cache"))
    restorer = load_tiny(tiny_roots, adapters=())
    for stage, words in (("stage1", 3), ("stage2", 2)):
        prompt = restorer.prompts[stage]
        assert prompt.embeds.shape[:2] == (1, 256) and prompt.mask.shape == (1, 256)
        assert int(prompt.mask.sum()) == words + 1  # the words and </s>; the rest is padding, masked out
    # embeddings cached for another prompt text or token length have other keys: never reused
    assert (
        len(
            {
                cache_key("enc", "remove artifact", 256),
                cache_key("enc", "remove artifact", 128),
                cache_key("enc", "other", 256),
            }
        )
        == 3
    )


def test_quiet_hub_progress_nests_and_restores_the_bars():
    """The tiny preset builds its release (quiet) inside its own quiet load: the inner exit must not turn
    the bars back on for the rest of the load, and the outer exit leaves them as the user had them."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from artifactworld_ns.restorer.loading import quiet_hub_progress

    libraries = (transformers_logging, diffusers_logging)
    before = [lib.is_progress_bar_enabled() for lib in libraries]
    try:
        for user_setting in (True, False):
            for lib in libraries:
                (lib.enable_progress_bar if user_setting else lib.disable_progress_bar)()
            with quiet_hub_progress():
                with quiet_hub_progress():
                    pass
                assert not any(lib.is_progress_bar_enabled() for lib in libraries)
            assert all(lib.is_progress_bar_enabled() == user_setting for lib in libraries)
    finally:
        for lib, enabled in zip(libraries, before):
            (lib.enable_progress_bar if enabled else lib.disable_progress_bar)()
