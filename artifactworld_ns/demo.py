"""`aw-demo`: make (or reuse) the demo scene and train `artifactworld-tiny` on it on the CPU."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import tyro
from rich.console import Console
from rich.panel import Panel

from artifactworld_ns.demo_scene import DemoSceneArgs, DemoSceneError, write_demo_scene
from method_configs.artifactworld import TINY_UNTRAINED_NOTE

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
    restore_step: int = 150
    """The iteration of the demo's one restoration round."""
    num_views: int = 36
    """Views of a newly written demo scene."""
    width: int = 160
    """Image width of a newly written demo scene."""
    height: int = 120
    """Image height of a newly written demo scene."""


def run_demo(args: DemoArgs) -> Path:
    """Returns the run's config.yml."""
    CONSOLE.print(f"[bold yellow]Note:[/] this demo uses the {TINY_UNTRAINED_NOTE}.")
    if (args.scene_dir / "transforms.json").is_file():
        CONSOLE.print(f"Reusing the demo scene in {args.scene_dir}")
    else:
        write_demo_scene(DemoSceneArgs(args.scene_dir, num_views=args.num_views, width=args.width, height=args.height))
        CONSOLE.print(f"Wrote the demo scene to {args.scene_dir}")

    timestamp = datetime.now().strftime("%Y-%m-%d_%H%M%S")
    command = [
        str(Path(sys.executable).parent / "ns-train"), "artifactworld-tiny",
        "--data", str(args.scene_dir),
        "--output-dir", str(args.output_dir),
        "--experiment-name", "demo",
        "--timestamp", timestamp,
        "--machine.device-type", "cpu",
        "--max-num-iterations", str(args.max_num_iterations),
        "--pipeline.datamanager.train-view-ratio", str(args.train_view_ratio),
        "--pipeline.datamanager.restore-steps", str(args.restore_step),
        "--vis", "tensorboard",
        "--viewer.quit-on-train-completion", "True",
    ]
    CONSOLE.print("Running: ns-train " + " ".join(command[1:]))
    started = time.perf_counter()
    subprocess.run(command, check=True)
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
                    f"Restorer:     {TINY_UNTRAINED_NOTE}",
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
    except DemoSceneError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)
    except subprocess.CalledProcessError as error:
        print(f"error: ns-train stopped with exit code {error.returncode}; its output above says why.", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    entrypoint()
