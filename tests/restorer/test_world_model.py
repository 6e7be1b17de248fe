"""The Artifact World Model (paper Sec. 3.3): its 2B base loads from a single file, its training refuses unlabelled
pairs, it learns the pair mapping, aw-degrade refuses bad input in one sentence, and sources mix by weight."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import wave_clip
from restorer_fixtures import aw_cache  # noqa: F401

from artifactworld_ns.restorer import ClipLabel, cli_make_pairs, write_labels
from artifactworld_ns.restorer.configs import LTXV_2B_CONFIG
from artifactworld_ns.restorer.errors import RestorerInputError
from artifactworld_ns.restorer.flywheel import cli_degrade
from artifactworld_ns.restorer.flywheel.sources import pair_probabilities
from artifactworld_ns.restorer.flywheel.world_model import (
    degrade_clip,
    encode_prompts,
    load_world_model,
    prompt_orders,
)
from artifactworld_ns.restorer.loading import load_transformer
from artifactworld_ns.restorer.pairs import open_pairs
from artifactworld_ns.restorer.presets import resolve_preset
from artifactworld_ns.restorer.roots import TRANSFORMER_2B_SINGLE_FILE, TRANSFORMER_SINGLE_FILE, allow_patterns
from artifactworld_ns.restorer.tiny import build_tiny_transformer, original_format_state_dict, tiny_roots
from artifactworld_ns.restorer.train_config import TrainConfig
from artifactworld_ns.restorer.training import train
from artifactworld_ns.restorer.video_io import read_video, write_video

TYPES = {"c0": ["Floaters", "Needles"], "c1": ["Blurring"]}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """Two labelled 9-frame 64x64 clips in aw-simulate's layout (degraded = noise on the left half)."""
    root = tmp_path_factory.mktemp("wm") / "simulated"
    for i, name in enumerate(TYPES):
        clean = wave_clip(9, 64, 64, freqs=(6.0, 5.0, 4.0), phases=(i, i, i))
        artifact = clean.clone()
        artifact[:, :, :32] += 0.3 * torch.randn(artifact[:, :, :32].shape, generator=torch.Generator().manual_seed(i))
        write_video(root / "gt" / f"{name}.mp4", clean, 24, crf=0)
        write_video(root / "artifact" / f"{name}.mp4", artifact.clamp(0, 1), 24, crf=0)
    write_labels(root / "labels.jsonl", [ClipLabel(n, t, "simulated", "test", {}) for n, t in TYPES.items()])
    return root


@pytest.fixture(scope="module")
def pairs(source, tmp_path_factory) -> Path:
    out = source.parent / "pairs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARTIFACTWORLD_CACHE", str(tmp_path_factory.getbasetemp() / "aw-cache"))
        mp.delenv("RANK", raising=False)
        mp.delenv("WORLD_SIZE", raising=False)
        args = ["--sources", str(source), "--output-dir", str(out), "--preset", "tiny", "--heatmap-metric", "l1"]
        assert cli_make_pairs.main(args) == 0
    return out


def config(data: Path, out: Path, **kw) -> TrainConfig:
    kw = {"preset": "tiny", "steps": 2, "checkpoint_every": 1000, "show_progress": False, "log_with": "none", **kw}
    return TrainConfig(stage="world-model", data=data, output_dir=out, **kw)


@pytest.mark.slow  # the real width (80 M weights in one block), as tests/restorer/test_full_width.py
def test_2b_single_file_loads_with_its_configuration_at_reduced_depth(tmp_path):
    """A random file in the 2B layout (real width: 32 heads x 64, cross-attention 2048, captions 4096; 1 of 28
    blocks), under the release's single-file name and original LTX keys, loads through diffusers' from_single_file."""
    roots = tiny_roots(tmp_path)
    roots.ltx_main.mkdir(parents=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        written = build_tiny_transformer({**LTXV_2B_CONFIG, "num_layers": 1}).to(torch.bfloat16)
    from safetensors.torch import save_file

    save_file(original_format_state_dict(written), str(roots.ltx_main / TRANSFORMER_2B_SINGLE_FILE))
    loaded = load_transformer(roots, torch.bfloat16, "0.9.8-distilled", "ltxv-2b", num_layers=1)
    config = loaded.config
    assert (config.num_attention_heads, config.attention_head_dim, config.cross_attention_dim) == (32, 64, 2048)
    assert config.caption_channels == 4096 and config.in_channels == 128 and config.num_layers == 1
    expected, got = written.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    with pytest.raises(RestorerInputError, match="does not fit the ltxv-13b configuration"):
        shutil.copy(roots.ltx_main / TRANSFORMER_2B_SINGLE_FILE, roots.ltx_main / TRANSFORMER_SINGLE_FILE)
        load_transformer(roots, torch.bfloat16, "0.9.8-distilled", "ltxv-13b", num_layers=1)


def test_full_world_model_needs_only_the_2b_file_and_says_how_to_fetch_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTIFACTWORLD_LTX_MAIN_ROOT", str(tmp_path / "LTX-Video"))
    (tmp_path / "LTX-Video" / "vae").mkdir(parents=True)
    (tmp_path / "LTX-Video" / "text_encoder").mkdir()
    with pytest.raises(RestorerInputError) as caught:
        resolve_preset("full", "ltxv-2b")
    message = str(caught.value)
    assert TRANSFORMER_2B_SINGLE_FILE in message and "hf download Lightricks/LTX-Video" in message
    assert TRANSFORMER_SINGLE_FILE not in message  # the 13B file is not needed, nor fetched
    patterns = allow_patterns("ltx_main", TRANSFORMER_2B_SINGLE_FILE)
    assert TRANSFORMER_2B_SINGLE_FILE in patterns and TRANSFORMER_SINGLE_FILE not in patterns
    (tmp_path / "LTX-Video" / TRANSFORMER_2B_SINGLE_FILE).write_bytes(b"")
    assert resolve_preset("full", "ltxv-2b").transformer_config == "ltxv-2b"


def test_the_2b_base_with_the_0_9_7_dev_shards_is_refused_not_loaded_as_13b(tmp_path, monkeypatch):
    from dataclasses import replace

    from artifactworld_ns.restorer import presets
    from artifactworld_ns.restorer.loading import load_transformer

    dev = replace(presets.PRESETS["full"], name="dev", transformer_source="0.9.7-dev")
    monkeypatch.setitem(presets.PRESETS, "dev", dev)
    with pytest.raises(RestorerInputError, match="0.9.7-dev shards, which are the 13B only; ltxv-2b needs"):
        resolve_preset("dev", "ltxv-2b")
    roots = presets.preset_roots(dev)
    with pytest.raises(RestorerInputError, match="13B transformer only, not ltxv-2b"):
        load_transformer(roots, torch.float32, "0.9.7-dev", "ltxv-2b")


def test_unlabelled_pairs_and_old_pairs_are_refused_in_one_sentence(pairs, tmp_path):
    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(pairs, unlabelled)
    meta = json.loads((unlabelled / "meta.json").read_text())
    del meta["labels"]["pairs"]["c1"]
    (unlabelled / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(RestorerInputError, match=r"^1 of the 2 pairs in .* have no artifact labels \(e\.g\. c1\)"):
        train(config(unlabelled, tmp_path / "a"))
    old = tmp_path / "old"
    shutil.copytree(pairs, old)
    for path in (old / "latents").glob("*.pt"):
        data = torch.load(path, weights_only=True)
        del data["z_artifact"]
        torch.save(data, path)
    with pytest.raises(RestorerInputError, match="rebuild them with aw-make-pairs --overwrite"):
        train(config(old, tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before anything was written


def test_source_weights_draw_sources_by_weight():
    sources = ["simulated"] * 6 + ["generated"] * 2
    p = pair_probabilities(sources, {"simulated": 1.0, "generated": 3.0})
    assert float(p[:6].sum()) == pytest.approx(0.25) and float(p[6:].sum()) == pytest.approx(0.75)
    assert float(pair_probabilities(sources, {"generated": 1.0})[:6].sum()) == 0
    with pytest.raises(RestorerInputError, match="names the source 'real', which no pair has"):
        pair_probabilities(sources, {"real": 1.0})


def test_aw_degrade_refuses_bad_input_in_one_sentence_before_loading(source, tmp_path, capsys):
    adapter = tmp_path / "wm.safetensors"
    base = [str(source / "gt"), "--output-dir", str(tmp_path / "gen"), "--preset", "tiny", "--adapter", str(adapter)]
    cases = [
        ([], "does not exist; train it with aw-train-lora --stage world-model"),
        (["--artifacts", "Floaters,Sparkles"], "Unknown artifact type 'Sparkles'"),
        (["--combinations", "0"], "--combinations must be at least 1"),
        (["--clip-frames", "10"], "not 8n+1"),
    ]
    adapter_made = False
    for extra, needle in cases:
        if extra and not adapter_made:
            adapter.write_bytes(b"not a safetensors file")
            adapter_made = True
        assert cli_degrade.main(base + extra) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert needle in err and err.startswith("error:") and "Traceback" not in err
    assert cli_degrade.main(base) == 2
    assert "is not a safetensors LoRA file" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "gen").exists()


@pytest.mark.slow
def test_world_model_output_approaches_the_pairs_degraded_clip_as_steps_grow(source, pairs, tmp_path):
    """On the pairs it trained on, the sampled latent (what aw-degrade decodes) comes closer to the pair's degraded
    latent (the same VAE's) with more steps: the adapter learned the mapping, not noise."""
    out, adapters, losses = tmp_path / "run", {}, []
    for steps in (1, 60, 240):  # one run, resumed: the adapter after 1, 60 and 240 steps
        result = train(config(pairs, out, steps=steps, learning_rate=3e-2, rank=16, resume=True))
        adapters[steps] = tmp_path / f"adapter_{steps}.safetensors"
        shutil.copy(result.adapter_path, adapters[steps])
        losses += result.losses
    assert sum(losses[-40:]) / 40 < 0.9 * sum(losses[1:41]) / 40  # the training loss falls

    models = resolve_preset("tiny")
    dataset = open_pairs(pairs, "tiny")
    distance = {}
    for steps, adapter in adapters.items():
        model = load_world_model(models, adapter, torch.device("cpu"), torch.float32)
        total = 0.0
        for index, path in enumerate(dataset.files):
            clean, _ = read_video(source / "gt" / f"{path.stem}.mp4")
            prompt = prompt_orders(dataset.label(index)["types"], 42, 8)[0]  # one of the orders it trained on
            embedding = encode_prompts(models, [prompt], "cpu")[prompt]
            target = dataset[index]["z_artifact"]
            for seed in (0, 1):
                total += float((degrade_clip(model, clean, embedding, seed, latent_only=True) - target).pow(2).mean())
        distance[steps] = total / (2 * len(dataset))
    assert distance[240] < distance[60] < distance[1], distance  # measured about 2.0, 1.6, 1.3
    assert distance[240] < 0.8 * distance[1], distance
