"""aw-train-lora: the official trainer's sequences, timesteps, first-frame conditioning, LR schedule and
adapter files on the tiny preset; checkpoints and resume."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from restorer_fixtures import aw_cache, load_tiny  # noqa: F401
from safetensors.torch import load_file, save_file
from test_make_pairs import clean_clip, degrade_left_half

from artifactworld_ns.restorer import cli_make_pairs, cli_train_lora
from artifactworld_ns.restorer.errors import RestorerInputError
from artifactworld_ns.restorer.flow_matching import (
    build_flow_batch,
    draw_first_frame_conditioning,
    evaluate_loss,
    logit_normal_shift,
    masked_flow_matching_loss,
    sample_sigma,
)
from artifactworld_ns.restorer.lora import load_lora_adapter, set_active_adapter
from artifactworld_ns.restorer.lora_training import add_trainable_lora, save_release_adapter
from artifactworld_ns.restorer.pairs import open_pairs
from artifactworld_ns.restorer.presets import resolve_preset
from artifactworld_ns.restorer.tiny import save_tiny_release
from artifactworld_ns.restorer.train_config import TrainConfig
from artifactworld_ns.restorer.training import load_training_transformer, make_lr_scheduler, train
from artifactworld_ns.restorer.video_io import write_video


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
        code = cli_make_pairs.main(
            [
                "--gt-dir",
                str(root / "gt"),
                "--artifact-dir",
                str(root / "art"),
                "--output-dir",
                str(root / "pairs"),
                "--preset",
                "tiny",
                "--heatmap-metric",
                "l1",
            ]
        )
    assert code == 0
    return root / "pairs"


def config(pairs_dir: Path, out: Path, **kw) -> TrainConfig:
    defaults = dict(
        preset="tiny", steps=40, learning_rate=1e-2, checkpoint_every=1000, show_progress=False, log_with="none"
    )
    return TrainConfig(data=pairs_dir, output_dir=out, **{"stage": 2, **defaults, **kw})


def tiny_transformer_with(adapter_file: Path | None, adapter: str):
    """The tiny preset's backbone (as training loads it) with the saved adapter loaded through restorer/lora.py."""
    transformer = load_training_transformer(resolve_preset("tiny"), "cpu", torch.float32)
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
    assert last < 0.95 * first, (first, last)  # noisy: s is drawn per step (the tiny model's floor is near 2)

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
    assert trained < 0.92 * bare, (bare, trained)  # deterministic: about 0.82 (stage 1) and 0.88 (stage 2)
    assert load_file(str(out / f"comfy_{name}.safetensors")).keys() == {
        k.replace("transformer.", "diffusion_model.", 1) for k in keys
    }


def tokens_of(latent: torch.Tensor) -> torch.Tensor:
    return latent.flatten(2).transpose(1, 2)


def test_stage2_sequence_is_ref_noisy_target_and_scaled_heatmap(pairs_dir) -> None:
    latents = open_pairs(pairs_dir, "tiny")[0]
    n = latents["z_ref"][0, 0].numel()  # tokens per segment (4 x 2 x 2)
    noise = torch.randn(latents["z_ref"].shape, generator=torch.Generator().manual_seed(0))
    batch = build_flow_batch(2, latents, 0.6004, noise)
    assert batch.target == slice(n, 2 * n) and batch.hidden.shape == (1, 3 * n, 8)
    # [ref, noisy target, heatmap x 0.05]; context exactly clean (no context noise, no AATF blending)
    assert torch.equal(batch.hidden[:, :n], tokens_of(latents["z_ref"]))
    z_clean, eps = tokens_of(latents["z_clean"]), tokens_of(noise)
    assert torch.allclose(batch.hidden[:, n : 2 * n], (1 - 0.6004) * z_clean + 0.6004 * eps, atol=1e-6)
    assert torch.allclose(batch.hidden[:, 2 * n :], 0.05 * tokens_of(latents["z_heatmap"]))
    # timesteps [0, round(1000 s), 0]; the velocity target eps - z0
    assert torch.equal(batch.timesteps[0], torch.cat([torch.zeros(n), torch.full((n,), 600.0), torch.zeros(n)]))
    assert torch.allclose(batch.velocity, eps - z_clean)
    assert batch.conditioning[0].tolist() == [True] * n + [False] * n + [True] * n
    # every segment on the same RoPE coordinates: (frame * 8 / fps, row * 32, col * 32), fps from the pair
    coords = batch.coords[0]
    assert torch.equal(coords[:, :n], coords[:, n : 2 * n]) and torch.equal(coords[:, :n], coords[:, 2 * n :])
    assert coords[:, n - 1].tolist() == pytest.approx([3 * 8 / 24, 32.0, 32.0]) and coords[
        :, 4
    ].tolist() == pytest.approx([8 / 24, 0, 0])
    # the context does not depend on s (nothing is blended or noised by time)
    other = build_flow_batch(2, latents, 0.1, noise)
    assert torch.equal(other.hidden[:, :n], batch.hidden[:, :n]) and torch.equal(
        other.hidden[:, 2 * n :], batch.hidden[:, 2 * n :]
    )
    assert torch.equal(
        build_flow_batch(2, latents, 0.6, noise, noisemap_feature_scale=1.0).hidden[:, 2 * n :],
        tokens_of(latents["z_heatmap"]),
    )

    stage1 = build_flow_batch(1, latents, 0.3, noise)
    assert stage1.hidden.shape == (1, 2 * n, 8) and stage1.target == slice(n, 2 * n)
    assert torch.equal(stage1.hidden[:, :n], tokens_of(latents["z_ref"]))
    assert torch.allclose(stage1.velocity, eps - tokens_of(latents["z_heatmap"]))
    assert torch.equal(stage1.timesteps[0], torch.cat([torch.zeros(n), torch.full((n,), 300.0)]))


def test_loss_covers_only_the_target_and_first_frame_conditioning_excludes_its_first_frame(pairs_dir) -> None:
    latents = open_pairs(pairs_dir, "tiny")[0]
    n, frame = latents["z_ref"][0, 0].numel(), 4  # 4 tokens per latent frame (2 x 2)
    noise = torch.randn(latents["z_ref"].shape, generator=torch.Generator().manual_seed(1))
    plain = build_flow_batch(2, latents, 0.7, noise)
    cond = build_flow_batch(2, latents, 0.7, noise, first_frame=True)
    z_clean = tokens_of(latents["z_clean"])
    # the target's first latent frame stays clean, at timestep 0, and is marked as conditioning
    assert torch.equal(cond.hidden[:, n : n + frame], z_clean[:, :frame])
    assert torch.equal(cond.hidden[:, n + frame : 2 * n], plain.hidden[:, n + frame : 2 * n])
    assert cond.timesteps[0, n : n + frame].abs().max() == 0 and (cond.timesteps[0, n + frame : 2 * n] == 700).all()
    assert cond.conditioning[0, n : 2 * n].tolist() == [True] * frame + [False] * (n - frame)

    prediction = torch.randn(cond.hidden.shape, requires_grad=True)
    loss = masked_flow_matching_loss(prediction, cond)
    rest = (prediction[:, n + frame : 2 * n] - cond.velocity[:, frame:]).pow(2).mean()
    assert torch.allclose(loss, rest)  # mean over the unmasked target tokens (official mul(mask).div(mask.mean()))
    assert torch.allclose(
        masked_flow_matching_loss(prediction, plain), (prediction[:, n : 2 * n] - plain.velocity).pow(2).mean()
    )
    changed = prediction.detach().clone()
    changed[:, :n] += 100.0  # reference
    changed[:, n : n + frame] -= 30.0  # conditioned first frame
    changed[:, 2 * n :] -= 50.0  # heatmap
    assert torch.equal(masked_flow_matching_loss(changed, cond), loss.detach())
    loss.backward()
    grad = prediction.grad[0].abs().sum(-1)
    assert grad[: n + frame].max() == 0 and grad[2 * n :].max() == 0 and (grad[n + frame : 2 * n] > 0).all()

    # a target of a single latent frame is never conditioned away (official: h * w < sequence length)
    one = {k: (v[:, :, :1] if torch.is_tensor(v) else v) for k, v in latents.items()}
    single = build_flow_batch(1, one, 0.5, torch.randn(one["z_ref"].shape), first_frame=True)
    assert not single.conditioning[0, frame:].any()


def test_first_frame_conditioning_is_drawn_with_probability_p() -> None:
    generator = torch.Generator().manual_seed(0)
    draws = [draw_first_frame_conditioning(0.2, generator) for _ in range(20000)]
    assert abs(sum(draws) / len(draws) - 0.2) < 0.01
    state = generator.get_state()
    assert not any(draw_first_frame_conditioning(0.0, generator) for _ in range(10))
    assert torch.equal(generator.get_state(), state)  # p = 0 draws nothing, as the official short-circuit
    assert TrainConfig(stage=2, data=Path("."), output_dir=Path(".")).first_frame_conditioning_p == 0.2


def test_shifted_logit_normal_follows_ltx_video_trainer() -> None:
    # shift(L) = 0.95 + (2.05 - 0.95) (L - 1024) / (4096 - 1024), not clamped
    assert logit_normal_shift(1024) == pytest.approx(0.95)
    assert logit_normal_shift(4096) == pytest.approx(2.05)
    assert logit_normal_shift(2560) == pytest.approx(1.5)
    assert logit_normal_shift(6630) == pytest.approx(2.957356770833, abs=1e-9)  # 97 x 544 x 960 -> 13 x 17 x 30
    assert logit_normal_shift(16) == pytest.approx(0.95 - 1.1 * 1008 / 3072)  # the toy pairs' 16 tokens
    n = float(torch.randn((), generator=torch.Generator().manual_seed(3)))
    s = sample_sigma("shifted_logit_normal", 6630, torch.Generator().manual_seed(3))
    assert s == pytest.approx(1.0 / (1.0 + math.exp(-(n + logit_normal_shift(6630)))), rel=1e-6)
    s2 = sample_sigma("shifted_logit_normal", 1024, torch.Generator().manual_seed(3), std=2.0)
    assert s2 == pytest.approx(1.0 / (1.0 + math.exp(-(2.0 * n + 0.95))), rel=1e-6)
    generator = torch.Generator().manual_seed(0)
    samples = torch.tensor([sample_sigma("shifted_logit_normal", 4096, generator) for _ in range(4000)])
    assert float(samples.median()) == pytest.approx(1.0 / (1.0 + math.exp(-2.05)), abs=0.02)
    u = sample_sigma("uniform", 4096, torch.Generator().manual_seed(3))
    assert u == float(torch.rand((), generator=torch.Generator().manual_seed(3)))


def test_learning_rate_decays_linearly_from_1_to_0_1() -> None:
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([param], lr=2e-4)
    config = TrainConfig(stage=2, data=Path("."), output_dir=Path("."))
    assert (config.learning_rate, config.max_grad_norm, config.weight_decay) == (2e-4, 1.0, 0.01)
    scheduler = make_lr_scheduler(optimizer, config, steps=10)
    seen = [optimizer.param_groups[0]["lr"]]
    for _ in range(12):
        optimizer.step()
        scheduler.step()
        seen.append(optimizer.param_groups[0]["lr"])
    expected = [2e-4 * (1.0 - 0.9 * min(k, 10) / 10) for k in range(13)]  # LinearLR(1.0 -> 0.1, total_iters=10)
    assert seen == pytest.approx(expected, rel=1e-9)
    assert (
        make_lr_scheduler(
            optimizer, TrainConfig(stage=2, data=Path("."), output_dir=Path("."), lr_schedule="constant"), 10
        )
        is None
    )


@pytest.mark.parametrize("alpha", [4.0, 8.0])
def test_saved_adapter_and_comfy_copy_reload_to_the_trained_layers(alpha, tmp_path) -> None:
    models = resolve_preset("tiny")
    trained = load_training_transformer(models, "cpu", torch.float32)
    add_trainable_lora(trained, "stage2", 4, alpha, ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    path = tmp_path / "stage2_noisemap_blend_lora.safetensors"
    comfy = save_release_adapter(trained, "stage2", path)
    assert comfy == tmp_path / "comfy_stage2_noisemap_blend_lora.safetensors"
    official, comfy_state = load_file(str(path)), load_file(str(comfy))
    assert all(k.startswith("transformer.transformer_blocks.") for k in official)
    assert {k.replace("transformer.", "diffusion_model.", 1) for k in official} == set(comfy_state)
    key = "transformer.transformer_blocks.0.ff.net.2.lora_B.weight"
    raw = trained.get_submodule("transformer_blocks.0.ff.net.2").lora_B["stage2"].weight
    assert torch.equal(official[key], raw * (alpha / 4))  # folded only when alpha != rank
    assert {k.split(".lora_")[0].split(".", 3)[3] for k in official} == {
        "attn1.to_q",
        "attn1.to_k",
        "attn1.to_v",
        "attn1.to_out.0",
        "attn2.to_q",
        "attn2.to_k",
        "attn2.to_v",
        "attn2.to_out.0",
        "ff.net.0.proj",
        "ff.net.2",
    }

    batch = build_flow_batch(
        2,
        {
            "z_ref": torch.randn(1, 8, 2, 2, 2),
            "z_clean": torch.randn(1, 8, 2, 2, 2),
            "z_heatmap": torch.randn(1, 8, 2, 2, 2),
        },
        0.5,
        torch.randn(1, 8, 2, 2, 2),
    )
    prompt = open_pairs_prompt(models)
    inputs = dict(
        hidden_states=batch.hidden,
        encoder_hidden_states=prompt.embeds,
        timestep=batch.timesteps,
        encoder_attention_mask=prompt.mask,
        video_coords=batch.coords,
        return_dict=False,
    )
    with torch.no_grad():
        want = trained(**inputs)[0]
        for file in (path, comfy):
            got = tiny_transformer_with(file, "stage2")(**inputs)[0]
            assert torch.allclose(got, want, atol=1e-5)


def open_pairs_prompt(models):
    from artifactworld_ns.restorer.presets import prompt_embeddings

    return prompt_embeddings(models)["stage2"]


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
    # accelerate's automatic names: checkpoint_K is the K-th save (steps 3 and 6), its step in state.json
    assert sorted(p.name for p in (tmp_path / "straight" / "checkpoints").iterdir()) == [
        "checkpoint_0",
        "checkpoint_1",
    ]
    step3, step6 = "checkpoint_0", "checkpoint_1"

    interrupted = tmp_path / "interrupted"
    shutil.copytree(tmp_path / "straight" / "checkpoints" / step3, interrupted / "checkpoints" / step3)
    resumed = train(config(pairs_dir, interrupted, steps=6, checkpoint_every=3, resume=True))
    assert (resumed.start_step, resumed.end_step, len(resumed.losses)) == (3, 6, 3)
    assert resumed.losses == pytest.approx(full.losses[3:], rel=1e-4)
    a, b = load_file(str(full.adapter_path)), load_file(str(resumed.adapter_path))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)

    done = train(config(pairs_dir, interrupted, steps=6, resume=True))  # nothing left to do
    assert (done.start_step, done.end_step, done.losses, done.already_finished) == (6, 6, [], True)

    # accelerate's save_state layout; the backbone is not in it (the save hook writes the adapter only)
    assert sorted(p.name for p in (tmp_path / "straight" / "checkpoints" / step3).iterdir()) == [
        "adapter.safetensors",
        "custom_checkpoint_0.pkl",
        "optimizer.bin",
        "random_states_0.pkl",
        "scheduler.bin",
        "state.json",
    ]

    # the LR schedule resumed too: LinearLR reached its end factor (0.1) at the last step of both runs
    for run in ("straight", "interrupted"):
        state = torch.load(tmp_path / run / "checkpoints" / step6 / "optimizer.bin", weights_only=False)
        assert state["param_groups"][0]["lr"] == pytest.approx(1e-2 * 0.1)
    mid = torch.load(tmp_path / "straight" / "checkpoints" / step3 / "optimizer.bin", weights_only=False)
    assert mid["param_groups"][0]["lr"] == pytest.approx(1e-2 * (1 - 0.9 * 3 / 6))

    # a checkpoint of the earlier hand-written format (optimizer.pt, scheduler.pt, sampling-rank0.pt) is refused
    old = tmp_path / "old" / "checkpoints" / "step-3"
    old.mkdir(parents=True)
    for name in ("adapter.safetensors", "state.json"):
        shutil.copy(tmp_path / "straight" / "checkpoints" / step3 / name, old / name)
    torch.save(mid, old / "optimizer.pt")
    torch.save(None, old / "scheduler.pt")
    torch.save({"generator": torch.Generator().get_state(), "pending": []}, old / "sampling-rank0.pt")
    with pytest.raises(RestorerInputError, match="has no accelerate state.*start a new run in another --output-dir"):
        train(config(pairs_dir, tmp_path / "old", steps=6, resume=True))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--stage", "3"], "--stage must be 1 (heatmap predictor), 2 (AATF restorer) or world-model, got 3."),
        (
            ["--stage", "1", "--rank", "64"],
            "LoRA rank 64 does not fit: target transformer_blocks.0.attn1.to_q is a 16->16 linear layer, so the rank must be between 1 and 16.",
        ),
        (
            ["--stage", "2", "--target-modules", "conv_in"],
            "The LoRA target modules conv_in match no linear layer of the transformer.",
        ),
    ],
)
def test_bad_settings_fail_in_one_sentence(extra, message, pairs_dir, tmp_path, capsys) -> None:
    code = cli_train_lora.main(
        [
            "--preset",
            "tiny",
            "--data",
            str(pairs_dir),
            "--output-dir",
            str(tmp_path / "o"),
            "--steps",
            "2",
            "--log-with",
            "none",
            "--no-show-progress",
            *extra,
        ]
    )
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and message in err and "Traceback" not in err


def test_empty_or_foreign_dataset_fails_in_one_sentence(pairs_dir, tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(pairs_dir / "meta.json", empty / "meta.json")
    args = ["--stage", "1", "--preset", "tiny", "--output-dir", str(tmp_path / "o"), "--log-with", "none"]
    assert cli_train_lora.main([*args, "--data", str(empty)]) == 2
    assert "contains no training pairs" in capsys.readouterr().err
    assert (
        cli_train_lora.main(
            ["--stage", "1", "--preset", "full", "--data", str(pairs_dir), "--output-dir", str(tmp_path / "o")]
        )
        == 2
    )
    err = " ".join(capsys.readouterr().err.split())
    assert "encoded with the 'tiny' preset's VAE, not 'full'" in err and "Traceback" not in err


def test_cli_trains_and_reports_speed_and_memory(pairs_dir, tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    code = cli_train_lora.main(
        [
            "--stage",
            "1",
            "--preset",
            "tiny",
            "--data",
            str(pairs_dir),
            "--output-dir",
            str(out),
            "--steps",
            "3",
            "--log-with",
            "none",
            "--checkpoint-every",
            "2",
        ]
    )
    err = " ".join(capsys.readouterr().err.split())
    assert code == 0, err
    assert "UNTRAINED" in err and "steps/s" in err and "peak memory" in err
    assert (out / "stage1_pred_headmap_lora.safetensors").exists() and (out / "stage1_pred_headmap_lora.json").exists()
    comfy = load_file(str(out / "comfy_stage1_pred_headmap_lora.safetensors"))  # the official ComfyUI copy
    assert comfy and all(k.startswith("diffusion_model.transformer_blocks.") for k in comfy)
    assert "comfy_stage1_pred_headmap_lora.safetensors" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_0", "checkpoint_1"]  # steps 2, 3


def test_resume_with_gradient_accumulation_repeats_the_uninterrupted_run(pairs_dir, tmp_path) -> None:
    full = train(config(pairs_dir, tmp_path / "straight", steps=4, checkpoint_every=2, gradient_accumulation_steps=2))
    assert len(full.losses) == 4
    interrupted = tmp_path / "interrupted"
    shutil.copytree(
        tmp_path / "straight" / "checkpoints" / "checkpoint_0", interrupted / "checkpoints" / "checkpoint_0"
    )
    resumed = train(
        config(pairs_dir, interrupted, steps=4, checkpoint_every=2, gradient_accumulation_steps=2, resume=True)
    )
    assert (resumed.start_step, resumed.end_step) == (2, 4)
    assert resumed.losses == full.losses[2:]  # the same pairs, timesteps and noise, bit for bit
    a, b = load_file(str(full.adapter_path)), load_file(str(resumed.adapter_path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for run in ("straight", "interrupted"):  # one optimizer and scheduler step per 2 micro-batches
        state = torch.load(tmp_path / run / "checkpoints" / "checkpoint_1" / "optimizer.bin", weights_only=False)
        assert state["param_groups"][0]["lr"] == pytest.approx(1e-2 * 0.1) and int(state["state"][0]["step"]) == 4


def test_sampling_state_is_saved_for_every_process_and_restored_per_process() -> None:
    from artifactworld_ns.restorer.checkpoints import SamplingState

    saved = [SamplingState(torch.Generator().manual_seed(s), 7, i, 2) for i, s in enumerate((1, 2))]
    for state in saved:
        state.next_index()
    # accelerate writes the main process's state_dict: it holds every process's entry (gathered)
    processes = {"processes": [{"generator": s.generator.get_state(), "pending": list(s.pending)} for s in saved]}
    for i in range(3):
        fresh = SamplingState(torch.Generator().manual_seed(99), 5, i, 3)
        untouched = fresh.generator.get_state()
        fresh.load_state_dict(processes)
        if i < 2:
            assert torch.equal(fresh.generator.get_state(), saved[i].generator.get_state())
            assert fresh.pending == [k for k in saved[i].pending if k < 5]  # pairs beyond the dataset are dropped
        else:  # more processes than were saved: a fresh sampling state
            assert torch.equal(fresh.generator.get_state(), untouched) and fresh.pending == []
    single = SamplingState(torch.Generator().manual_seed(3), 4, 0, 1)
    single.next_index()
    assert (
        len(single.state_dict()["processes"]) == 1 and single.state_dict()["processes"][0]["pending"] == single.pending
    )


def test_tensorboard_events_under_logs_hold_the_step_losses(pairs_dir, tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    result = train(config(pairs_dir, out, steps=2, log_with="tensorboard"))
    events = EventAccumulator(str(out / "logs" / "artifactworld-lora")).Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [
        (1, pytest.approx(result.losses[0])),
        (2, pytest.approx(result.losses[1])),
    ]
    assert [e.step for e in events.Scalars("train/lr")] == [1, 2] and events.Scalars("train/grad_norm")


def test_wandb_without_the_package_fails_in_one_sentence(pairs_dir, tmp_path, monkeypatch) -> None:
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: False)
    with pytest.raises(
        RestorerInputError,
        match=r"^--log-with wandb needs the wandb package; install it or use --log-with tensorboard\.$",
    ):
        train(config(pairs_dir, tmp_path / "w", steps=1, log_with="wandb"))


def test_checkpoints_total_limit_keeps_the_newest_n(pairs_dir, tmp_path) -> None:
    out = tmp_path / "limited"
    train(config(pairs_dir, out, steps=4, checkpoint_every=1, checkpoints_total_limit=2))
    kept = sorted((out / "checkpoints").iterdir())
    assert [p.name for p in kept] == ["checkpoint_2", "checkpoint_3"]  # accelerate deleted the saves of steps 1, 2
    assert [json.loads((p / "state.json").read_text())["global_step"] for p in kept] == [3, 4]

    # a resumed run goes on numbering after the newest folder and keeps pruning the oldest
    train(config(pairs_dir, out, steps=5, checkpoint_every=1, checkpoints_total_limit=2, resume=True))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_3", "checkpoint_4"]


def test_checkpoint_numbering_stays_in_save_order_after_older_step_folders(tmp_path) -> None:
    from artifactworld_ns.restorer.checkpoints import latest_checkpoint, next_save_iteration

    assert next_save_iteration(tmp_path) == 0
    for name in ("step-500", "step-1000"):  # the names of earlier versions
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
        (tmp_path / "checkpoints" / name / "state.json").write_text("{}")
    (tmp_path / "checkpoints" / "step-1500").mkdir()  # incomplete: no state.json
    assert latest_checkpoint(tmp_path).name == "step-1000"
    assert next_save_iteration(tmp_path) == 1501  # checkpoint_1501 sorts after step-1500 for accelerate's pruning


def test_resume_of_a_finished_run_says_so_and_changes_nothing(pairs_dir, tmp_path, capsys) -> None:
    out = tmp_path / "finished"
    args = ["--stage", "2", "--preset", "tiny", "--data", str(pairs_dir), "--output-dir", str(out), "--steps", "2"]
    args += ["--log-with", "none", "--no-show-progress"]
    assert cli_train_lora.main(args) == 0
    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    info = json.loads((out / "stage2_noisemap_blend_lora.json").read_text())
    assert info["final_loss"] is not None
    capsys.readouterr()

    assert cli_train_lora.main([*args, "--resume"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"the run in {out} already finished at step 2" in err and "nothing was changed" in err
    assert "steps/s" not in err and "Traceback" not in err
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()} == files


def test_checkpoints_total_limit_below_one_is_one_sentence(pairs_dir, tmp_path, capsys) -> None:
    code = cli_train_lora.main(
        ["--stage", "2", "--preset", "tiny", "--data", str(pairs_dir), "--output-dir", str(tmp_path / "o")]
        + ["--checkpoints-total-limit", "0", "--log-with", "none"]
    )
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "--checkpoints-total-limit must be at least 1" in err and "Traceback" not in err
