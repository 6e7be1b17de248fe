"""aw-train-lora: masked flow matching (Eq. 3) on the tiny preset, release-format adapters, checkpoints and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from restorer_fixtures import aw_cache, load_tiny  # noqa: F401
from safetensors.torch import load_file, save_file
from test_make_pairs import clean_clip, degrade_left_half

from restorer import cli_make_pairs, cli_train_lora
from restorer.aatf import PAPER_BEST_SCHEDULE, PiecewiseDecay
from restorer.lora import load_lora_adapter, set_active_adapter
from restorer.pairs import open_pairs, resolve_preset
from restorer.tiny import save_tiny_release
from restorer.training import (
    TrainConfig,
    build_flow_batch,
    evaluate_loss,
    heatmap_weights_at,
    masked_flow_matching_loss,
    train,
)
from restorer.video_io import write_video


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> Path:
    """Two toy pairs (17 frames, 64x64; degraded = noise on the left half), encoded with the tiny preset."""
    root = tmp_path_factory.mktemp("toy")
    for i in range(2):
        clean = clean_clip(float(i))
        write_video(root / "gt" / f"p{i}.mp4", clean, 24, crf=0)
        write_video(root / "art" / f"p{i}.mp4", degrade_left_half(clean, i), 24, crf=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARTIFACTWORLD_CACHE", str(tmp_path_factory.getbasetemp() / "aw-cache"))
        mp.delenv("RANK", raising=False)
        mp.delenv("WORLD_SIZE", raising=False)
        code = cli_make_pairs.main(["--gt-dir", str(root / "gt"), "--artifact-dir", str(root / "art"),
                                    "--output-dir", str(root / "pairs"), "--preset", "tiny", "--heatmap-metric", "l1"])
    assert code == 0
    return root / "pairs"


def config(pairs_dir: Path, out: Path, **kw) -> TrainConfig:
    defaults = dict(preset="tiny", steps=40, learning_rate=1e-2, checkpoint_every=1000, show_progress=False, log_with="none")
    return TrainConfig(data=pairs_dir, output_dir=out, **{"stage": 2, **defaults, **kw})


def tiny_transformer_with(adapter_file: Path | None, adapter: str):
    """The tiny preset's backbone (as training loads it) with the saved adapter loaded through restorer/lora.py."""
    from restorer.loading import load_backbone

    transformer = load_backbone(resolve_preset("tiny").roots, "cpu", torch.float32).transformer
    if adapter_file is not None:
        load_lora_adapter(transformer, adapter_file, adapter)
        set_active_adapter(transformer, adapter)
    return transformer


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2])
def test_training_loss_falls_and_the_release_file_reproduces_it(stage, pairs_dir, tmp_path) -> None:
    out = tmp_path / f"stage{stage}"
    result = train(config(pairs_dir, out, stage=stage, log_with="tensorboard"))
    assert result.end_step == 40 and len(result.losses) == 40
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert last < 0.75 * first, (first, last)

    name = {1: "stage1_pred_headmap_lora", 2: "stage2_noisemap_blend_lora"}[stage]
    assert result.adapter_path == out / f"{name}.safetensors"
    keys = load_file(str(result.adapter_path)).keys()
    assert all(k.startswith("transformer.transformer_blocks.") and (".lora_A." in k or ".lora_B." in k) for k in keys)
    assert any(".ff.net.0.proj." in k for k in keys) and any(".attn1.to_out.0." in k for k in keys)
    info = json.loads((out / f"{name}.json").read_text())
    assert info["stage"] == stage and info["rank"] == 4 and info["global_step"] == 40
    assert list((out / "logs").iterdir()), "tensorboard events are written"

    # Deterministic yardstick (fixed s and noise): the loaded release file beats the bare backbone clearly.
    dataset = open_pairs(pairs_dir, "tiny")
    items = [dataset[i] for i in range(len(dataset))]
    adapter = f"stage{stage}"
    prompt = dataset.prompts[adapter]
    bare = evaluate_loss(tiny_transformer_with(None, adapter), stage, items, prompt)
    trained = evaluate_loss(tiny_transformer_with(result.adapter_path, adapter), stage, items, prompt)
    assert trained < 0.75 * bare, (bare, trained)


def test_loss_ignores_the_reference_and_heatmap_slices(pairs_dir) -> None:
    latents = open_pairs(pairs_dir, "tiny")[0]
    tokens = latents["z_ref"][0, 0].numel()
    noise = torch.randn(latents["z_ref"].shape, generator=torch.Generator().manual_seed(0))
    batch = build_flow_batch(2, latents, 0.6, noise, heatmap_weights=(0.0, 0.5, 0.5))
    assert batch.target == slice(tokens, 2 * tokens) and batch.hidden.shape == (1, 3 * tokens, 8)
    assert torch.equal(batch.timesteps[0, :tokens], torch.zeros(tokens))  # reference: clean context
    assert torch.allclose(batch.timesteps[0, tokens : 2 * tokens], torch.full((tokens,), 600.0))
    assert torch.equal(batch.timesteps[0, 2 * tokens :], torch.zeros(tokens))  # heatmap: clean context
    z_clean = latents["z_clean"].flatten(2).transpose(1, 2)
    assert torch.allclose(batch.hidden[:, tokens : 2 * tokens], 0.4 * z_clean + 0.6 * noise.flatten(2).transpose(1, 2), atol=1e-6)
    assert torch.allclose(batch.coords[..., :tokens], batch.coords[..., tokens : 2 * tokens])  # shared RoPE positions

    prediction = torch.randn(batch.hidden.shape, requires_grad=True)
    loss = masked_flow_matching_loss(prediction, batch)
    changed = prediction.detach().clone()
    changed[:, :tokens] += 100.0
    changed[:, 2 * tokens :] -= 50.0
    assert torch.equal(masked_flow_matching_loss(changed, batch), loss.detach())
    loss.backward()
    assert prediction.grad[:, :tokens].abs().max() == 0 and prediction.grad[:, 2 * tokens :].abs().max() == 0
    assert prediction.grad[:, tokens : 2 * tokens].abs().max() > 0
    perfect = prediction.detach().clone()
    perfect[:, batch.target] = batch.velocity
    assert masked_flow_matching_loss(perfect, batch) == 0

    stage1 = build_flow_batch(1, latents, 0.3, noise)
    assert stage1.hidden.shape == (1, 2 * tokens, 8) and stage1.target == slice(tokens, 2 * tokens)
    z_hm = latents["z_heatmap"].flatten(2).transpose(1, 2)
    assert torch.allclose(stage1.velocity, noise.flatten(2).transpose(1, 2) - z_hm)


def test_stage2_heatmap_follows_the_inference_schedule_at_s() -> None:
    sigmas = torch.linspace(1.0, 0.0, 9)  # 8 steps
    assert heatmap_weights_at(PAPER_BEST_SCHEDULE, sigmas, 0.95) == (1.0, 0.0, 0.0)  # step 0: z_full
    assert heatmap_weights_at(PAPER_BEST_SCHEDULE, sigmas, 0.7) == (0.0, 1.0, 0.0)  # steps 1-3: z_hm
    assert heatmap_weights_at(PAPER_BEST_SCHEDULE, sigmas, 0.45) == (0.0, 0.75, 0.25)  # step 4: (0.375, 0.5]
    assert heatmap_weights_at(PAPER_BEST_SCHEDULE, sigmas, 0.01) == (0.0, 0.0, 1.0)  # step 7: z_null
    decay = PiecewiseDecay(0.3, 0.8)
    assert heatmap_weights_at(decay, sigmas, 0.9) == pytest.approx((0.5, 0.5, 0.0))
    assert heatmap_weights_at(decay, sigmas, 0.15) == pytest.approx((0.0, 0.5, 0.5))


@pytest.mark.slow
def test_saved_adapter_reloads_and_changes_restore_outputs(pairs_dir, tmp_path) -> None:
    result = train(config(pairs_dir, tmp_path / "run", stage=2, steps=30))
    trained = load_file(str(result.adapter_path))
    untrained = {k: (torch.zeros_like(v) if ".lora_B." in k else v) for k, v in trained.items()}  # peft init: B = 0

    roots = save_tiny_release(tmp_path / "release")
    clean = clean_clip(0.5)
    frames = degrade_left_half(clean, 3)
    outputs = []
    for state in (untrained, trained):
        save_file(state, str(roots.stage2_lora))  # in place of the released file
        restorer = load_tiny(roots)
        outputs.append(restorer.restore(frames, clean[0], clean[-1]).frames)
    assert outputs[0].shape == frames.shape
    assert (outputs[0] - outputs[1]).abs().mean() > 1e-3


def test_resume_continues_from_the_saved_step(pairs_dir, tmp_path) -> None:
    full = train(config(pairs_dir, tmp_path / "straight", steps=6, checkpoint_every=3))
    assert sorted(p.name for p in (tmp_path / "straight" / "checkpoints").iterdir()) == ["step-3", "step-6"]

    interrupted = tmp_path / "interrupted"
    shutil.copytree(tmp_path / "straight" / "checkpoints" / "step-3", interrupted / "checkpoints" / "step-3")
    resumed = train(config(pairs_dir, interrupted, steps=6, checkpoint_every=3, resume=True))
    assert (resumed.start_step, resumed.end_step, len(resumed.losses)) == (3, 6, 3)
    assert resumed.losses == pytest.approx(full.losses[3:], rel=1e-4)
    a, b = load_file(str(full.adapter_path)), load_file(str(resumed.adapter_path))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)

    done = train(config(pairs_dir, interrupted, steps=6, resume=True))  # nothing left to do
    assert (done.start_step, done.end_step, done.losses) == (6, 6, [])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--stage", "3"], "--stage must be 1 (heatmap predictor) or 2 (AATF restorer), got 3."),
        (["--stage", "1", "--rank", "64"], "LoRA rank 64 does not fit: target transformer_blocks.0.attn1.to_q is a 16->16 linear layer, so the rank must be between 1 and 16."),
        (["--stage", "2", "--target-modules", "conv_in"], "The LoRA target modules conv_in match no linear layer of the transformer."),
    ],
)
def test_bad_settings_fail_in_one_sentence(extra, message, pairs_dir, tmp_path, capsys) -> None:
    code = cli_train_lora.main(["--preset", "tiny", "--data", str(pairs_dir), "--output-dir", str(tmp_path / "o"),
                                "--steps", "2", "--log-with", "none", "--no-show-progress", *extra])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and message in err and "Traceback" not in err


def test_empty_or_foreign_dataset_fails_in_one_sentence(pairs_dir, tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(pairs_dir / "meta.json", empty / "meta.json")
    args = ["--stage", "1", "--preset", "tiny", "--output-dir", str(tmp_path / "o"), "--log-with", "none"]
    assert cli_train_lora.main([*args, "--data", str(empty)]) == 2
    assert "contains no training pairs" in capsys.readouterr().err
    assert cli_train_lora.main(["--stage", "1", "--preset", "full", "--data", str(pairs_dir), "--output-dir", str(tmp_path / "o")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "encoded with the 'tiny' preset's VAE, not 'full'" in err and "Traceback" not in err


def test_cli_trains_and_reports_speed_and_memory(pairs_dir, tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    code = cli_train_lora.main(["--stage", "1", "--preset", "tiny", "--data", str(pairs_dir), "--output-dir", str(out),
                                "--steps", "3", "--log-with", "none", "--checkpoint-every", "2"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 0, err
    assert "UNTRAINED" in err and "steps/s" in err and "peak memory" in err
    assert (out / "stage1_pred_headmap_lora.safetensors").exists() and (out / "stage1_pred_headmap_lora.json").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-3"]
