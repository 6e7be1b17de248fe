"""The CPU rasterizer with and without early termination, in one run.

    python benchmarks/cpu_rasterizer.py [--fox ../shared/data/fox] [--iterations 30] [--out cpu_rasterizer.json]

1. Forward + backward of ``rasterization_torch`` on (a) the demo scene's ground-truth Gaussians at
   160 x 120 and (b) a fox-like case, 5,000 random large semi-transparent Gaussians at 135 x 240 (what
   early training on a real capture without SfM points looks like): seconds, pairs visited, and the
   minimum early termination allows (pairs the compositor weighs plus one stopping pair per saturated
   pixel), "before" (every pair that passes the alpha rule, the previous code path) and "after".
2. Seconds per training iteration of ``artifactworld-tiny`` on a real capture (``--fox``: 15 % of
   the views, random initialisation), before and after, when the folder exists.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import artifactworld_ns.torch_rasterizer as rasterizer


@contextlib.contextmanager
def early_termination(enabled: bool):
    """``enabled=False`` restores the previous behaviour: every pair is found, none dropped."""
    saved = rasterizer._LOG_TRANSMITTANCE_DONE, rasterizer._CHUNK_ELEMENTS
    if not enabled:
        rasterizer._LOG_TRANSMITTANCE_DONE, rasterizer._CHUNK_ELEMENTS = -math.inf, 1 << 22
    try:
        yield
    finally:
        rasterizer._LOG_TRANSMITTANCE_DONE, rasterizer._CHUNK_ELEMENTS = saved


def demo_case() -> dict:
    from artifactworld_ns.demo_scene import focal_length, orbit_camera_to_worlds, procedural_scene

    scene = procedural_scene(0)
    pose = orbit_camera_to_worlds(36)[0] @ torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
    f = focal_length(160)
    return dict(scene, viewmats=torch.linalg.inv(pose)[None], Ks=torch.tensor([[[f, 0, 80.0], [0, f, 60.0], [0, 0, 1.0]]]), width=160, height=120)


def fox_like_case(n: int = 5000) -> dict:
    g = torch.Generator().manual_seed(0)
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([3.0, 3.0, 2.0]) + torch.tensor([0.0, 0.0, 3.0])
    return dict(
        means=means, quats=torch.randn(n, 4, generator=g), scales=torch.rand(n, 3, generator=g) * 0.3 + 0.1,
        opacities=torch.rand(n, generator=g) * 0.5 + 0.1, colors=torch.rand(n, 3, generator=g),
        viewmats=torch.eye(4)[None], Ks=torch.tensor([[[200.0, 0, 120.0], [0, 200.0, 67.5], [0, 0, 1.0]]]), width=240, height=135,
    )


def minimum_pairs(meta: dict, pairs: rasterizer.PixelGaussianPairs) -> int:
    """Pairs the compositor gives weight, plus one stopping pair per pixel that saturates."""
    ids = pairs.pixel_ids
    flat_means, conics = meta["means2d"].detach().reshape(-1, 2), meta["conics"].detach().reshape(-1, 3)
    x = (ids % meta["width"]).float() + 0.5
    y = ((ids // meta["width"]) % meta["height"]).float() + 0.5
    d = flat_means[pairs.gaussian_ids] - torch.stack([x, y], -1)
    c = conics[pairs.gaussian_ids]
    sigma = 0.5 * (c[:, 0] * d[:, 0] ** 2 + c[:, 2] * d[:, 1] ** 2) + c[:, 1] * d[:, 0] * d[:, 1]
    alpha = torch.clamp_max(meta["opacities"].detach().reshape(-1)[pairs.gaussian_ids] * torch.exp(-sigma), rasterizer.ALPHA_MAX)
    log_survival = torch.log1p(-alpha.double())
    running = torch.cumsum(log_survival, 0)
    first = torch.ones_like(ids, dtype=torch.bool)
    first[1:] = ids[1:] != ids[:-1]
    start = torch.cummax(torch.where(first, torch.arange(ids.numel()), 0), 0).values
    weighed = (running - (running - log_survival)[start]) > math.log(rasterizer.TRANSMITTANCE_MIN)
    return int(weighed.sum()) + int(torch.unique(ids[~weighed]).numel())


def render_case(case: dict, repeats: int = 3) -> dict:
    out = {}
    for label, enabled in (("before", False), ("after", True)):
        with early_termination(enabled):
            times = []
            for _ in range(repeats):
                leaves = {k: case[k].clone().requires_grad_(True) for k in ("means", "quats", "scales", "opacities", "colors")}
                started = time.perf_counter()
                image, alpha, meta = rasterizer.rasterization_torch(**{**case, **leaves})
                (image.sum() + alpha.sum()).backward()
                times.append(time.perf_counter() - started)
            out[label] = {"seconds": sorted(times)[len(times) // 2], "pairs": meta["n_pairs"]}
            if enabled:
                pairs = rasterizer.find_pairs(meta["means2d"].detach(), meta["conics"].detach(), meta["opacities"].detach(), meta["radii"],
                                              meta["depths"].detach(), case["width"], case["height"], 16)
                out["minimum_pairs"] = minimum_pairs(meta, pairs)
    return out


def training_iteration_seconds(data: Path, iterations: int) -> dict:
    from nerfstudio.scripts.train import _set_random_seed

    from artifactworld_ns.method_configs.artifactworld import artifactworld_tiny_config

    out = {}
    for label, enabled in (("before", False), ("after", True)):
        config = artifactworld_tiny_config()
        config.pipeline.datamanager.data = data
        config.pipeline.datamanager.train_view_ratio = 0.15
        config.pipeline.datamanager.restore_steps = ()
        config.pipeline.model.random_init = True
        config.max_num_iterations = iterations
        config.vis = "tensorboard"
        config.output_dir = Path("/tmp") / "aw-cpu-rasterizer-bench"
        config.timestamp = label
        _set_random_seed(config.machine.seed)
        with early_termination(enabled):
            trainer = config.setup(local_rank=0, world_size=1)
            trainer.setup()
            started = time.perf_counter()
            trainer.train()
            out[label] = (time.perf_counter() - started) / iterations
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fox", type=Path, default=Path("../shared/data/fox"))
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = {"demo scene 160x120": render_case(demo_case()), "fox-like 5000 Gaussians 240x135": render_case(fox_like_case())}
    table = Table(title="CPU rasterizer: forward + backward, before / after early termination")
    for column in ("case", "s before", "s after", "pairs before", "pairs after", "minimum pairs"):
        table.add_column(column)
    for name, r in results.items():
        table.add_row(name, f"{r['before']['seconds']:.3f}", f"{r['after']['seconds']:.3f}", f"{r['before']['pairs']:,}",
                      f"{r['after']['pairs']:,}", f"{r['minimum_pairs']:,}")
    if (args.fox / "transforms.json").is_file():
        results["fox training s/iteration"] = training_iteration_seconds(args.fox.resolve(), args.iterations)
        r = results["fox training s/iteration"]
        table.add_row(f"fox: artifactworld-tiny s/iteration ({args.iterations} its)", f"{r['before']:.2f}", f"{r['after']:.2f}", "", "", "")
    Console().print(table)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
