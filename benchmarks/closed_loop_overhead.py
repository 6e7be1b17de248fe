"""Closed-loop overhead: seconds per iteration outside rounds vs the splatfacto baseline, and one round's split.

    python benchmarks/closed_loop_overhead.py [--scene DIR] [--iterations 60] [--out closed_loop.json]

The baseline is splatfacto's training on the same data and device: nerfstudio's FullImageDatamanager
with our model class (on a CPU, stock splatfacto cannot train: it moves tensors to CUDA
unconditionally; on CUDA the model class renders exactly as splatfacto does). The measured method
is artifactworld-tiny with a filled pseudo-view bank, so its steps draw real and generated views.
Both use the same views, schedule and seed. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.engine.callbacks import TrainingCallbackLocation
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from rich.console import Console
from rich.table import Table

from artifactworld_ns.demo_scene import DemoSceneArgs, write_demo_scene
from artifactworld_ns.method_configs.artifactworld import artifactworld_tiny_config


def trainer_for(scene: Path, out: Path, name: str, iterations: int, baseline: bool, device: str):
    config = artifactworld_tiny_config()
    config.machine.device_type = device
    config.pipeline.datamanager.data = scene
    config.pipeline.restore_steps = (1,)
    if baseline:  # splatfacto's own pipeline and datamanager: no rounds, no bank
        datamanager = FullImageDatamanagerConfig(
            data=scene, dataparser=config.pipeline.datamanager.dataparser, cache_images="gpu", cache_images_type="uint8"
        )
        config.pipeline = VanillaPipelineConfig(datamanager=datamanager, model=config.pipeline.model)
    config.max_num_iterations = iterations + 4
    config.vis, config.output_dir, config.experiment_name, config.timestamp = "tensorboard", out, name, "run"
    config.steps_per_save = 10**9
    config.pipeline.model.warmup_length = 10**9  # no densification: both runs keep the same Gaussians
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def iterate(trainer, step: int) -> None:
    """One step as Trainer.train runs it: callbacks before, the iteration, callbacks after."""
    for callback in trainer.callbacks:
        callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
    trainer.train_iteration(step)
    for callback in trainer.callbacks:
        callback.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)


def seconds_per_iteration(trainer, first: int, iterations: int) -> float:
    for step in range(first, first + 2):  # warm-up
        iterate(trainer, step)
    started = time.perf_counter()
    for step in range(first + 2, first + 2 + iterations):
        iterate(trainer, step)
    return (time.perf_counter() - started) / iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scene", type=Path, default=None, help="nerfstudio scene (default: a 36-view 160x120 demo scene)"
    )
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("closed_loop_overhead.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aw-bench-"))
    scene = args.scene or write_demo_scene(DemoSceneArgs(work / "scene"))

    baseline = trainer_for(scene, work, "baseline", args.iterations, baseline=True, device=args.device)
    baseline_seconds = seconds_per_iteration(baseline, 0, args.iterations)

    method = trainer_for(scene, work, "method", args.iterations, baseline=False, device=args.device)
    datamanager = method.pipeline.datamanager
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    iterate(method, 0)
    iterate(method, 1)  # the round runs before step 1 (restore_steps = (1,))
    record = datamanager.bank.rounds[0]
    round_peak_gb = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    method_seconds = seconds_per_iteration(method, 2, args.iterations)
    generated = sum(g for _, g in datamanager.draws[-args.iterations :])

    result = {
        "device": args.device,
        "scene": str(scene),
        "iterations": args.iterations,
        "baseline_seconds_per_iteration": baseline_seconds,
        "artifactworld_seconds_per_iteration": method_seconds,
        "ratio": method_seconds / baseline_seconds,
        "generated_share_of_timed_steps": generated / args.iterations,
        "round_seconds": record.seconds,
        "round_status": record.status,
        "round_views": record.num_views,
        "round_peak_gpu_gb": round_peak_gb,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    table = Table(title=f"Closed-loop overhead ({args.device}, tiny restorer: untrained)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("splatfacto baseline, s/iteration", f"{baseline_seconds:.4f}")
    table.add_row("artifactworld-tiny outside rounds, s/iteration", f"{method_seconds:.4f}")
    table.add_row("ratio (target <= 1.05)", f"{result['ratio']:.3f}")
    for phase, seconds in record.seconds.items():
        table.add_row(f"one round: {phase}, s", f"{seconds:.2f}")
    table.add_row("views added by the round", str(record.num_views))
    if round_peak_gb is not None:
        table.add_row("peak GPU memory during the round, GB", f"{round_peak_gb:.2f}")
    Console().print(table)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
