"""`aw-demo`: make (or reuse) the demo scene and train `artifactworld-tiny` on it on the CPU."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

import tyro
from rich.console import Console

from artifactworld_ns.demo_scene import DemoSceneArgs, DemoSceneError, write_demo_scene
from artifactworld_ns.known_warnings import PYTHONWARNINGS_IMPORT_TIME
from artifactworld_ns.restorer import ArtifactWorldError, environment_with_ffmpeg, untrained_note

CONSOLE = Console()


@dataclass
class DemoArgs:
    """Train ArtifactWorld (tiny preset) on a synthetic scene on the CPU, end to end."""

    scene_dir: Path = Path("outputs/demo_scene")
    """Demo scene folder; written by aw-demo-scene's code if it has no transforms.json yet, else reused."""
    output_dir: Path = Path("outputs")
    """Where nerfstudio writes the run (OUTPUT_DIR/demo/artifactworld-tiny/TIMESTAMP)."""
    max_num_iterations: int = 300
    """Training iterations."""
    train_view_ratio: float = 0.25
    """Sparse-view protocol: the share of the views trained on (the rest are eval views)."""
    restore_step: Optional[int] = None
    """The iteration of the demo's one restoration round (default: half of --max-num-iterations)."""
    num_views: int = 36
    """Views of a newly written demo scene."""
    width: int = 160
    """Image width of a newly written demo scene."""
    height: int = 120
    """Image height of a newly written demo scene."""


class DemoError(ArtifactWorldError, ValueError):
    """Bad aw-demo arguments; the message is one sentence."""


INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report it."""


class DemoInterrupted(Exception):
    """Ctrl-C during the demo; ``run_dir`` is the unfinished run folder it removed (None before training began)."""

    def __init__(self, run_dir: Optional[Path]) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir


def train_environment() -> dict:
    """ns-train's environment: the bundled ffmpeg on PATH, and nerfstudio's import-time FutureWarnings off."""
    env = environment_with_ffmpeg()
    env["PYTHONWARNINGS"] = ",".join(w for w in (env.get("PYTHONWARNINGS"), PYTHONWARNINGS_IMPORT_TIME) if w)
    return env


def run_training(command: list, run_dir: Path) -> None:
    """Run ns-train in its own session, so that Ctrl-C reaches aw-demo alone (nerfstudio prints a traceback
    for it); on Ctrl-C stop ns-train and what it started, remove the unfinished run folder, and raise
    :class:`DemoInterrupted`."""
    process = subprocess.Popen(command, env=train_environment(), start_new_session=True)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(run_dir, ignore_errors=True)
        raise DemoInterrupted(run_dir) from None
    if code:
        raise subprocess.CalledProcessError(code, command)


def round_step(args: DemoArgs) -> int:
    """The round's iteration: ``--restore-step`` or half the run; it must fall inside the run."""
    if args.max_num_iterations < 2:
        raise DemoError(
            f"--max-num-iterations {args.max_num_iterations} is too short for a restoration round; use at least 2."
        )
    step = args.max_num_iterations // 2 if args.restore_step is None else args.restore_step
    if not 0 < step < args.max_num_iterations:
        raise DemoError(
            f"--restore-step {step} is outside the run's {args.max_num_iterations} iterations; choose 1 to "
            f"{args.max_num_iterations - 1} or leave it out (half the run)."
        )
    return step


def tool(name: str) -> str:
    """How to call one of this environment's commands: its bare name when it is the one on PATH, else its full path."""
    path = Path(sys.executable).parent / name
    return name if shutil.which(name) == str(path) else str(path)


def summary(run_dir: Path, minutes: float) -> list[str]:
    """The demo's closing lines: absolute paths, and each command on a line of its own."""
    config = run_dir / "config.yml"
    return [
        f"Training took {minutes:.1f} min.",
        f"Run folder:   {run_dir}",
        f"Checkpoints:  {run_dir / 'nerfstudio_models'}",
        f"Restored views (pseudo-view bank): {run_dir / 'bank'}",
        f"Restorer:     {untrained_note()}",
        "Open it in the viewer:",
        f"  {shlex.join([tool('ns-viewer'), '--load-config', str(config)])}",
        "Metrics (PSNR, SSIM, LPIPS):",
        f"  {shlex.join([tool('ns-eval'), '--load-config', str(config), '--output-path', str(run_dir / 'eval.json')])}",
        "TensorBoard:",
        f"  {shlex.join([tool('tensorboard'), '--logdir', str(run_dir)])}",
    ]


def print_summary(lines: list[str], console: Console = CONSOLE) -> None:
    """Print ``lines`` unwrapped (``soft_wrap``): a command that is wider than the terminal stays one line to copy."""
    console.rule("ArtifactWorld demo finished")
    for line in lines:
        console.print(line, soft_wrap=True, markup=False, highlight=False)


def run_demo(args: DemoArgs) -> Path:
    """Returns the run's config.yml."""
    step = round_step(args)
    scene_dir, output_dir = args.scene_dir.absolute(), args.output_dir.absolute()
    CONSOLE.print("[bold yellow]Note:[/] this demo trains artifactworld-tiny, whose restorer is UNTRAINED.")
    if (scene_dir / "transforms.json").is_file():
        CONSOLE.print(f"Reusing the demo scene in {scene_dir}", soft_wrap=True)
    else:
        write_demo_scene(DemoSceneArgs(scene_dir, num_views=args.num_views, width=args.width, height=args.height))
        CONSOLE.print(f"Wrote the demo scene to {scene_dir}", soft_wrap=True)

    timestamp = datetime.now().strftime("%Y-%m-%d_%H%M%S")
    command = [
        str(Path(sys.executable).parent / "ns-train"),
        "artifactworld-tiny",
        "--data",
        str(scene_dir),
        "--output-dir",
        str(output_dir),
        "--experiment-name",
        "demo",
        "--timestamp",
        timestamp,
        "--machine.device-type",
        "cpu",
        "--max-num-iterations",
        str(args.max_num_iterations),
        "--pipeline.datamanager.train-view-ratio",
        str(args.train_view_ratio),
        "--pipeline.restore-steps",
        str(step),
        "--vis",
        "tensorboard",
        "--viewer.quit-on-train-completion",
        "True",
    ]
    CONSOLE.print("Running: " + shlex.join([tool("ns-train"), *command[1:]]), soft_wrap=True, markup=False)
    started = time.perf_counter()
    run_dir = output_dir / "demo" / "artifactworld-tiny" / timestamp
    run_training(command, run_dir)
    minutes = (time.perf_counter() - started) / 60
    print_summary(summary(run_dir, minutes))
    return run_dir / "config.yml"


def entrypoint() -> None:
    args = tyro.cli(DemoArgs)
    try:
        run_demo(args)
    except (DemoSceneError, DemoError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)
    except DemoInterrupted as stop:
        print(f"aw-demo: interrupted; removed the unfinished run {stop.run_dir}.", file=sys.stderr)
        raise SystemExit(INTERRUPTED)
    except KeyboardInterrupt:  # before training began (writing the scene is atomic)
        print("aw-demo: interrupted before training began; nothing was left behind.", file=sys.stderr)
        raise SystemExit(INTERRUPTED)
    except subprocess.CalledProcessError as error:
        print(f"error: ns-train stopped with exit code {error.returncode}; its output above says why.", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    entrypoint()
