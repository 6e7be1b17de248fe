"""The generative data flywheel end to end (paper Sec. 3.3), a few steps each on the tiny preset:
demo scenes -> aw-simulate -> aw-make-pairs -> aw-train-lora --stage world-model -> aw-degrade -> aw-gate
-> aw-make-pairs (mixed sources) -> aw-train-lora --stage 2 (sources weighted); every file opens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_simulate_e2e import opens

from artifactworld_ns.restorer import cli_make_pairs, cli_train_lora, read_labels, read_video
from artifactworld_ns.restorer.flywheel import cli_degrade, cli_gate
from artifactworld_ns.restorer.flywheel.combinatorics import prompt_types

pytestmark = pytest.mark.slow

TRAIN = ["--preset", "tiny", "--steps", "2", "--log-with", "none", "--no-show-progress"]


def make_pairs(output: Path, *sources: Path) -> int:
    args = ["--sources", *map(str, sources), "--output-dir", str(output), "--preset", "tiny", "--heatmap-metric", "l1"]
    return cli_make_pairs.main(args)


def test_simulate_world_model_degrade_gate_mix_train(simulated_demo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARTIFACTWORLD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "250")
    for var in ("RANK", "WORLD_SIZE", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    simulated, result = simulated_demo
    assert result.returncode == 0, result.stderr[-3000:]

    # 1. the world model trains on the simulated pairs (their labels name the prompt's types)
    assert make_pairs(tmp_path / "pairs_sim", simulated) == 0
    world = tmp_path / "world"
    assert (
        cli_train_lora.main(
            ["--stage", "world-model", "--data", str(tmp_path / "pairs_sim"), "--output-dir", str(world), *TRAIN]
        )
        == 0
    )
    adapter = world / "world_model_lora.safetensors"
    info = json.loads((world / "world_model_lora.json").read_text())
    assert info["adapter"] == "world_model" and info["global_step"] == 2

    # 2. aw-degrade: clean footage (three GT clips of the simulation stand in) -> generated clips, resumable
    clean = tmp_path / "clean"
    clean.mkdir()
    for name in sorted(p.name for p in (simulated / "gt").glob("*.mp4"))[:3]:
        shutil.copy(simulated / "gt" / name, clean / name)
    generated = tmp_path / "generated"
    degrade = [
        str(clean),
        "--output-dir",
        str(generated),
        "--preset",
        "tiny",
        "--adapter",
        str(adapter),
        "--combinations",
        "2",
        "--seed",
        "5",
    ]
    assert cli_degrade.main(degrade) == 0
    labels = read_labels(generated / "labels.jsonl")
    assert len(labels) == 6 and {label.source for label in labels} == {"generated"}
    for label in labels:
        assert sorted(prompt_types(label.params["prompt"])) == sorted(label.types) and 1 <= len(label.types) <= 9
        gt, _ = read_video(generated / "gt" / f"{label.name}.mp4")
        artifact, _ = read_video(generated / "artifact" / f"{label.name}.mp4")
        assert gt.shape == artifact.shape and gt.shape[0] == 9
    capsys.readouterr()
    assert cli_degrade.main(degrade) == 0
    assert "0 written, 6 skipped" in " ".join(capsys.readouterr().out.split())

    # 3. aw-gate from the labeler's answers (official format): the first three confirmed, the rest not
    entries = [
        {
            "video": f"/gpu/generated/artifact/{label.name}.mp4",
            "artifacts": {
                t: {"prediction": "Yes", "prob_yes": p, "prob_no": 1 - p}
                for t in label.types
                for p in [0.9 if i < 3 else 0.2]
            },
        }
        for i, label in enumerate(labels)
    ]
    (tmp_path / "q_align.json").write_text(json.dumps({"total_videos": 6, "successful": 6, "results": entries}))
    assert cli_gate.main([str(generated), "--labels-json", str(tmp_path / "q_align.json")]) == 0
    kept = sorted(r["name"] for r in map(json.loads, (generated / "gate.jsonl").read_text().splitlines()) if r["kept"])
    assert kept == sorted(label.name for label in labels[:3])

    # 4. mixed pairs: 14 simulated + the 3 kept generated, each with its source and types, counts printed
    capsys.readouterr()
    assert make_pairs(tmp_path / "mixed", simulated, generated) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "pairs per source: generated 3, simulated 14." in said and "pairs per type: Floaters" in said
    meta = json.loads((tmp_path / "mixed" / "meta.json").read_text())["labels"]["pairs"]
    assert sorted(n for n, e in meta.items() if e["source"] == "generated") == kept and len(meta) == 17

    # 5. the restorer trains on the mixture, sources drawn by weight
    stage2 = tmp_path / "stage2"
    assert (
        cli_train_lora.main(
            [
                "--stage",
                "2",
                "--data",
                str(tmp_path / "mixed"),
                "--output-dir",
                str(stage2),
                *TRAIN,
                "--source-weights",
                "simulated",
                "1",
                "generated",
                "3",
            ]
        )
        == 0
    )

    files = [p for root in (world, generated, tmp_path / "mixed", stage2) for p in root.rglob("*") if p.is_file()]
    assert len(files) > 40
    for path in files:
        opens(path)
