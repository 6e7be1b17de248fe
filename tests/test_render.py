"""aw-render on a tiny trained scene (CPU): restored spiral, --no-restore equals ns-render, bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from artifactworld_ns import render as aw_render
from artifactworld_ns.render import normalize_flags

_RUNS: dict = {}


def tiny_trained_run(root: Path) -> Path:
    """Train artifactworld-tiny in this process for a few steps on a 12-view 64x48 scene (11 train, 1 eval view) (once per session)."""
    if root in _RUNS:
        return _RUNS[root]
    from nerfstudio.plugins.registry import discover_methods
    from nerfstudio.scripts.train import main as train_main

    from artifactworld_ns.demo_scene import DemoSceneArgs, write_demo_scene

    scene = write_demo_scene(DemoSceneArgs(root / "scene", num_views=12, width=64, height=48))
    methods, _ = discover_methods()
    config = copy.deepcopy(methods["artifactworld-tiny"])
    config.data = scene
    config.machine.device_type = "cpu"
    config.max_num_iterations = 10
    config.vis = "tensorboard"
    config.output_dir = root / "out"
    config.experiment_name = "render"
    config.timestamp = "run"
    config.viewer.quit_on_train_completion = True
    config.pipeline.restore_steps = ()  # no closed-loop rounds: only the checkpoint is needed
    train_main(config)
    run = root / "out" / "render" / "artifactworld-tiny" / "run"
    assert sorted((run / "nerfstudio_models").glob("*.ckpt")), "training wrote no checkpoint"
    _RUNS[root] = run / "config.yml"
    return _RUNS[root]


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    return tiny_trained_run(tmp_path_factory.getbasetemp() / "aw_tiny_run")


def _read(path: Path) -> torch.Tensor:
    from artifactworld_ns.restorer.video_io import read_video

    frames, _ = read_video(path)
    return frames


class RestoreSpy:
    """Wraps ArtifactRestorer.restore to record its inputs (and still run it)."""

    def __init__(self, monkeypatch):
        from artifactworld_ns.restorer.pipeline import ArtifactRestorer

        self.calls = []
        original = ArtifactRestorer.restore

        def spy(restorer, frames, first_anchor, last_anchor, opacity=None):
            self.calls.append(
                (
                    frames.clone(),
                    first_anchor.clone(),
                    last_anchor.clone(),
                    None if opacity is None else opacity.clone(),
                )
            )
            return original(restorer, frames, first_anchor, last_anchor, opacity)

        monkeypatch.setattr(ArtifactRestorer, "restore", spy)


@pytest.mark.slow
def test_spiral_restore_writes_every_frame_in_windows(config_path, tmp_path, monkeypatch):
    out = tmp_path / "spiral.mp4"
    spy = RestoreSpy(monkeypatch)
    datasets = []
    original_training_image = aw_render.training_image

    def record(dataset, index, size):
        datasets.append(dataset)
        return original_training_image(dataset, index, size)

    monkeypatch.setattr(aw_render, "training_image", record)
    command = aw_render.cli(
        [
            "spiral",
            "--load-config",
            str(config_path),
            "--output-path",
            str(out),
            "--restore",
            "--preset",
            "tiny",
            "--seconds",
            "2.5",
            "--frame-rate",
            "24",
            "--save-comparison",
            "--heatmap-steps",
            "1",
            "--restorer-steps",
            "2",
            "--window-frames",
            "41",
            "--overlap",
            "8",
        ]
    )
    assert command.restore and command.save_comparison and command.window_frames == 41
    assert aw_render.run(command) == 0
    restored = _read(out)
    assert restored.shape == (60, 48, 64, 3)
    assert len(spy.calls) >= 2
    for clip, first, last, opacity in spy.calls:
        assert (clip.shape[0] - 1) % 8 == 0 and clip.shape[1:] == (48, 64, 3)
        assert opacity is not None and opacity.shape == clip.shape[:3]
    # The anchors are training images (DBA needs real, clean views at both ends).
    train = datasets[0]
    assert len(train) == 11  # the run's training split
    images = [train.get_image_float32(i)[..., :3] for i in range(len(train))]
    for _, first, last, _ in spy.calls:
        assert any(torch.allclose(first, img, atol=1e-6) for img in images)
        assert any(torch.allclose(last, img, atol=1e-6) for img in images)
    comparison = _read(tmp_path / "spiral_comparison.mp4")
    assert comparison.shape == (60, 48, 128, 3)
    # Left half is the raw render, right half the restored one: they differ (the restorer ran).
    assert (comparison[..., :64, :] - comparison[..., 64:, :]).abs().mean() > 0.01
    assert (comparison[..., 64:, :] - restored).abs().mean() < 0.05


def _camera_path_file(config_path: Path, folder: Path, frames: int = 4) -> Path:
    """A viewer-style camera path through the scene's first training poses (same coordinates as the run)."""
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(config_path, test_mode="inference")
    poses = pipeline.datamanager.train_dataset.cameras.camera_to_worlds[:frames]
    entries = []
    for pose in poses:
        matrix = torch.cat([pose, torch.tensor([[0.0, 0.0, 0.0, 1.0]])]).flatten().tolist()
        entries.append({"camera_to_world": matrix, "fov": 50.0, "aspect": 64 / 48})
    data = {
        "camera_type": "perspective",
        "render_height": 48,
        "render_width": 64,
        "seconds": 1.0,
        "keyframes": [{"matrix": e["camera_to_world"]} for e in entries],
        "camera_path": entries,
    }
    path = folder / "path.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.slow
def test_no_restore_equals_ns_render_camera_path(config_path, tmp_path):
    import nerfstudio.scripts.render as ns_render
    import tyro

    ours, theirs = tmp_path / "aw.mp4", tmp_path / "ns.mp4"
    args = ["--load-config", str(config_path), "--camera-path-filename", str(_camera_path_file(config_path, tmp_path))]
    command = aw_render.cli(["camera-path", *args, "--output-path", str(ours), "--no-restore"])
    assert command.restore is False
    assert aw_render.run(command) == 0
    reference = tyro.cli(ns_render.Commands, args=["camera-path", *args, "--output-path", str(theirs)])
    reference.main()
    a, b = _read(ours), _read(theirs)
    assert a.shape == b.shape == (4, 48, 64, 3)
    assert torch.equal(a, b)
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.mark.slow
def test_spiral_no_restore_works_on_splatfacto_models(config_path, tmp_path):
    out = tmp_path / "plain.mp4"
    command = aw_render.cli(
        [
            "spiral",
            "--load-config",
            str(config_path),
            "--output-path",
            str(out),
            "--no-restore",
            "--seconds",
            "0.5",
            "--frame-rate",
            "10",
        ]
    )
    assert aw_render.run(command) == 0
    assert _read(out).shape == (5, 48, 64, 3)


def test_missing_config_is_one_sentence(tmp_path, capsys):
    missing = tmp_path / "nope" / "config.yml"
    command = aw_render.cli(["spiral", "--load-config", str(missing), "--output-path", str(tmp_path / "o.mp4")])
    assert aw_render.run(command) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"The config file {missing} does not exist." in err
    assert not (tmp_path / "o.mp4").exists()


def test_camera_path_without_keyframes_is_one_sentence(tmp_path, capsys):
    config = tmp_path / "config.yml"
    config.write_text("not used: the camera path is checked first\n")
    path = tmp_path / "path.json"
    path.write_text(
        json.dumps({"keyframes": [], "camera_path": [], "seconds": 2.0, "render_height": 48, "render_width": 64})
    )
    command = aw_render.cli(
        [
            "camera-path",
            "--load-config",
            str(config),
            "--camera-path-filename",
            str(path),
            "--output-path",
            str(tmp_path / "o.mp4"),
            "--no-restore",
        ]
    )
    assert aw_render.run(command) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"The camera path file {path} has no keyframes, so there is nothing to render." in err


def test_bad_window_frames_refused_before_loading(tmp_path, capsys):
    config = tmp_path / "config.yml"
    config.write_text("x\n")
    command = aw_render.cli(["spiral", "--load-config", str(config), "--window-frames", "20", "--preset", "tiny"])
    assert aw_render.run(command) == 2
    assert "--window-frames must be 8n + 1" in " ".join(capsys.readouterr().err.split())


def test_restore_flags_accept_bare_and_valued_forms():
    assert normalize_flags(["spiral", "--restore", "--preset", "tiny"]) == [
        "spiral",
        "--restore",
        "True",
        "--preset",
        "tiny",
    ]
    assert normalize_flags(["--no-restore"]) == ["--restore", "False"]
    assert normalize_flags(["--restore", "False", "--save-comparison"]) == [
        "--restore",
        "False",
        "--save-comparison",
        "True",
    ]
    assert normalize_flags(["--render-nearest-camera", "True"]) == ["--render-nearest-camera", "True"]
    config = "c.yml"
    assert aw_render.cli(["interpolate", "--load-config", config, "--no-restore"]).restore is False
    assert aw_render.cli(["interpolate", "--load-config", config]).restore is True
    assert aw_render.cli(["dataset", "--load-config", config]).split == "test"


def test_restorer_memory_options_are_applied(monkeypatch):
    """Preset options aw-render/benchmarks use on big GPUs: VAE tiling and fp8 storage of the transformer."""
    from artifactworld_ns.restorer.pipeline import ArtifactRestorer

    restorer = ArtifactRestorer.from_preset(
        "tiny",
        show_progress=False,
        vae_tiling=True,
        fp8_transformer_storage=True,
        heatmap_steps=1,
        num_inference_steps=2,
    )
    assert restorer.vae.use_tiling
    dtypes = {
        name: module.weight.dtype
        for name, module in restorer.transformer.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    stored_fp8 = [n for n, d in dtypes.items() if d == torch.float8_e4m3fn]
    assert stored_fp8 and any(".attn1." in n for n in stored_fp8)
    assert all(d != torch.float8_e4m3fn for n, d in dtypes.items() if "lora_" in n or n == "proj_in")
    clip = torch.rand(9, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    result = restorer.restore(clip, clip[0], clip[-1])
    assert result.frames.shape == clip.shape and bool(torch.isfinite(result.frames).all())


def test_output_path_that_is_a_folder_is_refused_before_loading(tmp_path, capsys):
    config = tmp_path / "config.yml"
    config.write_text("not loaded: the output path is checked first\n")
    folder = tmp_path / "renders"
    folder.mkdir()
    command = aw_render.cli(["spiral", "--load-config", str(config), "--output-path", str(folder), "--preset", "tiny"])
    assert aw_render.run(command) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (
        f"The --output-path {folder} is a folder; give a file name, e.g. --output-path {folder / 'render.mp4'}." in err
    )


def test_bad_restorer_options_are_refused_before_loading(tmp_path, capsys, monkeypatch):
    config = tmp_path / "config.yml"
    config.write_text("x\n")
    base = ["spiral", "--load-config", str(config), "--output-path", str(tmp_path / "o.mp4"), "--preset", "tiny"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for extra, message in (
        (["--processing-max-side", "0"], "--processing-max-side must be at least 32"),
        (["--restorer-steps", "0"], "--restorer-steps must be at least 1, got 0."),
        (["--restorer-device", "cuda"], "--restorer-device cuda needs a CUDA GPU"),
    ):
        assert aw_render.run(aw_render.cli(base + extra)) == 2
        assert message in " ".join(capsys.readouterr().err.split()), extra
