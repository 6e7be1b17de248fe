"""aw-simulate without training: bad input (one sentence, nothing written), the dry-run plan, clip windows,
recipe plans, scene lists, shard indices and the status report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from artifactworld_ns.data_engine import cli_simulate, records
from artifactworld_ns.data_engine.clips import sparse_split
from artifactworld_ns.data_engine.recipes import RecipeConfig, plan_scene
from artifactworld_ns.data_engine.scenes import SceneError, find_scenes, scene_names
from artifactworld_ns.data_engine.sharding import shard_index
from artifactworld_ns.restorer import ClipLabel, InputError, read_labels

FAST = ["--clip-frames", "9", "--frame-step", "4", "--checkpoint-range", "20", "60", "--device", "cpu"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, Path]:
    """A 24-view scene (two clip windows at --frame-step 4 --clip-frames 9) and an 8-view one (too short)."""
    from artifactworld_ns.demo_scene import DemoSceneArgs, write_demo_scene

    root = tmp_path_factory.mktemp("scenes")
    return {
        "long": write_demo_scene(DemoSceneArgs(root / "all" / "long", num_views=24, width=32, height=24)),
        "short": write_demo_scene(DemoSceneArgs(root / "all" / "short", num_views=8, width=32, height=24)),
    }


def simulate(capsys, *argv) -> tuple[int, str, str]:
    code = cli_simulate.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error(err: str) -> str:
    text = " ".join(err.split())
    assert text.startswith("error:") and text.count("error:") == 1, err
    assert "Traceback" not in err
    return text


def broken_copy(scene: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(scene, copy)
    meta = json.loads((copy / "transforms.json").read_text())
    change(copy, meta)
    (copy / "transforms.json").write_text(json.dumps(meta))
    return copy


def set_nan_pose(folder: Path, meta: dict) -> None:
    meta["frames"][5]["transform_matrix"][0][3] = float("nan")


def remove_image(folder: Path, meta: dict) -> None:
    (folder / meta["frames"][3]["file_path"]).unlink()


@pytest.mark.parametrize(
    "case, expected",
    [
        ("short", "too short for one clip"),
        ("clip_frames", "--clip-frames 10 is not 8n+1"),
        ("types", "Unknown artifact type in --types 'Sparkles'"),
        ("nan", "is not a finite 4x4 matrix"),
        ("missing", "images of"),
        ("output_file", "lies under the file"),
    ],
)
def test_bad_input_is_one_sentence_and_writes_nothing(case, expected, scenes, tmp_path, capsys):
    out = tmp_path / "out"
    scene, extra = scenes["long"], []
    if case == "short":
        scene = scenes["short"]
    elif case == "clip_frames":
        extra = ["--clip-frames", "10"]
    elif case == "types":
        extra = ["--types", "Floaters,Sparkles"]
    elif case == "nan":
        scene = broken_copy(scenes["long"], tmp_path, set_nan_pose)
    elif case == "missing":
        scene = broken_copy(scenes["long"], tmp_path, remove_image)
    elif case == "output_file":
        out.write_text("not a folder")
    code, _, err = simulate(capsys, scene, "--output-dir", out, *FAST, *extra)
    assert code == 2
    assert expected in one_error(err)
    if case == "output_file":
        assert out.read_text() == "not a folder"
    else:
        assert not out.exists(), "nothing partial is left behind"


def test_dry_run_prints_the_whole_plan_and_writes_nothing(scenes, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = simulate(capsys, scenes["long"].parent, "--output-dir", out, *FAST, "--dry-run")
    assert code == 0 and not out.exists()
    text = " ".join(stdout.split())
    assert "trajectory filter: kept 24 of 24 frames" in text
    assert "6 training frames (every 4th kept frame), 18 held out, 2 clip windows of 9 frames" in text
    for run in ("sparse run", "dilation run", "ghosting run"):
        assert f"training: {run}" in text
    for recipe in ("late_00", "early_00", "cracks_00", "color_00", "aliasing_00", "dilation_00", "ghosting_00"):
        assert f"clip long__{recipe}" in text
    assert "Plan: 1 scenes, 7 clips of 9 frames, 3 training runs" in text
    assert "short is too short for one clip" in " ".join(err.split())  # the other scene, skipped with a sentence


def test_types_pick_the_recipes_and_their_trainings(scenes, tmp_path, capsys):
    code, stdout, _ = simulate(
        capsys, scenes["long"], "--output-dir", tmp_path / "o", *FAST, "--types", "crack", "color-outliers", "--dry-run"
    )
    assert code == 0
    text = " ".join(stdout.split())
    assert "clip long__cracks_00: Cracks" in text and "clip long__color_00: Color Outliers" in text
    assert "dilation" not in text and "Blurring" not in text
    assert "2 clips of 9 frames, 1 training runs" in text


def test_clip_windows_are_held_out_and_never_span_a_pruned_frame():
    kept = np.ones(40, bool)
    kept[[17, 30]] = False
    split = sparse_split(kept, 4, 9)
    kept_indices = np.flatnonzero(kept).tolist()
    assert split.train == kept_indices[::4]
    assert split.windows, "the capture has room for a clip"
    for window in split.windows:
        assert len(window) == 9 and not set(window) & set(split.train)
        assert all(kept[window[0] : window[-1] + 1]), "a clip spans a pruned frame"
    assert sparse_split(np.ones(8, bool), 4, 9).windows == []


def test_plans_are_seeded_by_the_scene_and_repeat(scenes):
    split = sparse_split(np.ones(40, bool), 4, 9)
    config = RecipeConfig(checkpoint_range=(1500, 12000), clips_per_recipe=2)
    types = ["Floaters", "Blurring", "Cracks"]
    first, again = plan_scene("garden", split, types, config), plan_scene("garden", split, types, config)
    assert [(j.name, j.checkpoint, j.frames) for j in first.jobs] == [
        (j.name, j.checkpoint, j.frames) for j in again.jobs
    ]
    boundary = 1500 + round(0.25 * 10500)
    for job in first.jobs:
        assert 1500 <= job.checkpoint <= 12000
        if job.recipe.phase == "early":
            assert job.checkpoint < boundary
        if job.recipe.phase == "late":
            assert job.checkpoint >= boundary
    assert [run.name for run in first.runs] == ["sparse"]  # cracks reuse the sparse run
    assert first.runs[0].iterations == max(job.checkpoint for job in first.jobs)
    other = plan_scene("kitchen", split, types, config)
    assert [j.checkpoint for j in other.jobs] != [j.checkpoint for j in first.jobs]


def test_scene_lists_and_unique_names(scenes, tmp_path):
    listing = tmp_path / "scenes.txt"
    listing.write_text(f"# my captures\n{scenes['long']}\n\n{scenes['short']}  # short one\n")
    assert find_scenes(listing) == sorted([scenes["long"].resolve(), scenes["short"].resolve()])
    assert find_scenes(scenes["long"].parent) == find_scenes(listing)
    with pytest.raises(SceneError, match="holds no transforms.json"):
        find_scenes(tmp_path)
    names = scene_names([Path("/a/garden"), Path("/b/garden"), Path("/c/room")])
    assert len(set(names.values())) == 3 and names[Path("/c/room")] == "room"


def test_shard_index_from_slurm_arrays_and_torchrun():
    assert shard_index({}) == (0, 1)
    assert shard_index({"RANK": "1", "WORLD_SIZE": "2"}) == (1, 2)
    slurm = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "3", "SLURM_ARRAY_TASK_COUNT": "5"}
    assert shard_index(slurm) == (1, 5)
    assert shard_index({**slurm, "RANK": "1", "WORLD_SIZE": "4"}) == (5, 20)
    with pytest.raises(InputError, match="SLURM_ARRAY_TASK_COUNT"):
        shard_index({"SLURM_ARRAY_TASK_ID": "0"})
    with pytest.raises(InputError, match="not one of the 5 tasks"):
        shard_index({**slurm, "SLURM_ARRAY_TASK_ID": "9"})


def label(name: str, types: list[str]) -> ClipLabel:
    return ClipLabel(name=name, types=types, source="simulated", recipe="cracks", params={}, metrics={"psnr": 20.0})


def test_status_merges_finished_scenes_and_reports_failures(tmp_path, capsys):
    from artifactworld_ns.data_engine.simulate import SceneResult

    for name, types in (("a", ["Cracks"]), ("b", ["Floaters", "Needles"])):
        clip = label(f"{name}__0", types)
        for kind in ("gt", "artifact"):
            (tmp_path / kind).mkdir(exist_ok=True)
            (tmp_path / kind / f"{clip.name}.mp4").write_bytes(b"")
        result = SceneResult(name, [clip], {"training": 2.0, "total": 3.0}, 1, 100)
        records.write_done(tmp_path, Path(f"/data/{name}"), result)
    records.write_failed(tmp_path, Path("/data/c"), "c", "unexpected RuntimeError: boom", 1.0)
    (tmp_path / "staging" / "d").mkdir(parents=True)
    code = cli_simulate.main(["status", str(tmp_path)])
    text = " ".join(capsys.readouterr().out.split())
    assert code == 2  # a failed scene
    assert "2 clips from 2 finished scenes; 0 skipped, 1 failed" in text
    assert "| Cracks | 1 |" in text and "| Needles | 1 |" in text and "| Ghosting | 0 |" in text
    assert "c (failed): unexpected RuntimeError: boom" in text and "Unfinished" in text and "d." in text
    assert [r.name for r in read_labels(tmp_path / "labels.jsonl")] == ["a__0", "b__0"]
    assert records.is_done(tmp_path, "a") and not records.is_done(tmp_path, "c")
    (tmp_path / "gt" / "a__0.mp4").unlink()
    assert not records.is_done(tmp_path, "a"), "a scene whose clip is gone is redone"


def test_status_of_a_folder_without_records_is_one_sentence(tmp_path, capsys):
    code = cli_simulate.main(["status", str(tmp_path)])
    assert code == 2 and "holds no aw-simulate records" in one_error(capsys.readouterr().err)


def test_failing_scenes_are_reported_at_the_end_and_do_not_stop_the_others(scenes, tmp_path, capsys, monkeypatch):
    root = tmp_path / "captures"
    shutil.copytree(scenes["long"], root / "good")
    shutil.copytree(scenes["long"], root / "boom")
    broken = shutil.copytree(scenes["long"], root / "corrupt")
    meta = json.loads((broken / "transforms.json").read_text())
    (broken / meta["frames"][2]["file_path"]).write_bytes(b"not an image")
    real = cli_simulate.simulate_scene

    def simulate_or_fail(scene, *args, **kwargs):
        if scene.plan.name == "boom":
            raise RuntimeError("the GPU fell over")
        return real(scene, *args, **kwargs)

    monkeypatch.setattr(cli_simulate, "simulate_scene", simulate_or_fail)
    out = tmp_path / "out"
    quick = [
        "--checkpoint-range",
        "2",
        "4",
        "--types",
        "Cracks",
        "--model.warmup-length",
        "1000000",
        "--model.num-downscales",
        "0",
    ]
    code, _, err = simulate(capsys, root, "--output-dir", out, *FAST, *quick)
    text = " ".join(err.split())
    assert code == 1  # an unexpected failure outranks bad input
    assert "boom: unexpected RuntimeError: the GPU fell over" in text
    assert "corrupt: The image" in text and "cannot be read" in text
    assert [label.name for label in read_labels(out / "labels.jsonl")] == ["good__cracks_00"]
    assert (out / "gt" / "good__cracks_00.mp4").is_file() and (out / "artifact" / "good__cracks_00.mp4").is_file()
    statuses = {r["name"]: r["status"] for r in records.read_records(out)}
    assert statuses == {"good": "done", "boom": "failed", "corrupt": "failed"}
