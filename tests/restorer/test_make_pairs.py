"""aw-make-pairs: DBA references, clean targets, pseudo-GT heatmaps and cached latents from clean/degraded pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from restorer_fixtures import aw_cache  # noqa: F401

from restorer import cli_make_pairs
from restorer.dba import anchor_frame_mask
from restorer.errors import RestorerInputError
from restorer.pairs import ALEXNET_WEIGHTS_FILE, LATENT_KEYS, build_pair, heatmap_map, open_pairs
from restorer.video_io import read_video, write_video

T, S = 17, 64


def clean_clip(phase: float, frames: int = T, size: int = S) -> torch.Tensor:
    t = torch.arange(frames, dtype=torch.float32).view(-1, 1, 1)
    y = torch.linspace(0, 1, size).view(1, -1, 1)
    x = torch.linspace(0, 1, size).view(1, 1, -1)
    r = 0.5 + 0.4 * torch.sin(6.0 * x + 0.3 * t + phase)
    g = 0.5 + 0.4 * torch.cos(5.0 * y - 0.2 * t + phase)
    b = 0.5 + 0.3 * torch.sin(4.0 * (x + y) + phase)
    return torch.stack(torch.broadcast_tensors(r, g, b), dim=-1)


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
        ["--gt-dir", str(folders["gt"]), "--artifact-dir", str(folders["art"]), "--output-dir", str(folders["out"]),
         "--preset", "tiny", *extra]
    )


@pytest.mark.slow
def test_make_pairs_writes_references_targets_heatmaps_and_cached_latents(folders, capsys) -> None:
    assert make_pairs(folders, "--heatmap-metric", "l1") == 0
    out = folders["out"]
    assert "2 written, 0 skipped" in capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["preset"] == "tiny" and meta["heatmap_metric"] == "l1"

    dataset = open_pairs(out, preset="tiny")
    assert [p.stem for p in dataset.files] == ["pair0", "pair1"]
    assert set(dataset.prompts) == {"stage1", "stage2"}  # prompt embeddings cached with the pairs
    latents = dataset[0]
    assert set(latents) == set(LATENT_KEYS)
    assert latents["z_ref"].shape == (1, 8, 3, 2, 2)  # 17 x 64 x 64 -> 3 x 2 x 2 latent frames/rows/cols, 8 channels
    assert not torch.allclose(latents["z_heatmap"], latents["z_clean"])

    clean = clean_clip(0.0)
    ref, _ = read_video(out / "videos" / "pair0" / "reference.mp4")
    assert (ref[0] - clean[0]).abs().mean() < 0.03 and (ref[-8:] - clean[-1]).abs().mean() < 0.03  # DBA anchors
    heat, _ = read_video(out / "videos" / "pair0" / "heatmap.mp4")
    heat = heat.mean(-1)
    anchors = anchor_frame_mask(T)
    assert heat[anchors].max() < 0.03  # anchor frames are clean
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
    assert make_pairs(folders, "--heatmap-metric", "ssim") == 2
    out = capsys.readouterr().out
    assert "2 written, 0 skipped (outputs already present), 2 failed" in out
    assert "short.mp4: The clean video has 17 frames but the artifact video has 13; a pair must have the same length." in out
    assert "small.mp4: The clean video is 64x64 but the artifact video is 32x32; a pair must have the same resolution." in out
    assert sorted(p.name for p in (folders["out"] / "latents").iterdir()) == ["pair0.pt", "pair1.pt"]


def test_empty_dataset_and_missing_lpips_weights_fail_in_one_sentence(folders, tmp_path, monkeypatch, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code = cli_make_pairs.main(["--gt-dir", str(empty), "--artifact-dir", str(folders["art"]),
                                "--output-dir", str(folders["out"]), "--preset", "tiny", "--heatmap-metric", "l1"])
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


def test_build_pair_conforms_to_the_model_grid() -> None:
    clean = clean_clip(0.0, frames=12, size=40)
    pair = build_pair(clean, degrade_left_half(clean, 1), "l1")
    assert pair.reference.shape == (17, 32, 32, 3) and pair.clean.shape == (17, 32, 32, 3)
    assert pair.heatmap.shape == (17, 32, 32)
    with pytest.raises(RestorerInputError, match="needs at least 9"):
        build_pair(clean[:5], clean[:5], "l1")
