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


# ---------------------------------------------------------------------- aw-restore (issue 19, stumbles 2, 3, 4, 6)


class EchoRestorer:
    """Stands in for the restorer: the heatmap is black, the restored clip is the reference itself; records
    what the model was given."""

    def __init__(self) -> None:
        self.references: list = []

    def predict_heatmap(self, reference):
        self.references.append(reference)
        return torch.zeros_like(reference)

    def restore_reference(self, reference, heatmap=None, opacity=None):
        from types import SimpleNamespace

        self.references.append(reference)
        return SimpleNamespace(frames=reference.clone())


@pytest.fixture
def echo_restorer(monkeypatch):
    from artifactworld_ns.restorer import cli_restore

    echo = EchoRestorer()
    monkeypatch.setattr(cli_restore, "load_restorer", lambda args, progress=None: echo)
    monkeypatch.setenv("COLUMNS", "250")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    return echo


def aw_restore(inputs: Path, out: Path, *extra: str) -> int:
    from artifactworld_ns.restorer import cli_restore

    return cli_restore.main(["--input-folder", str(inputs), "--output-folder", str(out), "--preset", "tiny", *extra])


def moving_clip(frames: int, phase: float = 0.0) -> torch.Tensor:
    from conftest import wave_clip

    return wave_clip(frames, 32, 48, speeds=(0.4, 0.3, 0.2), phases=(phase, phase, phase))


def test_aw_restore_restores_a_plain_clip_whole(tmp_path, echo_restorer, capsys):
    """A plain video is not taken for an aw-prepare reference (that cost it 8 frames): its own first and last
    frames become the anchors, and the sample keeps every frame; a real reference keeps the official layout."""
    from artifactworld_ns.restorer import build_reference_video, read_video, write_video

    inputs = tmp_path / "in"
    plain, odd = moving_clip(17), moving_clip(20, 1.0)
    write_video(inputs / "plain.mp4", plain, 24, crf=0)
    write_video(inputs / "odd.mp4", odd, 24, crf=0)  # not 8n + 1: resampled to 25 and back
    write_video(inputs / "ref.mp4", build_reference_video(moving_clip(9, 2.0), plain[0], plain[-1]), 24, crf=0)
    assert aw_restore(inputs, tmp_path / "out", "--crf", "0") == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "2 input(s) are plain clips, not aw-prepare references" in text and "odd.mp4, plain.mp4" in text
    assert "weaker than ground-truth anchors" in text

    samples = {name: read_video(tmp_path / "out" / "samples" / name)[0] for name in ("plain.mp4", "odd.mp4", "ref.mp4")}
    assert samples["plain.mp4"].shape[0] == 17 and samples["odd.mp4"].shape[0] == 20
    assert samples["ref.mp4"].shape[0] == 9  # the reference's T + 8 = 17 frames, trimmed to T
    plain, odd = read_video(inputs / "plain.mp4")[0], read_video(inputs / "odd.mp4")[0]  # as aw-restore read them
    for name, clip in (("plain.mp4", plain), ("odd.mp4", odd)):  # every frame in place, none dropped or shifted
        assert (samples[name] - clip).abs().mean(dim=(1, 2, 3)).max() < 0.005, name
    # what the model saw: the references' own 17 frames; the plain clips laid out as references of 17 + 8 and
    # (20 -> 25) + 8 frames: the clip, then its own last frame 8 more times (the official tail)
    assert {r.shape[0] for r in echo_restorer.references} == {17, 25, 33}
    plain_ref = next(r for r in echo_restorer.references if r.shape[0] == 25)
    assert (plain_ref[16:] - plain_ref[16]).abs().max() == 0
    assert torch.equal(plain_ref[:17], plain)


def test_aw_restore_finds_a_read_only_output_before_any_compute(tmp_path, capsys, monkeypatch):
    from artifactworld_ns.restorer import cli_restore, write_video

    write_video(tmp_path / "in" / "a.mp4", moving_clip(17), 24)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    # CI runs as root, whom permission bits do not stop: report the folder as the kernel would to a user
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == locked else real_access(path, mode))

    def no_compute(*args, **kwargs):
        raise AssertionError("nothing may be read or loaded before the output is checked")

    monkeypatch.setattr(cli_restore, "load_restorer", no_compute)
    monkeypatch.setattr(cli_restore, "read_video", no_compute)
    try:
        code = aw_restore(tmp_path / "in", locked / "out")
    finally:
        locked.chmod(0o755)
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "Traceback" not in err
    assert f"The folder {locked} is not writable" in err and "choose a writable --output-folder" in err
    assert not (locked / "out").exists()


@pytest.mark.slow
def test_ctrl_c_in_aw_restore_is_one_line_and_leaves_no_partial_file(tmp_path):
    import signal
    import subprocess
    import sys
    import threading
    import time

    from artifactworld_ns.restorer import write_video

    for i in range(2):
        write_video(tmp_path / "in" / f"c{i}.mp4", moving_clip(17, float(i)), 24)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "ARTIFACTWORLD_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
    command = [str(Path(sys.executable).parent / "aw-restore"), "--input-folder", str(tmp_path / "in")]
    # Far more Euler steps than the test waits for: the interrupt lands mid-restore however slow or loaded the
    # machine is (with 200 steps a busy 2-core machine once finished both clips before the signal arrived).
    command += ["--output-folder", str(out), "--preset", "tiny", "--steps", "20000", "--heatmap-steps", "20000"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    started = threading.Event()

    def read_stdout() -> None:
        for line in process.stdout:
            lines.append(line)
            if "Loading the 'tiny' restorer" in line:
                started.set()

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    assert started.wait(600), "".join(lines)
    time.sleep(3)  # inside the model load or the 20000-step stage 1: long before any output is complete
    process.send_signal(signal.SIGINT)
    stderr = process.stderr.read()
    code = process.wait(120)
    reader.join(10)
    assert code == 130, "".join(lines) + stderr
    assert "Traceback" not in stderr + "".join(lines)
    assert stderr.strip().splitlines() == [
        "aw-restore: interrupted; finished outputs are kept, rerun the same command to continue."
    ]
    leftovers = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert not [p for p in leftovers if p.name.startswith(".")], leftovers  # no temporary file
    assert not [p for p in leftovers if p.suffix == ".mp4" and not p.with_name(p.stem + ".settings.json").exists()]


def test_aw_restore_rerun_with_changed_settings_says_why_it_skipped(tmp_path, echo_restorer, capsys):
    from artifactworld_ns.restorer import write_video

    inputs = tmp_path / "in"
    for name in ("a.mp4", "b.mp4"):
        write_video(inputs / name, moving_clip(17), 24)
    out = tmp_path / "out"
    assert aw_restore(inputs, out, "--steps", "2") == 0
    sample = out / "samples" / "a.mp4"
    recorded = json.loads((out / "samples" / "a.settings.json").read_text())
    assert recorded["--steps"] == 2 and recorded["--preset"] == "tiny" and recorded["--crf"] == 18
    mtime = sample.stat().st_mtime_ns
    capsys.readouterr()

    assert aw_restore(inputs, out, "--steps", "3", "--seed", "7") == 0  # other settings: skipped, and said why
    text = " ".join(capsys.readouterr().out.split())
    assert "skip a.mp4: it was made with --seed 42 (now 7), --steps 2 (now 3), --heatmap-steps 2 (now 3); " in text
    assert "pass --overwrite to redo it" in text
    assert "0 written, 2 skipped" in text and "2 of the skipped outputs were made with other settings" in text
    assert sample.stat().st_mtime_ns == mtime

    assert aw_restore(inputs, out, "--steps", "2") == 0  # the same settings: one summary line, no per-file noise
    text = " ".join(capsys.readouterr().out.split())
    assert "0 written, 2 skipped" in text and "skip a.mp4" not in text and "other settings" not in text

    assert aw_restore(inputs, out, "--steps", "3", "--overwrite") == 0
    assert "2 written, 0 skipped" in " ".join(capsys.readouterr().out.split())
    assert json.loads((out / "samples" / "a.settings.json").read_text())["--steps"] == 3


def test_ctrl_c_in_aw_demo_is_one_line_and_removes_the_unfinished_run(tmp_path, monkeypatch, capsys):
    """Ctrl-C reaches aw-demo alone (ns-train runs in its own session); aw-demo stops ns-train, removes the run
    it started and exits 130 with one line."""
    import signal
    import subprocess

    from artifactworld_ns import demo

    started: dict = {}

    class InterruptedTraining:
        def __init__(self, command, env, start_new_session):
            started.update(command=command, env=env, new_session=start_new_session, pid=4242)
            self.pid = 4242
            run_dir = Path(command[command.index("--output-dir") + 1]) / "demo" / "artifactworld-tiny"
            (run_dir / command[command.index("--timestamp") + 1] / "nerfstudio_models").mkdir(parents=True)
            self.waits = 0

        def wait(self, timeout=None):
            self.waits += 1
            if self.waits == 1:
                raise KeyboardInterrupt  # the user's Ctrl-C while training
            return -signal.SIGTERM

    killed: list = []
    monkeypatch.setattr(subprocess, "Popen", InterruptedTraining)
    monkeypatch.setattr(os, "killpg", lambda pid, sig: killed.append((pid, sig)))
    monkeypatch.setattr(
        "sys.argv", ["aw-demo", "--scene-dir", str(tmp_path / "scene"), "--output-dir", str(tmp_path / "o")]
    )
    monkeypatch.setattr(demo, "write_demo_scene", lambda args: args.output_dir.mkdir(parents=True))
    with pytest.raises(SystemExit) as stopped:
        demo.entrypoint()
    assert stopped.value.code == 130
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and err.startswith("aw-demo: interrupted; removed the unfinished run")
        and "Traceback" not in err
    )
    assert started["new_session"] and killed == [(4242, signal.SIGTERM)]
    assert not list((tmp_path / "o" / "demo" / "artifactworld-tiny").iterdir())
    assert "`torch.cuda.amp.custom_fwd:FutureWarning" in started["env"]["PYTHONWARNINGS"]


def test_known_harmless_warnings_are_silenced_narrowly():
    """nerfstudio's deprecation notices under torch 2.x are dropped by message and module; the same message from
    any other module still shows."""
    import warnings

    from artifactworld_ns.known_warnings import quiet_known_nerfstudio_warnings

    cases = [
        ("`torch.cuda.amp.GradScaler(args...)` is deprecated.", FutureWarning, "nerfstudio.engine.trainer"),
        ("Converting a tensor with requires_grad=True to a scalar may lead to", UserWarning, "nerfstudio.utils.writer"),
        (
            "Using torch.cross without specifying the dim arg is deprecated.",
            UserWarning,
            "nerfstudio.cameras.camera_utils",
        ),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_nerfstudio_warnings()
        for message, category, module in cases:
            warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module=module)
            warnings.warn_explicit(message, category, "mine.py", 1, module="artifactworld_ns.mine")
    assert [str(w.message) for w in caught] == [message for message, _, _ in cases]  # only the ones of our code


def test_diffusers_empty_float32_list_notice_is_dropped_and_others_kept(caplog):
    import logging

    from artifactworld_ns.restorer import loading  # noqa: F401  (installs the filter)

    logger = logging.getLogger("diffusers.models.modeling_utils")
    with caplog.at_level(logging.WARNING, logger="diffusers.models.modeling_utils"):
        logger.warning("There are modules in LTXVideoTransformer3DModel that should be kept in float32: []. Casting")
        logger.warning("There are modules in T5 that should be kept in float32: ['wo']. Casting")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].endswith("kept in float32: ['wo']. Casting")


def test_lpips_without_its_weights_is_nan_without_a_download_attempt(tmp_path, monkeypatch, capsys):
    import torchmetrics.image.lpip

    from artifactworld_ns.model import LazyLPIPS

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "empty_hub"))

    def no_download(*args, **kwargs):
        raise AssertionError("LPIPS must not try to download its weights")

    monkeypatch.setattr(torchmetrics.image.lpip, "LearnedPerceptualImagePatchSimilarity", no_download)
    metric = LazyLPIPS(normalize=True)
    values = [metric(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)) for _ in range(3)]
    assert all(torch.isnan(v) for v in values)
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("LPIPS is unavailable") == 1 and str(tmp_path / "empty_hub") in out
