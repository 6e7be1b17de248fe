"""Bad input to ns-train artifactworld(-tiny) and aw-demo: one sentence, exit status 2, no traceback.

Most cases run nerfstudio's own ``ns-train`` main function in-process on a method config (the path
``ns-train`` takes after parsing its flags); two run the installed commands as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from artifactworld_ns.method_configs.artifactworld import artifactworld_config, artifactworld_tiny_config


def ns_train(config, capsys) -> str:
    """Run ns-train's main on ``config``; return what it printed, asserting exit status 2 and no traceback."""
    from nerfstudio.scripts.train import main

    with pytest.raises(SystemExit) as stopped:
        main(config)
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    text = " ".join((captured.out + captured.err).split())
    assert "Traceback" not in text and "error:" in text
    return text


def tiny(data, out: Path, **options):
    """The tiny method on ``data``; ``options`` set ``--pipeline.*`` round options, else ``--pipeline.datamanager.*`` ones."""
    config = artifactworld_tiny_config()
    config.data = None
    config.pipeline.datamanager.data = data
    config.output_dir = out
    config.vis = "tensorboard"
    config.max_num_iterations = 4
    config.pipeline.restore_steps = ()
    for key, value in options.items():
        setattr(config.pipeline if hasattr(config.pipeline, key) else config.pipeline.datamanager, key, value)
    return config


@pytest.fixture
def scene_copy(small_demo_scene, tmp_path) -> Path:
    target = tmp_path / "scene"
    shutil.copytree(small_demo_scene, target)
    return target


def edit_transforms(scene: Path, change) -> None:
    path = scene / "transforms.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def test_missing_data_folder(tmp_path, capsys):
    text = ns_train(tiny(tmp_path / "nowhere", tmp_path / "out"), capsys)
    assert f"The scene {tmp_path / 'nowhere'} does not exist" in text


def test_folder_without_transforms(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    text = ns_train(tiny(tmp_path / "empty", tmp_path / "out"), capsys)
    assert "has no transforms.json" in text and "ns-process-data" in text


def test_corrupt_transforms(scene_copy, tmp_path, capsys):
    (scene_copy / "transforms.json").write_text('{"frames": [ {"file_path": ')
    text = ns_train(tiny(scene_copy, tmp_path / "out"), capsys)
    assert "is not valid JSON at line 1" in text


def test_transforms_without_frames(scene_copy, tmp_path, capsys):
    edit_transforms(scene_copy, lambda meta: meta.update(frames=[]))
    text = ns_train(tiny(scene_copy, tmp_path / "out"), capsys)
    assert "lists no frames" in text


def test_missing_image_files(scene_copy, tmp_path, capsys):
    for name in ("frame_00003.png", "frame_00007.png"):
        (scene_copy / "images" / name).unlink()
    text = ns_train(tiny(scene_copy, tmp_path / "out"), capsys)
    assert "2 of the 12 images listed" in text and "frame_00003.png" in text


def test_frame_without_pose(scene_copy, tmp_path, capsys):
    edit_transforms(scene_copy, lambda meta: meta["frames"][5].pop("transform_matrix"))
    text = ns_train(tiny(scene_copy, tmp_path / "out"), capsys)
    assert "frame 5 (1 in all) lacks" in text


def test_unreadable_image_is_one_sentence(scene_copy, tmp_path, capsys):
    (scene_copy / "images" / "frame_00002.png").write_bytes(b"not a png")
    text = ns_train(tiny(scene_copy, tmp_path / "out"), capsys)
    assert "An image of the train views cannot be read" in text and "frame_00002.png" in text


def test_load_dir_that_is_not_a_folder(small_demo_scene, tmp_path, capsys):
    config = tiny(small_demo_scene, tmp_path / "out")
    config.load_dir = tmp_path / "missing" / "nerfstudio_models"
    text = ns_train(config, capsys)
    assert "is not a folder" in text and "nerfstudio_models" in text


def test_load_dir_without_checkpoint(small_demo_scene, tmp_path, capsys):
    config = tiny(small_demo_scene, tmp_path / "out")
    config.load_dir = tmp_path / "models"
    config.load_dir.mkdir()
    text = ns_train(config, capsys)
    assert "holds no step-*.ckpt checkpoint" in text


def test_load_step_not_in_the_folder(small_demo_scene, tmp_path, capsys):
    config = tiny(small_demo_scene, tmp_path / "out")
    config.load_dir = tmp_path / "models"
    config.load_dir.mkdir()
    (config.load_dir / "step-000000099.ckpt").write_bytes(b"")
    config.load_step = 50
    text = ns_train(config, capsys)
    assert "--load-step 50 is not in" in text and "99" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="this case is about a machine without CUDA")
def test_full_method_without_cuda_names_the_cpu_method(small_demo_scene, tmp_path, capsys):
    config = artifactworld_config()
    config.pipeline.datamanager.data = small_demo_scene
    config.output_dir = tmp_path / "out"
    config.vis = "tensorboard"
    text = ns_train(config, capsys)
    assert "needs a CUDA GPU" in text and "artifactworld-tiny --machine.device-type cpu" in text


def test_read_only_output_folder(small_demo_scene, tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    # CI runs as root, whom permission bits do not stop: report the folder as the kernel would to a user
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == locked else real_access(path, mode))
    try:
        text = ns_train(tiny(small_demo_scene, locked / "runs"), capsys)
    finally:
        locked.chmod(0o755)
    assert f"The output folder {locked} is not writable" in text


def test_output_path_under_a_file(small_demo_scene, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    text = ns_train(tiny(small_demo_scene, tmp_path / "a_file" / "runs"), capsys)
    assert "which is a file" in text


def test_full_preset_without_weights_fails_before_training(small_demo_scene, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ARTIFACTWORLD_CACHE", str(tmp_path / "cache"))
    config = tiny(small_demo_scene, tmp_path / "out", restorer_preset="full")
    config.pipeline.restore_steps = None  # the default schedule: rounds will run
    text = ns_train(config, capsys)
    assert "hf download buaadwxl/ArtifactWorld" in text and "restore-steps with no steps" in text
    assert not list((tmp_path / "out").rglob("step-*.ckpt")), "nothing was trained"


def test_oracle_on_a_scene_without_ground_truth(scene_copy, tmp_path, capsys):
    (scene_copy / "ground_truth_gaussians.pt").unlink()
    config = tiny(scene_copy, tmp_path / "out", restorer_preset="oracle", train_view_ratio=0.34)
    text = ns_train(config, capsys)
    assert "The oracle restorer needs the scene's ground truth" in text


def test_installed_ns_train_on_a_missing_folder(tmp_path, run_cli):
    result = run_cli(
        "ns-train",
        "artifactworld-tiny",
        "--data",
        str(tmp_path / "nowhere"),
        "--output-dir",
        str(tmp_path / "out"),
        "--vis",
        "tensorboard",
    )
    assert result.returncode == 2
    text = " ".join((result.stdout + result.stderr).split())
    assert "Traceback" not in text and "does not exist" in text


def test_aw_demo_rejects_a_round_outside_the_run(tmp_path, run_cli):
    result = run_cli(
        "aw-demo", "--scene-dir", str(tmp_path / "scene"), "--max-num-iterations", "50", "--restore-step", "80"
    )
    assert result.returncode == 2
    text = " ".join(result.stderr.split())
    assert "--restore-step 80 is outside the run's 50 iterations" in text and "Traceback" not in text


def test_aw_demo_round_scales_to_the_iterations():
    from artifactworld_ns.demo import DemoArgs, round_step

    assert round_step(DemoArgs(max_num_iterations=50)) == 25
    assert round_step(DemoArgs()) == 150


def test_bundled_ffmpeg_is_found_without_the_venv_on_path(tmp_path, monkeypatch):
    import subprocess

    from artifactworld_ns.restorer.video_io import environment_with_ffmpeg

    monkeypatch.setenv("ARTIFACTWORLD_CACHE", str(tmp_path / "cache"))
    env = environment_with_ffmpeg({"PATH": str(tmp_path / "empty-bin")})
    found = shutil.which("ffmpeg", path=env["PATH"])
    assert found and Path(found).parent == tmp_path / "cache" / "bin"
    assert subprocess.run([found, "-version"], capture_output=True).returncode == 0


def test_evaluating_a_full_preset_run_needs_no_weights(small_demo_scene, tmp_path, monkeypatch):
    """ns-eval, ns-render and the viewer load a run's pipeline in test mode: no weights check there."""
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    from artifactworld_ns.datamanager import ArtifactWorldDataManagerConfig
    from artifactworld_ns.pipeline import ArtifactWorldPipelineConfig

    monkeypatch.setenv("ARTIFACTWORLD_CACHE", str(tmp_path / "cache"))
    config = ArtifactWorldPipelineConfig(
        datamanager=ArtifactWorldDataManagerConfig(
            dataparser=NerfstudioDataParserConfig(data=small_demo_scene), train_view_ratio=0.5
        )
    )
    assert config.restorer_preset == "full"
    pipeline = config.setup(device="cpu", test_mode="test")
    assert len(pipeline.datamanager.train_dataset) == 6


# ---------------------------------------------------------------------- poses, image sizes, saved paths (issue 19)


def set_pose_value(scene: Path, frame: int, value: float) -> None:
    def change(meta):
        meta["frames"][frame]["transform_matrix"][0][3] = value

    edit_transforms(scene, change)


def test_nan_pose_is_refused_naming_the_frame(scene_copy, tmp_path, run_cli):
    """One NaN in one pose spread into every Gaussian and ns-train exited 0; now it is refused before training."""
    set_pose_value(scene_copy, 3, float("nan"))  # json writes it as NaN, which Python's reader accepts
    assert "NaN" in (scene_copy / "transforms.json").read_text()
    out = tmp_path / "out"
    result = run_cli(
        "ns-train",
        "artifactworld-tiny",
        "--data",
        str(scene_copy),
        "--output-dir",
        str(out),
        "--vis",
        "tensorboard",
        "--max-num-iterations",
        "4",
    )
    text = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, text[-2000:]
    assert "Traceback" not in text and text.count("error:") == 1
    assert f"frame 3 ({scene_copy / 'images' / 'frame_00003.png'})" in text and "not a finite number" in text
    assert "ArtifactWorldTrainerConfig(" not in text, "refused before nerfstudio prints the whole config"
    assert not out.exists(), "a refused run leaves no run folder"


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda meta: meta.update(fl_x=float("inf")), "gives the cameras fl_x = inf"),
        (lambda meta: meta["frames"][7].update(cy=None), "frame 7 ("),
        (lambda meta: meta["frames"][2].update(transform_matrix=[[1, 0, 0]]), "is not a 3x4 or 4x4 matrix"),
        (lambda meta: meta["frames"][5]["transform_matrix"][2].__setitem__(1, float("-inf")), "frame 5 ("),
    ],
    ids=["infinite-focal", "null-principal-point-of-a-frame", "malformed-pose", "infinite-pose"],
)
def test_non_finite_cameras_are_refused(scene_copy, tmp_path, capsys, change, expected):
    edit_transforms(scene_copy, change)
    text = ns_train(tiny(scene_copy, tmp_path / "out"), capsys)
    assert expected in text and str(scene_copy / "transforms.json") in text
    assert not (tmp_path / "out").exists()


def test_image_of_another_size_is_refused_naming_the_file(scene_copy, tmp_path, capsys):
    """nerfstudio asserts only when it loads the image (an eval view: at the first eval), without its name."""
    from PIL import Image

    image = scene_copy / "images" / "frame_00004.png"
    Image.open(image).resize((80, 60)).save(image)
    text = ns_train(tiny(scene_copy, tmp_path / "out", train_view_ratio=0.5), capsys)
    assert f"The image {image} is 80x60 pixels" in text and "gives its camera 96x72" in text
    assert not (tmp_path / "out").exists()


def test_bad_option_is_refused_before_the_config_dump_and_run_folder(small_demo_scene, tmp_path, capsys):
    text = ns_train(tiny(small_demo_scene, tmp_path / "out", train_view_ratio=0.05), capsys)
    assert "train-view-ratio 0.05 keeps 1 of 12 views" in text
    assert "ArtifactWorldTrainerConfig(" not in text
    assert not (tmp_path / "out").exists()
    text = ns_train(tiny(small_demo_scene, tmp_path / "out", generated_view_fraction=2.0), capsys)
    assert "generated-view-fraction 2.0 is not a fraction" in text and "ArtifactWorldTrainerConfig(" not in text
    assert not (tmp_path / "out").exists()


def test_refusal_during_setup_removes_its_run_folder(scene_copy, tmp_path, capsys):
    """What only the data loading finds (here an unreadable image) still leaves no run folder behind."""
    (scene_copy / "images" / "frame_00002.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    text = ns_train(tiny(scene_copy, out), capsys)
    assert "frame_00002.png" in text
    assert not list(out.rglob("config.yml")), "the refused run's folder was removed"


def test_saved_config_names_the_scene_by_absolute_path(small_demo_scene, tmp_path, monkeypatch):
    """ns-train saves config.yml with absolute paths, so ns-eval/aw-render load the run from any folder."""
    import yaml

    monkeypatch.chdir(tmp_path)
    shutil.copytree(small_demo_scene, tmp_path / "scene")
    config = tiny(Path("scene"), Path("runs"), train_view_ratio=0.5)
    config.set_timestamp()
    config.print_to_terminal()  # what ns-train's main does before it trains
    config.save_config()
    saved = next((tmp_path / "runs").rglob("config.yml"))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = yaml.load(saved.read_text(), Loader=yaml.Loader)
    assert loaded.pipeline.datamanager.data == tmp_path / "scene"
    assert loaded.pipeline.datamanager.dataparser.data == tmp_path / "scene"
    assert loaded.get_checkpoint_dir() == saved.parent / "nerfstudio_models"
    pipeline = loaded.pipeline.setup(device="cpu", test_mode="test")  # as ns-eval does
    assert len(pipeline.datamanager.train_dataset) == 6


def test_old_relative_config_from_another_folder_is_one_sentence(small_demo_scene, tmp_path, monkeypatch, capsys):
    """A run saved with a relative scene path (before the fix), loaded from another folder."""
    monkeypatch.chdir(tmp_path)
    config = tiny(Path("scene"), Path("runs"), train_view_ratio=0.5)
    with pytest.raises(SystemExit) as stopped:
        config.pipeline.setup(device="cpu", test_mode="test")
    assert stopped.value.code == 2
    text = " ".join(capsys.readouterr().out.split())
    assert f"The scene scene does not exist as seen from {tmp_path}" in text and "Traceback" not in text


def test_demo_summary_prints_absolute_commands_on_one_line(tmp_path):
    """The demo's closing commands are absolute and never wrapped inside a command, even on a narrow terminal."""
    import io

    from rich.console import Console

    from artifactworld_ns.demo import print_summary, summary

    run_dir = tmp_path / "outputs" / "demo" / "artifactworld-tiny" / "2024-01-01_000000"
    lines = summary(run_dir, 1.5)
    commands = [line.strip() for line in lines if line.startswith("  ")]
    assert len(commands) == 3
    for command in commands:
        assert str(run_dir) in command and Path(command.split()[-1]).is_absolute()
    buffer = io.StringIO()
    print_summary(lines, Console(file=buffer, width=40))
    printed = buffer.getvalue().splitlines()
    for command in commands:
        assert command in [line.strip() for line in printed], "a command was wrapped"
