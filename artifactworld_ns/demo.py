"""`aw-demo`: make (or reuse) the demo scene and train `artifactworld-tiny` on it on the CPU."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

import tyro
from rich.console import Console
from rich.panel import Panel

from artifactworld_ns.demo_scene import DemoSceneArgs, DemoSceneError, write_demo_scene
from artifactworld_ns.restorer import environment_with_ffmpeg, untrained_note

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


class DemoError(ValueError):
    """Bad aw-demo arguments; the message is one sentence."""


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


def run_demo(args: DemoArgs) -> Path:
    """Returns the run's config.yml."""
    step = round_step(args)
    CONSOLE.print(f"[bold yellow]Note:[/] this demo trains artifactworld-tiny. {untrained_note()}")
    if (args.scene_dir / "transforms.json").is_file():
        CONSOLE.print(f"Reusing the demo scene in {args.scene_dir}")
    else:
        write_demo_scene(DemoSceneArgs(args.scene_dir, num_views=args.num_views, width=args.width, height=args.height))
        CONSOLE.print(f"Wrote the demo scene to {args.scene_dir}")

    timestamp = datetime.now().strftime("%Y-%m-%d_%H%M%S")
    command = [
        str(Path(sys.executable).parent / "ns-train"),
        "artifactworld-tiny",
        "--data",
        str(args.scene_dir),
        "--output-dir",
        str(args.output_dir),
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
    CONSOLE.print("Running: ns-train " + " ".join(command[1:]))
    started = time.perf_counter()
    subprocess.run(command, check=True, env=environment_with_ffmpeg())
    minutes = (time.perf_counter() - started) / 60
    run_dir = args.output_dir / "demo" / "artifactworld-tiny" / timestamp
    config = run_dir / "config.yml"
    CONSOLE.print(
        Panel.fit(
            "\n".join(
                [
                    f"Training took {minutes:.1f} min.",
                    f"Run folder:   {run_dir}",
                    f"Checkpoints:  {run_dir / 'nerfstudio_models'}",
                    f"Restored views (pseudo-view bank): {run_dir / 'bank'}",
                    f"Viewer:       ns-viewer --load-config {config}",
                    f"Metrics:      ns-eval --load-config {config} --output-path {run_dir / 'eval.json'}",
                    f"TensorBoard:  tensorboard --logdir {run_dir}",
                    f"Restorer:     {untrained_note()}",
                ]
            ),
            title="ArtifactWorld demo finished",
        )
    )
    return config


def entrypoint() -> None:
    args = tyro.cli(DemoArgs)
    try:
        run_demo(args)
    except (DemoSceneError, DemoError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)
    except subprocess.CalledProcessError as error:
        print(f"error: ns-train stopped with exit code {error.returncode}; its output above says why.", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    entrypoint()
