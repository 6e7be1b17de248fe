"""Closed-loop quality: does a round make novel views better when the restored frames are good?

    python benchmarks/closed_loop_quality.py [--out-dir closed_loop_quality] [--iterations 600]

The demo scene (48 views, 160 x 120) under the paper's sparse-view protocol: 10 % of the views
(5, evenly spread over the capture) train the model, the other 43 are eval views. Four runs with
the same iterations, schedule and seed, differing only in the restorer of the rounds:

* ``none``     -- no rounds (splatfacto on the sparse views),
* ``identity`` -- rounds whose "restored" frames are the renders themselves (lower bound),
* ``oracle``   -- rounds whose restored frames are the ground truth at the clips' cameras (upper bound),
* ``tiny``     -- rounds with the untrained tiny restorer (random weights: it shows the plumbing, not quality).

Each run is scored on its eval views with ``aw-eval scene`` (PSNR, SSIM, LPIPS when the AlexNet
weights are available offline). Writes ``results.json``, ``results.md``, one PNG per run (the same
eval views: ground truth on top, the run's renders below) and ``comparison.png`` (ground truth, no
rounds, oracle). The aim: the oracle at least 2 dB above no rounds, identity within 0.3 dB of it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table

from artifactworld_ns.demo_scene import DemoSceneArgs, write_demo_scene
from artifactworld_ns.method_configs.artifactworld import artifactworld_tiny_config

RUNS = ("none", "identity", "oracle", "tiny")
LABELS = {
    "none": "no rounds",
    "identity": "identity restorer (lower bound)",
    "oracle": "oracle restorer (upper bound)",
    "tiny": "tiny restorer (UNTRAINED)",
}
SHOWN_EVAL_VIEWS = 4


def train_run(scene: Path, out: Path, name: str, iterations: int, ratio: float) -> Path:
    """Train one run in this process (as ns-train does: seeded, config saved); return its config.yml."""
    from nerfstudio.scripts.train import _set_random_seed

    config = artifactworld_tiny_config()
    config.pipeline.datamanager.data = scene
    config.pipeline.datamanager.train_view_ratio = ratio
    config.pipeline.datamanager.view_selection = "even"
    if name == "none":
        config.pipeline.restore_steps = ()
    else:
        config.pipeline.restorer_preset = name
    config.max_num_iterations = iterations
    config.steps_per_save = iterations
    config.steps_per_eval_image = iterations + 1
    config.vis = "tensorboard"
    config.output_dir = out
    config.experiment_name = "closed_loop_quality"
    config.timestamp = name
    _set_random_seed(config.machine.seed)
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.train()
    return trainer.base_dir / "config.yml"


def score(config: Path, report: Path) -> dict:
    """``aw-eval scene`` on the run, as a user runs it."""
    command = [
        str(Path(sys.executable).parent / "aw-eval"),
        "scene",
        "--load-config",
        str(config),
        "--out",
        str(report),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
    if result.returncode != 0:
        raise RuntimeError(f"aw-eval scene failed on {config}: {result.stderr[-2000:]}")
    return json.loads(report.read_text())


def eval_renders(config: Path, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Renders and ground truth of the first ``count`` eval views (uint8 arrays)."""
    from nerfstudio.utils.eval_utils import eval_setup

    from artifactworld_ns.render_io import render_frames

    _, pipeline, _, _ = eval_setup(config, test_mode="test")
    dataset = pipeline.datamanager.eval_dataset
    picks = np.linspace(0, len(dataset) - 1, count).round().astype(int).tolist()
    rgb, _ = render_frames(pipeline, dataset.cameras[torch.tensor(picks)])
    renders = [(frame.numpy() * 255).round().astype(np.uint8) for frame in rgb]
    truths = [(dataset.get_image_float32(i)[..., :3].clamp(0, 1).numpy() * 255).round().astype(np.uint8) for i in picks]
    return renders, truths


def labelled_rows(rows: list[tuple[str, list[np.ndarray]]]) -> Image.Image:
    """Rows of equally sized images, each with its label above it."""
    height, width = rows[0][1][0].shape[:2]
    band = 14
    canvas = Image.new("RGB", (width * len(rows[0][1]), (height + band) * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(rows):
        top = r * (height + band)
        draw.text((3, top + 1), label, fill=(0, 0, 0))
        for c, image in enumerate(images):
            canvas.paste(Image.fromarray(image), (c * width, top + band))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("closed_loop_quality"))
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--views", type=int, default=48)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    args = parser.parse_args()
    os.environ.setdefault("ARTIFACTWORLD_CACHE", str((args.out_dir / "cache").resolve()))
    console = Console()

    scene = args.out_dir / "scene"
    if not (scene / "ground_truth_gaussians.pt").is_file():
        write_demo_scene(DemoSceneArgs(scene, num_views=args.views, width=160, height=120, overwrite=True))
    results, pictures = {}, {}
    for name in args.runs:
        console.rule(f"{name}: {LABELS[name]}")
        config = train_run(scene, args.out_dir / "runs", name, args.iterations, args.ratio)
        report = score(config, args.out_dir / f"eval_{name}.json")
        results[name] = {"label": LABELS[name], **report["mean"], "eval_views": report["count"], "config": str(config)}
        renders, truths = eval_renders(config, SHOWN_EVAL_VIEWS)
        pictures[name] = renders
        labelled_rows([("ground truth", truths), (LABELS[name], renders)]).save(args.out_dir / f"{name}.png")
    if "none" in pictures and "oracle" in pictures:
        labelled_rows(
            [
                ("ground truth (eval views)", truths),
                ("no rounds", pictures["none"]),
                ("oracle restorer: upper bound", pictures["oracle"]),
            ]
        ).save(args.out_dir / "comparison.png")

    table = Table(
        title=f"Closed loop on the demo scene: {args.ratio:.0%} of {args.views} views, {args.iterations} iterations"
    )
    for column in ("run", "PSNR", "SSIM", "LPIPS", "vs no rounds (dB)"):
        table.add_column(column)
    base = results.get("none", {}).get("psnr")
    lines = ["| run | PSNR | SSIM | LPIPS | vs no rounds (dB) |", "| --- | --- | --- | --- | --- |"]
    for name, row in results.items():
        delta = "" if base is None else f"{row['psnr'] - base:+.2f}"
        lpips = (
            "n/a"
            if row.get("lpips") is None or (isinstance(row["lpips"], float) and np.isnan(row["lpips"]))
            else f"{row['lpips']:.4f}"
        )
        cells = [row["label"], f"{row['psnr']:.2f}", f"{row['ssim']:.4f}", lpips, delta]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results.json").write_text(
        json.dumps({"views": args.views, "ratio": args.ratio, "iterations": args.iterations, "runs": results}, indent=2)
    )
    (args.out_dir / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
