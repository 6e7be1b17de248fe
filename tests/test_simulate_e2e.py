"""aw-simulate end to end: two demo scenes -> aw-simulate -> aw-make-pairs -> aw-train-lora (stages 1 and 2);
and sharding: two shards, one killed mid-scene and rerun, equal a single run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import SIMULATE_QUICK

from artifactworld_ns.data_engine import cli_simulate
from artifactworld_ns.restorer import ARTIFACT_TYPES, cli_make_pairs, cli_train_lora, read_labels, read_video

pytestmark = pytest.mark.slow

QUICK = SIMULATE_QUICK


@pytest.fixture(scope="module")
def two_scenes(demo_captures) -> Path:
    return demo_captures


def opens(path: Path) -> None:
    """Read a file the way its consumer would."""
    if path.suffix == ".mp4":
        frames, _ = read_video(path)
        assert frames.shape[0] >= 9, path
    elif path.suffix == ".jsonl":
        for line in path.read_text().splitlines():
            json.loads(line)
    elif path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file

        assert load_file(path), path
    elif path.suffix == ".pt":
        torch.load(path, map_location="cpu", weights_only=False)


def test_simulate_make_pairs_train_lora(simulated_demo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARTIFACTWORLD_CACHE", str(tmp_path / "cache"))
    for var in ("RANK", "WORLD_SIZE", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    out, result = simulated_demo  # aw-simulate of the two demo scenes, run as a user runs it (tests/conftest.py)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    labels = read_labels(out / "labels.jsonl")
    assert len(labels) == 14  # 7 recipes x 2 scenes
    assert {t for label in labels for t in label.types} == set(ARTIFACT_TYPES)
    for label in labels:
        gt, _ = read_video(out / "gt" / f"{label.name}.mp4")
        artifact, _ = read_video(out / "artifact" / f"{label.name}.mp4")
        assert gt.shape == artifact.shape == (9, 36, 48, 3)
        assert len(label.frame_indices) == 9 and 5 < label.metrics["psnr"] < 60 and 0 < label.metrics["ssim"] <= 1
    assert not (out / "staging").exists()

    assert cli_simulate.main(["status", str(out)]) == 0
    assert "14 clips from 2 finished scenes" in " ".join(capsys.readouterr().out.split())

    pairs = tmp_path / "pairs"
    made = cli_make_pairs.main(
        [
            "--gt-dir",
            str(out / "gt"),
            "--artifact-dir",
            str(out / "artifact"),
            "--output-dir",
            str(pairs),
            "--preset",
            "tiny",
            "--heatmap-metric",
            "l1",
        ]
    )
    assert made == 0
    kept = json.loads((pairs / "meta.json").read_text())["labels"]["pairs"]
    assert {name: entry["types"] for name, entry in kept.items()} == {label.name: label.types for label in labels}

    from artifactworld_ns.evaluate import run as evaluate

    report_path = tmp_path / "eval" / "report.json"
    code = evaluate(["video", "--pred", str(out / "artifact"), "--gt", str(out / "gt"), "--out", str(report_path)])
    assert code == 0
    per_type = json.loads(report_path.read_text())["per_type"]
    assert set(per_type) == set(ARTIFACT_TYPES)  # aw-eval video: one row per type from the labels beside gt/
    for stage in (1, 2):
        stage_dir = tmp_path / f"stage{stage}"
        trained = cli_train_lora.main(
            ["--stage", str(stage), "--preset", "tiny", "--data", str(pairs), "--output-dir", str(stage_dir)]
            + ["--steps", "2", "--log-with", "none", "--no-show-progress"]
        )
        assert trained == 0
        assert list(stage_dir.glob("*.safetensors"))
    files = [
        p for root in (out, pairs, tmp_path / "stage1", tmp_path / "stage2") for p in root.rglob("*") if p.is_file()
    ]
    assert len(files) > 40
    for path in files:
        opens(path)


SHARD = ["--types", "Cracks", "Blurring", "--max-num-iterations", "40", *QUICK]


def simulate_command(scenes: Path, out: Path) -> list[str]:
    return [str(scenes), "--output-dir", str(out), *SHARD]


def simulate_in_process(monkeypatch, scenes: Path, out: Path, rank: int | None = None) -> int:
    """aw-simulate in this process (its imports are paid once), as shard ``rank`` of 2 or alone."""
    with monkeypatch.context() as patch:
        for var in ("RANK", "WORLD_SIZE", "SLURM_ARRAY_TASK_ID"):
            patch.delenv(var, raising=False)
        if rank is not None:
            patch.setenv("RANK", str(rank))
            patch.setenv("WORLD_SIZE", "2")
        return cli_simulate.main(simulate_command(scenes, out))


def comparable(out: Path) -> dict:
    """Labels by name and the decoded videos."""
    labels = {label.name: label.to_dict() for label in read_labels(out / "labels.jsonl")}
    videos = {(name, kind): read_video(out / kind / f"{name}.mp4")[0] for name in labels for kind in ("gt", "artifact")}
    return {"labels": labels, "videos": videos, "files": sorted(p.name for p in (out / "gt").glob("*.mp4"))}


def test_two_shards_one_killed_mid_scene_and_rerun_equal_a_single_run(two_scenes, tmp_path, monkeypatch, capsys):
    from conftest import BIN

    monkeypatch.setenv("ARTIFACTWORLD_CACHE", str(tmp_path / "cache"))
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert simulate_in_process(monkeypatch, two_scenes, single) == 0
    assert simulate_in_process(monkeypatch, two_scenes, sharded, rank=0) == 0
    assert [label.name.split("__")[0] for label in read_labels(sharded / "labels.jsonl")] == ["garden", "garden"]

    # Shard 1 (kitchen), a process of its own, is killed once its first clip is staged: mid-scene.
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "SLURM_ARRAY_TASK_ID")}
    process = subprocess.Popen(
        [str(BIN / "aw-simulate"), *simulate_command(two_scenes, sharded)],
        env={**env, "RANK": "1", "WORLD_SIZE": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    staged = sharded / "staging" / "kitchen" / "clips" / "artifact"
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline and not list(staged.glob("*.mp4")):
        time.sleep(0.1)
    assert process.poll() is None, "shard 1 finished before it could be killed mid-scene"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(staged.glob("*.mp4")), "killed after a clip was made"
    assert not list((sharded / "gt").glob("kitchen__*")) and not list((sharded / "artifact").glob("kitchen__*"))
    assert not (sharded / "scenes" / "kitchen.json").exists()

    assert simulate_in_process(monkeypatch, two_scenes, sharded, rank=1) == 0
    capsys.readouterr()
    assert cli_simulate.main(["status", str(sharded)]) == 0
    assert "4 clips from 2 finished scenes" in " ".join(capsys.readouterr().out.split())
    assert not (sharded / "staging").exists()

    expected, got = comparable(single), comparable(sharded)
    assert got["files"] == expected["files"] and len(got["files"]) == 4  # no duplicate, nothing partial
    assert got["labels"].keys() == expected["labels"].keys()
    for name, label in expected["labels"].items():
        other = got["labels"][name]
        assert {k: v for k, v in other.items() if k != "metrics"} == {k: v for k, v in label.items() if k != "metrics"}
        assert other["metrics"] == pytest.approx(label["metrics"], abs=1e-6)
    for key, frames in expected["videos"].items():
        assert torch.allclose(got["videos"][key], frames, atol=1.5 / 255), key

    capsys.readouterr()
    assert simulate_in_process(monkeypatch, two_scenes, sharded) == 0  # finished scenes are skipped
    assert "0 written, 2 skipped" in " ".join(capsys.readouterr().err.split())
