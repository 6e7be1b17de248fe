"""Restorer throughput benchmark: frames per second and peak memory per preset and resolution.

Each (preset, resolution) is measured in a fresh subprocess (so peak memory is that run's own): the
restorer is loaded, one untimed two-stage restore warms it up, then ``--repeats`` timed restores of a
synthetic ``--frames``-frame clip run (``ArtifactRestorer.restore``: DBA reference, stage 1 heatmap,
stage 2 AATF). Reported: median wall time, frames per second (clip frames / median wall time), load
time, and peak memory -- peak RSS of the process on the CPU, ``torch.cuda.max_memory_allocated`` on a
GPU, compared with the paper's 46.3 GB (Table 6, one A100, whole scene).

On a CPU the default is the ``tiny`` preset (random weights, UNTRAINED: speed of the machinery only).
On a GPU the default is ``full`` (LTX-Video 13B + the released LoRAs, which must be present locally or
downloadable with ``--download``).

    python benchmarks/restorer_throughput.py --out throughput.json
    python benchmarks/restorer_throughput.py --presets full --resolutions 960x544 768x448 --frames 49
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional

import tyro
from bench_common import moving_pattern, peak_rss_mib

PAPER_PEAK_GB = 46.3
"""Paper Table 6: ArtifactWorld's peak GPU memory per scene on one A100."""


@dataclass
class ThroughputArgs:
    """Restorer throughput (frames/s) and peak memory per preset and resolution; prints a table, writes JSON."""

    out: Optional[Path] = None
    """Write the results as JSON to this file."""
    presets: Optional[List[Literal["tiny", "full"]]] = None
    """Presets to measure (default: 'full' when CUDA is available, else 'tiny')."""
    resolutions: List[str] = field(default_factory=lambda: ["128x96", "256x192"])
    """Clip sizes WIDTHxHEIGHT (the restorer conforms them to multiples of 32 internally)."""
    frames: int = 17
    """Frames of the synthetic clip (8n + 1 keeps DBA exact)."""
    repeats: int = 2
    """Timed restores after one untimed warm-up; the median is reported."""
    heatmap_steps: Optional[int] = None
    """Stage-1 Euler steps (default: the preset's)."""
    processing_max_side: Optional[int] = None
    """Cap on the long side the model sees (default: the preset's; tiny caps at 256)."""
    device: Optional[str] = None
    """Torch device (default: the preset's)."""
    download: bool = False
    """Let the full preset download missing weights (only the needed files)."""
    vae_tiling: bool = False
    """Measure with VAE tiling (preset option vae_tiling)."""
    fp8_transformer_storage: bool = False
    """Measure with fp8 storage of the transformer weights (preset option fp8_transformer_storage)."""
    group_offload: bool = False
    """Measure with the transformer group-offloaded block by block (preset option group_offload)."""
    profile: Optional[str] = None
    """Measure a memory profile: 80gb, 40gb or 24gb (preset option memory_profile; sets the three options above)."""
    restorer_steps: Optional[int] = None
    """Stage-2 Euler steps (fewer-steps option); the official heatmap blend table is scaled to N steps."""
    decay_thresholds: Optional[tuple[float, float]] = None
    """(tau1, tau2) of Eq. 2's threshold form instead of the scaled paper schedule (e.g. 0.3 0.7)."""
    worker: Optional[str] = None
    """Internal: measure one 'PRESET:WxH' in this process and print JSON (used by the subprocesses)."""


def parse_resolution(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"error: resolution {text!r} is not WIDTHxHEIGHT, e.g. 256x192.") from None
    if width < 2 or height < 2:
        raise SystemExit(f"error: resolution {text!r} is too small.")
    return width, height


def synthetic_clip(frames: int, height: int, width: int):
    """A smooth moving pattern with mild noise (the artifact clip) and its clean first/last frames."""
    import torch

    clean = moving_pattern(frames, height, width)
    noisy = (clean + 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    return noisy, clean[0], clean[-1]


def options_overrides(args: ThroughputArgs) -> dict:
    overrides: dict = {}
    if args.vae_tiling:
        overrides["vae_tiling"] = True
    if args.fp8_transformer_storage:
        overrides["fp8_transformer_storage"] = True
    if args.group_offload:
        overrides["group_offload"] = True
    if args.profile is not None:
        overrides["memory_profile"] = args.profile
    if args.restorer_steps is not None:
        overrides["num_inference_steps"] = args.restorer_steps
    if args.decay_thresholds is not None:
        overrides["decay_thresholds"] = tuple(args.decay_thresholds)
    return overrides


def run_worker(args: ThroughputArgs) -> dict:
    import torch

    from artifactworld_ns.restorer.pipeline import ArtifactRestorer
    from artifactworld_ns.restorer.sampler import compute_dtype

    preset, resolution = args.worker.split(":")
    width, height = parse_resolution(resolution)
    overrides = {"show_progress": False}
    for key, value in (
        ("device", args.device),
        ("heatmap_steps", args.heatmap_steps),
        ("processing_max_side", args.processing_max_side),
    ):
        if value is not None:
            overrides[key] = value
    if args.download:
        overrides["allow_download"] = True
    overrides.update(options_overrides(args))
    t0 = time.perf_counter()
    restorer = ArtifactRestorer.from_preset(preset, **overrides)
    load_s = time.perf_counter() - t0
    device = restorer.device
    clip, first, last = synthetic_clip(args.frames, height, width)
    restorer.restore(clip, first, last)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    walls = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = restorer.restore(clip, first, last)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        walls.append(time.perf_counter() - start)
    assert tuple(result.frames.shape) == (args.frames, height, width, 3)
    wall = statistics.median(walls)
    settings = restorer.settings
    out = {
        "preset": preset,
        "untrained": preset == "tiny",
        "resolution": f"{width}x{height}",
        "frames": args.frames,
        "device": str(device),
        "dtype": str(compute_dtype(restorer.transformer)),
        "processing_max_side": settings.processing_max_side,
        "options": {
            k: v
            for k, v in options_overrides(args).items()
            if k in ("vae_tiling", "fp8_transformer_storage", "group_offload", "memory_profile")
        },
        "stage1_steps": settings.heatmap_steps,
        "stage2_steps": settings.num_inference_steps,
        "load_s": load_s,
        "wall_s": wall,
        "wall_s_all": walls,
        "frames_per_s": args.frames / wall,
        "transformer_params": sum(p.numel() for p in restorer.transformer.parameters()),
        "peak_rss_mib": peak_rss_mib(),
    }
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        out["peak_gpu_gib"] = peak / 2**30
        out["peak_gpu_vs_paper"] = (peak / 1e9) / PAPER_PEAK_GB
    return out


def spawn(args: ThroughputArgs, preset: str, resolution: str) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        f"{preset}:{resolution}",
        "--frames",
        str(args.frames),
        "--repeats",
        str(args.repeats),
    ]
    for flag, value in (
        ("--device", args.device),
        ("--heatmap-steps", args.heatmap_steps),
        ("--processing-max-side", args.processing_max_side),
    ):
        if value is not None:
            cmd += [flag, str(value)]
    if args.download:
        cmd += ["--download"]
    if args.vae_tiling:
        cmd += ["--vae-tiling"]
    if args.fp8_transformer_storage:
        cmd += ["--fp8-transformer-storage"]
    if args.group_offload:
        cmd += ["--group-offload"]
    if args.profile is not None:
        cmd += ["--profile", args.profile]
    if args.restorer_steps is not None:
        cmd += ["--restorer-steps", str(args.restorer_steps)]
    if args.decay_thresholds is not None:
        cmd += ["--decay-thresholds", *(str(v) for v in args.decay_thresholds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {preset}:{resolution} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: List[dict]) -> str:
    gpu = any("peak_gpu_gib" in r for r in rows)
    head = "| preset | resolution | frames | device | steps (s1/s2) | load s | restore s | frames/s | peak RSS MiB |"
    sep = "|---|---|---|---|---|---|---|---|---|"
    if gpu:
        head += f" peak GPU GiB | vs paper {PAPER_PEAK_GB} GB |"
        sep += "---|---|"
    lines = [head, sep]
    for r in rows:
        name = r["preset"] + (" (untrained)" if r["untrained"] else "")
        if r.get("options"):
            name += " +" + "+".join(sorted(r["options"]))
        line = (
            f"| {name} | {r['resolution']} | {r['frames']} | {r['device']} | {r['stage1_steps']}/{r['stage2_steps']} | "
            f"{r['load_s']:.1f} | {r['wall_s']:.2f} | {r['frames_per_s']:.2f} | {r['peak_rss_mib']:.0f} |"
        )
        if gpu:
            line += f" {r.get('peak_gpu_gib', float('nan')):.2f} | {r.get('peak_gpu_vs_paper', float('nan')):.2f} |"
        lines.append(line)
    return "\n".join(lines)


def main(args: ThroughputArgs) -> dict:
    import torch

    presets = args.presets or (["full"] if torch.cuda.is_available() else ["tiny"])
    for resolution in args.resolutions:
        parse_resolution(resolution)
    rows = [spawn(args, preset, resolution) for preset in presets for resolution in args.resolutions]
    report = {
        "benchmark": "restorer_throughput",
        "host_cpus": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
        "paper_peak_gb": PAPER_PEAK_GB,
        "results": rows,
    }
    print(table(rows))
    if any(r["untrained"] for r in rows):
        from artifactworld_ns.restorer import untrained_note

        print(f"{untrained_note()} The numbers measure the machinery, not the 13B model.")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    parsed = tyro.cli(ThroughputArgs)
    if parsed.worker:
        print(json.dumps(run_worker(parsed)))
    else:
        main(parsed)
