"""aw-make-pairs: DBA references, clean targets, pseudo-GT heatmaps and cached latents from clean/degraded pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import wave_clip
from restorer_fixtures import aw_cache  # noqa: F401

from artifactworld_ns.restorer import LABELS_FILE, ClipLabel, cli_make_pairs, write_labels
from artifactworld_ns.restorer.batch import InputError
from artifactworld_ns.restorer.dba import ClipLengthError, anchor_frame_mask
from artifactworld_ns.restorer.errors import RestorerInputError
from artifactworld_ns.restorer.pairs import (
    ALEXNET_WEIGHTS_FILE,
    LATENT_KEYS,
    PAIRS_FORMAT,
    WORLD_MODEL_KEY,
    build_pair,
    build_target_video,
    encode_pair,
    heatmap_map,
    open_pairs,
    pair_generator,
)
from artifactworld_ns.restorer.presets import load_vae, resolve_preset
from artifactworld_ns.restorer.video_io import read_video, write_video

T, S = 17, 64
F_REF = T + 8  # the official DBA layout appends 8 frames of anchor B


def clean_clip(phase: float, frames: int = T, size: int = S) -> torch.Tensor:
    return wave_clip(frames, size, size, freqs=(6.0, 5.0, 4.0), phases=(phase, phase, phase))


def degrade_left_half(clip: torch.Tensor, seed: int) -> torch.Tensor:
    """Noise on the left half only, so the heatmap must be brighter there."""
    out = clip.clone()
    g = torch.Generator().manual_seed(seed)
    half = clip.shape[2] // 2
    out[:, :, :half] += 0.3 * torch.randn(out[:, :, :half].shape, generator=g)
    return out.clamp(0, 1)


@pytest.fixture(autouse=True)
def single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    gt, art = tmp_path / "gt", tmp_path / "artifact"
    for i in range(2):
        clean = clean_clip(float(i))
        write_video(gt / f"pair{i}.mp4", clean, 24, crf=0)
        write_video(art / f"pair{i}.mp4", degrade_left_half(clean, i), 24, crf=0)
    return {"gt": gt, "art": art, "out": tmp_path / "pairs"}


def make_pairs(folders: dict[str, Path], *extra: str) -> int:
    return cli_make_pairs.main(
        [
            "--gt-dir",
            str(folders["gt"]),
            "--artifact-dir",
            str(folders["art"]),
            "--output-dir",
            str(folders["out"]),
            "--preset",
            "tiny",
            *extra,
        ]
    )


@pytest.mark.slow
def test_make_pairs_writes_references_targets_heatmaps_and_cached_latents(folders, capsys) -> None:
    assert make_pairs(folders, "--heatmap-metric", "l1") == 0
    out = folders["out"]
    assert "2 written, 0 skipped" in capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["preset"] == "tiny" and meta["heatmap_metric"] == "l1"

    assert meta["format"] == PAIRS_FORMAT

    dataset = open_pairs(out, preset="tiny")
    assert [p.stem for p in dataset.files] == ["pair0", "pair1"]
    assert set(dataset.prompts) == {"stage1", "stage2"}  # prompt embeddings cached with the pairs
    latents = dataset[0]
    # the two stages' latents, and the degraded clip's for the world model (restorer/flywheel)
    assert set(latents) == {*LATENT_KEYS, WORLD_MODEL_KEY, "fps"} and latents["fps"] == 24.0
    assert latents["z_ref"].shape == (1, 8, 4, 2, 2)  # 25 x 64 x 64 -> 4 x 2 x 2 latent frames/rows/cols, 8 channels
    assert latents["z_clean"].shape == latents["z_heatmap"].shape == latents["z_ref"].shape
    assert latents[WORLD_MODEL_KEY].shape == latents["z_ref"].shape
    assert not torch.allclose(latents["z_heatmap"], latents["z_clean"])

    clean = clean_clip(0.0)
    ref, _ = read_video(out / "videos" / "pair0" / "reference.mp4")
    target, _ = read_video(out / "videos" / "pair0" / "clean.mp4")
    assert ref.shape[0] == target.shape[0] == F_REF
    assert (ref[0] - clean[0]).abs().mean() < 0.03 and (ref[-9:] - clean[-1]).abs().mean() < 0.03  # DBA anchors
    assert (target[:T] - clean).abs().mean() < 0.03 and (target[T:] - clean[-1]).abs().mean() < 0.03
    heat, _ = read_video(out / "videos" / "pair0" / "heatmap.mp4")
    assert heat.shape[0] == F_REF
    heat = heat.mean(-1)
    anchors = anchor_frame_mask(F_REF)
    assert heat[anchors].max() < 0.03  # frame 0 and the last 9 are black
    middle = heat[~anchors]
    assert middle[:, :, : S // 2].mean() > 0.1 > middle[:, :, S // 2 :].mean() + 0.05  # bright where degraded

    # latents are cached: a second run skips every pair
    assert make_pairs(folders, "--heatmap-metric", "l1") == 0
    assert "0 written, 2 skipped" in capsys.readouterr().out
    # ... and a different metric into the same folder is refused in one sentence
    assert make_pairs(folders, "--heatmap-metric", "ssim") == 2
    err = capsys.readouterr().err
    assert "different heatmap_metric" in err and "Traceback" not in err


def test_bad_pairs_are_listed_with_one_sentence_each(folders, capsys) -> None:
    write_video(folders["gt"] / "short.mp4", clean_clip(3.0), 24, crf=0)
    write_video(folders["art"] / "short.mp4", clean_clip(3.0, frames=T - 4), 24, crf=0)
    write_video(folders["gt"] / "small.mp4", clean_clip(4.0), 24, crf=0)
    write_video(folders["art"] / "small.mp4", clean_clip(4.0, size=32), 24, crf=0)
    write_video(folders["gt"] / "odd.mp4", clean_clip(5.0, frames=12), 24, crf=0)
    write_video(folders["art"] / "odd.mp4", clean_clip(5.0, frames=12), 24, crf=0)
    assert make_pairs(folders, "--heatmap-metric", "ssim") == 2
    out = capsys.readouterr().out
    assert "2 written, 0 skipped (outputs already present), 3 failed" in out
    assert "odd.mp4: Clip length 12 is not 8n+1" in out
    assert (
        "short.mp4: The clean video has 17 frames but the artifact video has 13; a pair must have the same length."
        in out
    )
    assert (
        "small.mp4: The clean video is 64x64 but the artifact video is 32x32; a pair must have the same resolution."
        in out
    )
    assert sorted(p.name for p in (folders["out"] / "latents").iterdir()) == ["pair0.pt", "pair1.pt"]
    assert "labels" not in json.loads((folders["out"] / "meta.json").read_text())  # no labels.jsonl: as before


def test_empty_dataset_and_missing_lpips_weights_fail_in_one_sentence(folders, tmp_path, monkeypatch, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code = cli_make_pairs.main(
        [
            "--gt-dir",
            str(empty),
            "--artifact-dir",
            str(folders["art"]),
            "--output-dir",
            str(folders["out"]),
            "--preset",
            "tiny",
            "--heatmap-metric",
            "l1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "No same-named mp4 pairs" in err and "dataset would be empty" in err

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no AlexNet weights there
    assert make_pairs(folders) == 2  # --heatmap-metric lpips is the default
    err = " ".join(capsys.readouterr().err.split())
    assert ALEXNET_WEIGHTS_FILE in err and str(tmp_path / "torch-home" / "hub" / "checkpoints") in err
    assert "--heatmap-metric l1 or ssim" in err and "Traceback" not in err
    assert not (folders["out"] / "latents").exists()


def test_heatmap_metrics_are_zero_on_identical_frames_and_in_unit_range() -> None:
    clean = clean_clip(0.0, frames=3, size=32)
    noisy = degrade_left_half(clean, 0)
    for metric in ("l1", "ssim"):
        same = heatmap_map(clean, clean, metric)
        assert same.shape == (3, 32, 32) and same.abs().max() < 1e-4
        diff = heatmap_map(noisy, clean, metric)
        assert 0.0 <= diff.min() and diff.max() <= 1.0
        assert diff[:, :, :16].mean() > 3 * diff[:, :, 16:].mean()
    with pytest.raises(RestorerInputError, match="Unknown heatmap metric"):
        heatmap_map(clean, clean, "psnr")  # type: ignore[arg-type]


def test_build_pair_uses_the_official_t_plus_8_layout() -> None:
    clean = clean_clip(0.0, frames=T, size=40)
    artifact = degrade_left_half(clean, 1)
    pair = build_pair(clean, artifact, "l1")  # 40 -> 32 (nearest multiple of 32), every frame kept
    assert pair.clip_frames == T
    assert pair.reference.shape == pair.clean.shape == pair.heatmap.shape == (F_REF, 32, 32, 3)
    clean32 = pair.clean[:T]
    assert torch.equal(pair.reference[0], clean32[0])  # [A] + artifact[1:-1] + [B] x 9
    assert torch.equal(pair.reference[-9:], clean32[-1:].expand(9, 32, 32, 3))
    assert not torch.allclose(pair.reference[1 : T - 1], clean32[1 : T - 1])
    assert torch.equal(pair.clean[T:], clean32[-1:].expand(8, 32, 32, 3))  # target tail: clean last frame
    assert torch.equal(build_target_video(clean32), pair.clean)
    heat = pair.heatmap
    assert torch.equal(heat[..., 0], heat[..., 1]) and torch.equal(heat[..., 0], heat[..., 2])  # 3-channel video
    assert heat[0].abs().max() == 0 and heat[-9:].abs().max() == 0  # black anchor frames (black_tail)
    assert heat[1 : T - 1, :, :16].mean() > 3 * heat[1 : T - 1, :, 16:].mean()

    with pytest.raises(ClipLengthError, match="Clip length 12 is not 8n\\+1"):
        build_pair(clean[:12], artifact[:12], "l1")
    with pytest.raises(RestorerInputError, match="a pair must have the same length"):
        build_pair(clean, artifact[:9], "l1")


def test_pair_latents_are_sampled_reproducibly_per_pair() -> None:
    models = resolve_preset("tiny")
    vae = load_vae(models, "cpu")
    clean = clean_clip(0.0, frames=9, size=32)
    pair = build_pair(clean, degrade_left_half(clean, 1), "l1")
    first = encode_pair(vae, pair, pair_generator("a"), fps=30.0)
    again = encode_pair(vae, pair, pair_generator("a"), fps=30.0)
    other = encode_pair(vae, pair, pair_generator("b"), fps=30.0)
    assert first["fps"] == 30.0 and first["z_ref"].shape == (1, 8, 3, 1, 1)  # 17 reference frames
    assert all(torch.equal(first[k], again[k]) for k in LATENT_KEYS)  # same name and seed: same latents
    assert not torch.equal(first["z_ref"], other["z_ref"])  # posterior samples, not the mode


def test_pairs_in_the_old_layout_are_refused_in_one_sentence(tmp_path) -> None:
    (tmp_path / "latents").mkdir()
    (tmp_path / "meta.json").write_text(json.dumps({"format": "artifactworld-pairs-v1", "preset": "tiny"}))
    with pytest.raises(RestorerInputError, match="rebuild them with aw-make-pairs --overwrite"):
        open_pairs(tmp_path, preset="tiny")


# ---------------------------------------------------------------------- labels.jsonl beside the GT folder


def _record(name: str, types: list[str], source: str = "simulated") -> ClipLabel:
    return ClipLabel(name=name, types=types, source=source, recipe="cracks", params={"strength": 0.5})


def test_labels_beside_the_gt_folder_are_kept_in_the_pairs_meta(folders, capsys) -> None:
    labels_file = folders["gt"].parent / LABELS_FILE  # OUT/labels.jsonl beside OUT/gt, as aw-simulate writes it
    write_labels(labels_file, [_record("pair0", ["Crack", "Floaters"]), _record("elsewhere", ["Dilation"])])
    assert make_pairs(folders, "--heatmap-metric", "l1") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "2 written" in out and f"1 pair(s) have no record in {labels_file}" in out and "unknown: pair1.mp4." in out
    meta = json.loads((folders["out"] / "meta.json").read_text())
    assert meta["labels"] == {
        "file": str(labels_file.resolve()),
        "pairs": {"pair0": {"types": ["Floaters", "Cracks"], "source": "simulated", "recipe": "cracks"}},
    }
    dataset = open_pairs(folders["out"], preset="tiny")
    assert dataset.label(0) == meta["labels"]["pairs"]["pair0"] and dataset.label(1) is None

    # A later run with more records (and the same build settings) keeps the earlier labels and adds the new.
    write_labels(labels_file, [_record("pair1", ["Color Outliers"], source="generated")])
    assert make_pairs(folders, "--heatmap-metric", "l1") == 0
    assert "0 written, 2 skipped" in capsys.readouterr().out
    pairs = json.loads((folders["out"] / "meta.json").read_text())["labels"]["pairs"]
    assert pairs == {
        "pair0": {"types": ["Floaters", "Cracks"], "source": "simulated", "recipe": "cracks"},
        "pair1": {"types": ["Color Outliers"], "source": "generated", "recipe": "cracks"},
    }


def test_a_bad_labels_file_is_one_sentence_before_anything_is_written(folders, capsys) -> None:
    labels_file = folders["gt"] / LABELS_FILE  # inside the GT folder works too
    labels_file.write_text('{"name": "pair0", "types": ["Floaters"]\n')
    assert make_pairs(folders, "--heatmap-metric", "l1") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{labels_file} line 1 is not valid JSON" in err and "Traceback" not in err
    assert not folders["out"].exists()


def test_changed_build_settings_still_refuse_a_labelled_folder(folders, tmp_path) -> None:
    write_labels(folders["gt"].parent / LABELS_FILE, [_record("pair0", ["Needles"])])
    args = cli_make_pairs.MakePairsArgs(
        folders["gt"], folders["art"], folders["out"], heatmap_metric="l1", preset="tiny"
    )
    inputs = cli_make_pairs._check_inputs(args)
    folders["out"].mkdir()
    old = {**inputs.meta, "labels": {"file": "old.jsonl", "pairs": {"gone": {"types": ["Ghosting"]}}}}
    (folders["out"] / "meta.json").write_text(json.dumps(old))
    merged = cli_make_pairs._check_inputs(args).meta["labels"]["pairs"]
    assert set(merged) == {"gone", "pair0"}  # labels are merged, not compared
    args.heatmap_metric = "ssim"
    with pytest.raises(InputError, match="different heatmap_metric"):
        cli_make_pairs._check_inputs(args)
    args.overwrite = True
    assert set(cli_make_pairs._check_inputs(args).meta["labels"]["pairs"]) == {"pair0"}


def test_no_valid_pair_leaves_no_meta_or_prompts_behind(tmp_path: Path, capsys) -> None:
    folders = {"gt": tmp_path / "gt", "art": tmp_path / "art", "out": tmp_path / "pairs"}
    write_video(folders["gt"] / "odd.mp4", clean_clip(5.0, frames=12), 24, crf=0)
    write_video(folders["art"] / "odd.mp4", clean_clip(5.0, frames=12), 24, crf=0)
    assert make_pairs(folders, "--heatmap-metric", "l1") == 2
    assert "odd.mp4: Clip length 12 is not 8n+1" in capsys.readouterr().out
    leftovers = sorted(p.name for p in folders["out"].rglob("*")) if folders["out"].exists() else []
    assert "meta.json" not in leftovers and "prompts.pt" not in leftovers, leftovers
