"""Shared fixtures: a small demo scene, the venv's command-line tools on PATH, and the synthetic test clip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch

BIN = Path(sys.executable).parent
# The venv's tools (ffmpeg, ns-*, aw-*) come first, as `make test` arranges, also under a bare `pytest`.
os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"


def write_zero_frame_mp4(path: Path) -> Path:
    """A valid mp4 container with no video frames (ffmpeg's test source, 0 frames): a reader's edge case."""
    from artifactworld_ns.restorer.video_io import find_ffmpeg

    command = [find_ffmpeg(), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=24"]
    subprocess.run([*command, "-frames:v", "0", "-c:v", "libx264", str(path)], check=True)
    return path


def wave_clip(
    frames: int,
    height: int,
    width: int,
    *,
    freqs: tuple[float, float, float] = (3.0, 2.0, 1.5),
    speeds: tuple[float, float, float] = (0.3, 0.2, 0.0),
    phases: tuple[float, float, float] = (0.0, 0.0, 0.0),
    blue: Optional[Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = None,
) -> torch.Tensor:
    """The synthetic test clip ``[frames, height, width, 3]`` in ``[0, 1]``: smooth colour waves that move
    from frame to frame and survive H.264 with little loss. With ``x``, ``y`` running 0..1 across the frame
    and ``t`` the frame index, per channel::

        r = 0.5 + 0.4 sin(fr x + sr t + pr)
        g = 0.5 + 0.4 cos(fg y - sg t + pg)
        b = 0.5 + 0.3 sin(fb (x + y) + pb + sb t)      (or blue(x, y, t))

    (``freqs``, ``speeds``, ``phases`` per channel); each test module fixes its own waves.
    """
    t = torch.arange(frames, dtype=torch.float32).view(-1, 1, 1)
    y = torch.linspace(0, 1, height).view(1, -1, 1)
    x = torch.linspace(0, 1, width).view(1, 1, -1)
    (fr, fg, fb), (sr, sg, sb), (pr, pg, pb) = freqs, speeds, phases
    r = 0.5 + 0.4 * torch.sin(fr * x + sr * t + pr)
    g = 0.5 + 0.4 * torch.cos(fg * y - sg * t + pg)
    b = 0.5 + 0.3 * torch.sin(fb * (x + y) + pb + sb * t) if blue is None else blue(x, y, t)
    return torch.stack(torch.broadcast_tensors(r, g, b), dim=-1)


def _run_cli(*args: str, timeout: float = 900, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )


@pytest.fixture
def run_cli():
    """Run one of the installed commands (ns-train, aw-demo-scene, ...) as a user would."""
    return _run_cli


@pytest.fixture(scope="session")
def small_demo_scene(tmp_path_factory) -> Path:
    """A 12-view 96x72 demo scene, written once per test session."""
    from artifactworld_ns.demo_scene import DemoSceneArgs, write_demo_scene

    return write_demo_scene(
        DemoSceneArgs(tmp_path_factory.mktemp("scenes") / "demo", num_views=12, width=96, height=72)
    )


SIMULATE_QUICK = [
    "--clip-frames",
    "9",
    "--frame-step",
    "4",
    "--checkpoint-range",
    "10",
    "20",
    "--device",
    "cpu",
    "--model.warmup-length",
    "1000000",  # no densification: the CPU rasterizer stays fast
    "--model.num-downscales",
    "0",
]
"""aw-simulate options for a run of seconds on the CPU (the demo scenes' 9-frame clips)."""


@pytest.fixture(scope="session")
def demo_captures(tmp_path_factory) -> Path:
    """Two 24-view 48x36 demo scenes (garden, kitchen), written once per session."""
    from artifactworld_ns.demo_scene import DemoSceneArgs, write_demo_scene

    root = tmp_path_factory.mktemp("captures")
    for name, seed in (("garden", 0), ("kitchen", 1)):
        write_demo_scene(DemoSceneArgs(root / name, num_views=24, width=48, height=36, seed=seed))
    return root


@pytest.fixture(scope="session")
def simulated_demo(demo_captures, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``aw-simulate`` of the two demo scenes with :data:`SIMULATE_QUICK`, run once per session as a user runs it
    (14 clips: 7 recipes x 2 scenes); shared by the data-engine and flywheel end-to-end tests, which only read it."""
    out = tmp_path_factory.mktemp("simulate") / "simulated"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "SLURM_ARRAY_TASK_ID")}
    env["ARTIFACTWORLD_CACHE"] = str(tmp_path_factory.getbasetemp() / "aw-cache")
    result = subprocess.run(
        [str(BIN / "aw-simulate"), str(demo_captures), "--output-dir", str(out), *SIMULATE_QUICK],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    return out, result


def tiny_trainer(
    scene: Path,
    out: Path,
    *,
    steps: int,
    timestamp: str = "run",
    restore_steps=(40,),
    load_dir=None,
    experiment: str = "loop",
    eval_every: int | None = None,
    **options,
):
    """An ``artifactworld-tiny`` trainer set up as ``ns-train`` sets it up (seeded, config.yml written).

    ``options`` set ``--pipeline.*`` round options (restorer_preset, clip_frames, ...) or else
    ``--pipeline.datamanager.*`` ones (train_view_ratio, ...); ``restore_steps=()`` trains without rounds.
    """
    from nerfstudio.scripts.train import _set_random_seed

    from artifactworld_ns.method_configs.artifactworld import artifactworld_tiny_config

    config = artifactworld_tiny_config()
    config.pipeline.datamanager.data = scene
    config.pipeline.restore_steps = restore_steps
    for key, value in options.items():
        setattr(config.pipeline if hasattr(config.pipeline, key) else config.pipeline.datamanager, key, value)
    config.max_num_iterations = steps
    config.steps_per_save = steps
    if eval_every is not None:
        config.steps_per_eval_image = eval_every
    config.vis = "tensorboard"
    config.output_dir = out
    config.experiment_name = experiment
    config.timestamp = timestamp
    config.load_dir = load_dir
    _set_random_seed(config.machine.seed)
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer
