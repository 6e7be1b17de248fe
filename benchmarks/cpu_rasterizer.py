"""The CPU rasterizer before and after, side by side in one run.

    python benchmarks/cpu_rasterizer.py [--fox ../shared/data/fox] [--iterations 30] [--later 300] [--out cpu_rasterizer.json]

Three code paths: "original" (the rasterizer before issue 13: every pair that passes the alpha rule
is found and composited), "item 1" (front-to-back pair finding with early termination, autograd
backward; the module as of ``BEFORE_REVISION``, read from git) and "now" (this checkout).

1. Forward + backward of ``rasterization_torch`` on (a) the demo scene's ground-truth Gaussians at
   160 x 120 and (b) a fox-like case, 5,000 random large semi-transparent Gaussians at 135 x 240 (what
   early training on a real capture without SfM points looks like): seconds (median of 3), pairs
   visited, and the minimum early termination allows (pairs the compositor weighs plus one stopping
   pair per saturated pixel).
2. Per phase (projection + SH, pair finding, composite forward, backward) of one fox training
   iteration's rasterization (the Gaussians of step 5 and of step ``--later``).
3. Seconds per training iteration of ``artifactworld-tiny`` on a real capture (``--fox``: 15 % of the
   views, random initialisation): the first ``--iterations`` steps, and ``--iterations`` steps from a
   checkpoint at step ``--later`` (trained once with the current code), item 1 against now.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import torch
from rich.console import Console
from rich.table import Table

import artifactworld_ns.model as model_module
import artifactworld_ns.pixel_gaussian_pairs as pair_finding
import artifactworld_ns.torch_rasterizer as rasterizer

BEFORE_REVISION = "d94fae3"  # item 1 landed; the last commit before item 2
REPOSITORY = Path(__file__).resolve().parents[1]


def module_at(revision: str) -> ModuleType:
    """``artifactworld_ns/torch_rasterizer.py`` as of ``revision``, imported under its own name."""
    source = subprocess.run(
        ["git", "show", f"{revision}:artifactworld_ns/torch_rasterizer.py"],
        cwd=REPOSITORY,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    spec = importlib.util.spec_from_loader(f"torch_rasterizer_{revision}", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the source runs
    exec(compile(source, f"torch_rasterizer@{revision}", "exec"), module.__dict__)
    return module


@contextlib.contextmanager
def early_termination_off(module: ModuleType):
    """The original behaviour: every pair is found, none dropped (item 1's module with its cut-off off)."""
    saved = module._LOG_TRANSMITTANCE_DONE, module._CHUNK_ELEMENTS
    module._LOG_TRANSMITTANCE_DONE, module._CHUNK_ELEMENTS = -math.inf, 1 << 22
    try:
        yield
    finally:
        module._LOG_TRANSMITTANCE_DONE, module._CHUNK_ELEMENTS = saved


def code_paths(item1: ModuleType) -> dict:
    return {
        "original": (item1, early_termination_off(item1)),
        "item 1": (item1, contextlib.nullcontext()),
        "now": (rasterizer, contextlib.nullcontext()),
    }


def demo_case() -> dict:
    from artifactworld_ns.demo_scene import focal_length, orbit_camera_to_worlds, procedural_scene

    scene = procedural_scene(0)
    pose = orbit_camera_to_worlds(36)[0] @ torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
    f = focal_length(160)
    return dict(
        scene,
        viewmats=torch.linalg.inv(pose)[None],
        Ks=torch.tensor([[[f, 0, 80.0], [0, f, 60.0], [0, 0, 1.0]]]),
        width=160,
        height=120,
    )


def fox_like_case(n: int = 5000) -> dict:
    g = torch.Generator().manual_seed(0)
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([3.0, 3.0, 2.0]) + torch.tensor([0.0, 0.0, 3.0])
    return dict(
        means=means,
        quats=torch.randn(n, 4, generator=g),
        scales=torch.rand(n, 3, generator=g) * 0.3 + 0.1,
        opacities=torch.rand(n, generator=g) * 0.5 + 0.1,
        colors=torch.rand(n, 3, generator=g),
        viewmats=torch.eye(4)[None],
        Ks=torch.tensor([[[200.0, 0, 120.0], [0, 200.0, 67.5], [0, 0, 1.0]]]),
        width=240,
        height=135,
    )


def minimum_pairs(meta: dict, pairs) -> int:
    """Pairs the compositor gives weight, plus one stopping pair per pixel that saturates."""
    ids = pairs.pixel_ids
    flat_means, conics = meta["means2d"].detach().reshape(-1, 2), meta["conics"].detach().reshape(-1, 3)
    x = (ids % meta["width"]).float() + 0.5
    y = ((ids // meta["width"]) % meta["height"]).float() + 0.5
    d = flat_means[pairs.gaussian_ids] - torch.stack([x, y], -1)
    c = conics[pairs.gaussian_ids]
    sigma = 0.5 * (c[:, 0] * d[:, 0] ** 2 + c[:, 2] * d[:, 1] ** 2) + c[:, 1] * d[:, 0] * d[:, 1]
    alpha = torch.clamp_max(
        meta["opacities"].detach().reshape(-1)[pairs.gaussian_ids] * torch.exp(-sigma), pair_finding.ALPHA_MAX
    )
    log_survival = torch.log1p(-alpha.double())
    running = torch.cumsum(log_survival, 0)
    first = torch.ones_like(ids, dtype=torch.bool)
    first[1:] = ids[1:] != ids[:-1]
    start = torch.cummax(torch.where(first, torch.arange(ids.numel()), 0), 0).values
    weighed = (running - (running - log_survival)[start]) > math.log(pair_finding.TRANSMITTANCE_MIN)
    return int(weighed.sum()) + int(torch.unique(ids[~weighed]).numel())


PARAMS = ("means", "quats", "scales", "opacities", "colors")


def phases(module: ModuleType, case: dict, loss=lambda image, alpha: image.sum() + alpha.sum()) -> dict:
    """Seconds of one forward + backward, split into projection + SH, pair finding, composite, backward."""
    spent = {"find pairs": 0.0, "composite forward": 0.0}
    originals = module.find_pairs, module.composite_pairs

    def timed(name, function):
        def run(*args, **kwargs):
            started = time.perf_counter()
            result = function(*args, **kwargs)
            spent[name] += time.perf_counter() - started
            return result

        return run

    module.find_pairs, module.composite_pairs = (
        timed("find pairs", originals[0]),
        timed("composite forward", originals[1]),
    )
    try:
        leaves = {k: case[k].clone().requires_grad_(True) for k in PARAMS}
        started = time.perf_counter()
        image, alpha, meta = module.rasterization_torch(**{**case, **leaves})
        forward = time.perf_counter() - started
        started = time.perf_counter()
        loss(image, alpha).backward()
        backward = time.perf_counter() - started
    finally:
        module.find_pairs, module.composite_pairs = originals
    out = {"projection + SH": forward - spent["find pairs"] - spent["composite forward"], **spent, "backward": backward}
    return {**out, "total": forward + backward, "pairs": meta["n_pairs"], "meta": meta}


def median_run(module: ModuleType, case: dict, repeats: int, **kwargs) -> dict:
    runs = [phases(module, case, **kwargs) for _ in range(repeats)]
    return sorted(runs, key=lambda r: r["total"])[len(runs) // 2]


def render_case(case: dict, item1: ModuleType, repeats: int = 3) -> dict:
    out = {}
    for label, (module, context) in code_paths(item1).items():
        with context:
            run = median_run(module, case, repeats)
        out[label] = {"seconds": run["total"], "pairs": run["pairs"]}
    meta = run["meta"]
    pairs = pair_finding.find_pairs(
        meta["means2d"].detach(),
        meta["conics"].detach(),
        meta["opacities"].detach(),
        meta["radii"],
        meta["depths"].detach(),
        case["width"],
        case["height"],
        16,
    )
    out["minimum_pairs"] = minimum_pairs(meta, pairs)
    return out


def fox_config(data: Path, iterations: int, timestamp: str):
    from artifactworld_ns.method_configs.artifactworld import artifactworld_tiny_config

    config = artifactworld_tiny_config()
    config.pipeline.datamanager.data = data
    config.pipeline.datamanager.train_view_ratio = 0.15
    config.pipeline.restore_steps = ()
    config.pipeline.model.random_init = True
    config.max_num_iterations = iterations
    config.steps_per_save = config.steps_per_eval_image = 1_000_000  # nothing but training steps in the timing
    config.vis = "tensorboard"
    config.output_dir = Path("/tmp") / "aw-cpu-rasterizer-bench"
    config.timestamp = timestamp
    return config


def fox_trainer(config, module: ModuleType, captured: dict | None = None):
    """A seeded trainer whose model renders with ``module``; ``captured[step]`` keeps rasterizer inputs."""
    from nerfstudio.scripts.train import _set_random_seed

    calls = [0]

    def rasterization(**kwargs):
        if captured is not None and calls[0] in captured:
            captured[calls[0]] = {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in kwargs.items()}
        calls[0] += 1
        return module.rasterization(**kwargs)

    model_module.rasterization = rasterization
    _set_random_seed(config.machine.seed)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def seconds_per_iteration(trainer, iterations: int) -> float:
    started = time.perf_counter()
    trainer.train()
    return (time.perf_counter() - started) / iterations


def training(data: Path, iterations: int, later: int, item1: ModuleType) -> dict:
    """Early: the first ``iterations`` steps from scratch. Later: ``iterations`` steps after a
    checkpoint at step ``later``. Also keeps the rasterizer inputs of steps 5 and ``later``."""
    original = model_module.rasterization
    out, captured = {"early": {}, "later": {}}, {5: None}
    try:
        for label, module in (("item 1", item1), ("now", rasterizer)):
            trainer = fox_trainer(
                fox_config(data, iterations, f"early-{label}"), module, captured if module is rasterizer else None
            )
            out["early"][label] = seconds_per_iteration(trainer, iterations)
        if later:
            config = fox_config(data, later, "to-later")
            config.steps_per_save = later
            later_captured = {0: None}
            fox_trainer(config, rasterizer).train()
            checkpoint = config.get_base_dir() / "nerfstudio_models"
            for label, module in (("item 1", item1), ("now", rasterizer)):
                config = fox_config(data, iterations, f"later-{label}")
                config.load_dir = checkpoint
                trainer = fox_trainer(config, module, later_captured if module is rasterizer else None)
                out["later"][label] = seconds_per_iteration(trainer, iterations)
            captured[later] = later_captured[0]
    finally:
        model_module.rasterization = original
    return out, captured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fox", type=Path, default=Path("../shared/data/fox"))
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--later", type=int, default=300, help="also time steps after this one (0: skip)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    item1 = module_at(BEFORE_REVISION)
    results = {"threads": torch.get_num_threads(), "render": {}}
    results["render"]["demo scene 160x120"] = render_case(demo_case(), item1)
    results["render"]["fox-like 5000 Gaussians 240x135"] = render_case(fox_like_case(), item1)

    table = Table(title="CPU rasterizer: forward + backward (s), pairs visited")
    for column in (
        "case",
        "original",
        "item 1",
        "now",
        "now vs original",
        "now vs item 1",
        "pairs original",
        "pairs now",
        "minimum",
    ):
        table.add_column(column)
    for name, r in results["render"].items():
        s = {k: r[k]["seconds"] for k in ("original", "item 1", "now")}
        table.add_row(
            name,
            f"{s['original']:.3f}",
            f"{s['item 1']:.3f}",
            f"{s['now']:.3f}",
            f"{s['original'] / s['now']:.1f}x",
            f"{s['item 1'] / s['now']:.1f}x",
            f"{r['original']['pairs']:,}",
            f"{r['now']['pairs']:,}",
            f"{r['minimum_pairs']:,}",
        )
    phase_table = None
    if (args.fox / "transforms.json").is_file():
        results["training"], captured = training(args.fox.resolve(), args.iterations, args.later, item1)
        for when, r in results["training"].items():
            if r:
                steps = (
                    f"steps 0-{args.iterations - 1}"
                    if when == "early"
                    else f"steps {args.later}-{args.later + args.iterations - 1}"
                )
                table.add_row(
                    f"fox, artifactworld-tiny, s/iteration, {steps}",
                    "",
                    f"{r['item 1']:.2f}",
                    f"{r['now']:.2f}",
                    "",
                    f"{r['item 1'] / r['now']:.1f}x",
                    "",
                    "",
                    "",
                )
        phase_table = Table(title="One fox step's rasterization, per phase (s, median of 3)")
        columns = ("projection + SH", "find pairs", "composite forward", "backward", "total")
        for column in ("step", "code", *columns, "pairs"):
            phase_table.add_column(column)
        results["phases"] = {}
        for step, inputs in captured.items():
            if inputs is None:
                continue
            loss = lambda image, alpha: (image[..., :3] - 0.5).abs().mean() + alpha.mean()  # noqa: E731
            for label, module in (("item 1", item1), ("now", rasterizer)):
                run = median_run(module, inputs, 3, loss=loss)
                results["phases"][f"step {step}, {label}"] = {k: run[k] for k in (*columns, "pairs")}
                phase_table.add_row(str(step), label, *(f"{run[k]:.3f}" for k in columns), f"{run['pairs']:,}")
    console = Console(width=240)
    console.print(table)
    if phase_table is not None:
        console.print(phase_table)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
