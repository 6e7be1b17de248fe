"""Restorer overhead benchmark (tiny preset, CPU by default).

Two measurements, each in fresh subprocesses so that one does not disturb the other:

1. **Time overhead.** Wall time of a full two-stage restore (``restore_reference`` on a DBA reference
   clip: stage 1 heatmap + stage 2 AATF) divided by the time spent inside model calls: transformer
   forward calls (forward pre/post hooks) and VAE ``encode`` / ``decode`` calls (timers around the
   calls). 1.0 would mean no time outside the networks.
2. **Memory of the homogeneous dual model.** Peak RSS (``resource.getrusage``) of one process that
   loads the backbone once and runs both stages, versus the official layout: two processes that each
   load the backbone, one per stage. Also reported: the peak of a process that only imports the
   restorer (the runtime's floor), so the numbers above it can be read as model + activations.

The tiny preset is random-init (untrained) and its weights are tiny, so on CPU the memory figures are
dominated by the Python / torch / diffusers runtime; the ratios are what carries over.

    python benchmarks/restorer_overhead.py --out overhead.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro
from bench_common import moving_pattern, peak_rss_mib

WorkerMode = Literal["build", "imports", "both", "stage1", "stage2", "timing"]


@dataclass
class BenchmarkArgs:
    """Restorer overhead: wall time vs. time inside transformer/VAE calls, and peak RSS of one vs. two processes."""

    out: Optional[Path] = None
    """Write the results as JSON to this file."""
    preset: Literal["tiny", "full"] = "tiny"
    """Restorer preset to measure ('tiny' is untrained and runs on a CPU)."""
    frames: int = 9
    """Frames of the synthetic clip (8n + 1); its DBA reference has frames + 8."""
    height: int = 128
    """Height of the synthetic clip in pixels."""
    width: int = 192
    """Width of the synthetic clip in pixels."""
    repeats: int = 2
    """Timed two-stage restores (after one untimed warm-up run); the median is reported."""
    device: Optional[str] = None
    """Torch device (default: the preset's; tiny runs on cpu)."""
    worker: Optional[WorkerMode] = None
    """Internal: run one measurement in this process and print it as JSON (used by the subprocesses)."""
    heatmap_file: Optional[Path] = None
    """Internal: heatmap tensor file handed from the stage-1 worker to the stage-2 worker."""


def synthetic_reference(frames: int, height: int, width: int):
    """The official DBA reference (``frames + 8`` frames) of a smooth moving pattern."""
    from artifactworld_ns.restorer.dba import build_reference_video

    clip = moving_pattern(frames, height, width)
    return build_reference_video(clip, clip[0], clip[-1])


class ModelTimer:
    """Accumulates time spent inside transformer forward calls and VAE encode/decode calls."""

    def __init__(self, transformer, vae) -> None:
        import torch

        self._sync = torch.cuda.synchronize if next(transformer.parameters()).is_cuda else (lambda: None)
        self.seconds = {"transformer": 0.0, "vae": 0.0}
        self.calls = {"transformer": 0, "vae": 0}
        self._start: dict[str, float] = {}
        self._depth = {"transformer": 0, "vae": 0}
        transformer.register_forward_pre_hook(lambda module, args: self._enter("transformer"))
        transformer.register_forward_hook(lambda module, args, output: self._exit("transformer"))
        for method in ("encode", "decode"):
            original = getattr(vae, method)

            def timed(*args, _original=original, **kwargs):
                self._enter("vae")
                try:
                    return _original(*args, **kwargs)
                finally:
                    self._exit("vae")

            setattr(vae, method, timed)

    def _enter(self, key: str) -> None:
        if self._depth[key] == 0:
            self._sync()
            self._start[key] = time.perf_counter()
        self._depth[key] += 1

    def _exit(self, key: str) -> None:
        self._depth[key] -= 1
        if self._depth[key] == 0:
            self._sync()
            self.seconds[key] += time.perf_counter() - self._start[key]
            self.calls[key] += 1

    def reset(self) -> None:
        self.seconds = {k: 0.0 for k in self.seconds}
        self.calls = {k: 0 for k in self.calls}


def _load(args: BenchmarkArgs):
    from artifactworld_ns.restorer.pipeline import ArtifactRestorer

    overrides = {"show_progress": False}
    if args.device:
        overrides["device"] = args.device
    return ArtifactRestorer.from_preset(args.preset, **overrides)


def run_worker(args: BenchmarkArgs) -> dict:
    """One measurement in this (fresh) process."""
    import torch

    result: dict = {"mode": args.worker}
    t0 = time.perf_counter()
    if args.worker == "imports":
        import artifactworld_ns.restorer.pipeline  # noqa: F401

        result["peak_rss_mib"] = peak_rss_mib()
        return result
    restorer = _load(args)
    result["load_s"] = time.perf_counter() - t0
    result["backbone_loads"] = 1
    result["model_mib"] = (
        sum(p.numel() * p.element_size() for m in (restorer.transformer, restorer.vae) for p in m.parameters()) / 2**20
    )
    if args.worker == "build":
        return result
    reference = synthetic_reference(args.frames, args.height, args.width)
    t1 = time.perf_counter()
    if args.worker == "both":
        restorer.restore_reference(reference)
    elif args.worker == "stage1":
        from artifactworld_ns.restorer.pipeline import hand_off_heatmap

        heatmap = restorer.predict_heatmap(reference)
        torch.save(hand_off_heatmap(heatmap), args.heatmap_file)  # what the official stage-1 script writes
    elif args.worker == "stage2":
        heatmap = torch.load(args.heatmap_file)
        restorer.restore_reference(reference, heatmap=heatmap)
    elif args.worker == "timing":
        timer = ModelTimer(restorer.transformer, restorer.vae)
        restorer.restore_reference(reference)  # warm-up: first-call costs, auxiliary latents
        runs = []
        for _ in range(args.repeats):
            timer.reset()
            start = time.perf_counter()
            restorer.restore_reference(reference)
            wall = time.perf_counter() - start
            runs.append(
                {
                    "wall_s": wall,
                    **{f"{k}_s": v for k, v in timer.seconds.items()},
                    **{f"{k}_calls": v for k, v in timer.calls.items()},
                }
            )
        runs.sort(key=lambda r: r["wall_s"])
        result["runs"] = runs
        result["median"] = runs[len(runs) // 2]
    result["run_s"] = time.perf_counter() - t1
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def spawn(args: BenchmarkArgs, mode: WorkerMode, heatmap_file: Path | None = None) -> dict:
    """Run one worker in a fresh interpreter and return its JSON result."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        mode,
        "--preset",
        args.preset,
        "--frames",
        str(args.frames),
        "--height",
        str(args.height),
        "--width",
        str(args.width),
        "--repeats",
        str(args.repeats),
    ]
    if args.device:
        cmd += ["--device", args.device]
    if heatmap_file is not None:
        cmd += ["--heatmap-file", str(heatmap_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker '{mode}' failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_benchmark(args: BenchmarkArgs) -> dict:
    from rich.console import Console

    console = Console()
    if args.preset == "tiny":
        from artifactworld_ns.restorer import untrained_note

        console.print(f"[yellow]note:[/] {untrained_note()} Only ratios are meaningful.")
    with console.status("building / caching the model..."):
        spawn(args, "build")
    with console.status("timing a full two-stage restore..."):
        timing = spawn(args, "timing")
    with tempfile.TemporaryDirectory() as tmp:
        heatmap_file = Path(tmp) / "heatmap.pt"
        with console.status("peak memory: imports only / one process / two processes..."):
            imports = spawn(args, "imports")
            both = spawn(args, "both")
            stage1 = spawn(args, "stage1", heatmap_file)
            stage2 = spawn(args, "stage2", heatmap_file)

    med = timing["median"]
    model_s = med["transformer_s"] + med["vae_s"]
    two_sum = stage1["peak_rss_mib"] + stage2["peak_rss_mib"]
    two_max = max(stage1["peak_rss_mib"], stage2["peak_rss_mib"])
    floor = imports["peak_rss_mib"]
    import platform

    import torch

    results = {
        "preset": args.preset,
        "untrained": args.preset == "tiny",
        "clip": {"frames": args.frames, "height": args.height, "width": args.width},
        "device": args.device or ("cpu" if args.preset == "tiny" else "default"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "time": {
            "wall_s": med["wall_s"],
            "transformer_s": med["transformer_s"],
            "vae_s": med["vae_s"],
            "model_s": model_s,
            "outside_models_s": med["wall_s"] - model_s,
            "wall_over_model": med["wall_s"] / model_s if model_s > 0 else float("inf"),
            "transformer_calls": med["transformer_calls"],
            "vae_calls": med["vae_calls"],
            "runs": timing["runs"],
        },
        "memory": {
            "model_params_mib": both["model_mib"],
            "imports_only_peak_rss_mib": floor,
            "one_process_both_stages_peak_rss_mib": both["peak_rss_mib"],
            "stage1_process_peak_rss_mib": stage1["peak_rss_mib"],
            "stage2_process_peak_rss_mib": stage2["peak_rss_mib"],
            "two_processes_sum_peak_rss_mib": two_sum,
            "two_processes_max_peak_rss_mib": two_max,
            "two_over_one_sum": two_sum / both["peak_rss_mib"],
            "above_imports_one_process_mib": both["peak_rss_mib"] - floor,
            "above_imports_two_processes_mib": two_sum - 2 * floor,
            "backbone_loads": {"one_process": 1, "two_processes": 2},
            "load_s": {"one_process": both["load_s"], "two_processes": stage1["load_s"] + stage2["load_s"]},
            "end_to_end_s": {
                "one_process": both["load_s"] + both["run_s"],
                "two_processes": stage1["load_s"] + stage1["run_s"] + stage2["load_s"] + stage2["run_s"],
            },
        },
    }
    print_table(console, results)
    if args.out is not None:
        from artifactworld_ns.restorer.atomic import atomic_path

        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(results, indent=2) + "\n")
        console.print(f"wrote {args.out}")
    return results


def print_table(console, results: dict) -> None:
    from rich.table import Table

    t, m = results["time"], results["memory"]
    clip = results["clip"]
    title = (
        f"Restorer overhead — {results['preset']} preset{' (UNTRAINED)' if results['untrained'] else ''}, "
        f"{clip['frames']}x{clip['height']}x{clip['width']}, {results['device']}"
    )
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("two-stage restore, wall", f"{t['wall_s']:.3f} s")
    table.add_row("  inside transformer", f"{t['transformer_s']:.3f} s ({t['transformer_calls']} calls)")
    table.add_row("  inside VAE encode/decode", f"{t['vae_s']:.3f} s ({t['vae_calls']} calls)")
    table.add_row("  outside the models", f"{t['outside_models_s']:.3f} s")
    table.add_row("[bold]wall / model time[/]", f"[bold]{t['wall_over_model']:.3f}[/]")
    table.add_section()
    table.add_row("model parameters", f"{m['model_params_mib']:.2f} MiB")
    table.add_row("peak RSS, imports only (floor)", f"{m['imports_only_peak_rss_mib']:.0f} MiB")
    table.add_row(
        "[bold]peak RSS, one process, both stages[/]", f"[bold]{m['one_process_both_stages_peak_rss_mib']:.0f} MiB[/]"
    )
    table.add_row("peak RSS, stage-1 process", f"{m['stage1_process_peak_rss_mib']:.0f} MiB")
    table.add_row("peak RSS, stage-2 process", f"{m['stage2_process_peak_rss_mib']:.0f} MiB")
    table.add_row("[bold]two processes, sum of peaks[/]", f"[bold]{m['two_processes_sum_peak_rss_mib']:.0f} MiB[/]")
    table.add_row("two processes / one process", f"{m['two_over_one_sum']:.2f}x")
    table.add_row("backbone loads (one / two processes)", "1 / 2")
    table.add_row(
        "load time (one / two processes)", f"{m['load_s']['one_process']:.1f} s / {m['load_s']['two_processes']:.1f} s"
    )
    table.add_row(
        "load + restore (one / two processes)",
        f"{m['end_to_end_s']['one_process']:.1f} s / {m['end_to_end_s']['two_processes']:.1f} s",
    )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(BenchmarkArgs, args=argv)
    if args.worker is not None:
        print(json.dumps(run_worker(args)))
        return 0
    run_benchmark(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
