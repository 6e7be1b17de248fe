"""The nine artifact types' recipes (paper Sec. 3.2) and a scene's plan of clips and trainings.

| types | recipe | training run | at render time |
| --- | --- | --- | --- |
| Floaters, Needles, Popping | ``sparse-checkpoint`` (late) | sparse (every K-th frame) | a late checkpoint |
| Blurring | ``sparse-checkpoint`` (early) | sparse | an early checkpoint |
| Cracks | ``cracks`` | sparse | logarithmic compression of the scales |
| Color Outliers | ``color-outliers`` | sparse | Gaussian noise on the SH coefficients |
| Aliasing | ``aliasing`` | sparse | render at 1/f resolution, upsample |
| Dilation | ``dilation`` | sparse with 20 % point dropout | - |
| Ghosting | ``ghosting`` | sparse, a transient composited into a share of the training images | - |

Every clip's checkpoint is drawn at random in ``checkpoint_range`` (paper: 1.5K-12K iterations); the
first ``early_fraction`` of the range is "early" (underfitted: Blurring), the rest "late" (overfitted:
Floaters, Needles, Popping). A scene needs one training run per distinct run named above (at most three:
sparse, dilation, ghosting), each trained up to the latest checkpoint its clips use; the three render-time
perturbations reuse the sparse run. Draws are seeded by ``seed`` and the scene's name, so every shard and
every rerun plans the same clips.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import numpy as np

from artifactworld_ns.data_engine.clips import SparseSplit

RunName = Literal["sparse", "dilation", "ghosting"]
PerturbationKind = Literal["cracks", "color-outliers", "aliasing"]


@dataclass(frozen=True)
class Recipe:
    key: str
    """Unique key, used in clip names."""
    recipe: str
    """The label's ``recipe``."""
    types: tuple[str, ...]
    """The types the recipe induces (label ``types``)."""
    run: RunName
    phase: Literal["early", "late", "any"]
    """Which part of the checkpoint range its checkpoints are drawn from."""
    perturbation: Optional[PerturbationKind] = None


RECIPES: tuple[Recipe, ...] = (
    Recipe("late", "sparse-checkpoint", ("Floaters", "Needles", "Popping"), "sparse", "late"),
    Recipe("early", "sparse-checkpoint", ("Blurring",), "sparse", "early"),
    Recipe("cracks", "cracks", ("Cracks",), "sparse", "any", "cracks"),
    Recipe("color", "color-outliers", ("Color Outliers",), "sparse", "any", "color-outliers"),
    Recipe("aliasing", "aliasing", ("Aliasing",), "sparse", "any", "aliasing"),
    Recipe("dilation", "dilation", ("Dilation",), "dilation", "any"),
    Recipe("ghosting", "ghosting", ("Ghosting",), "ghosting", "any"),
)
"""In the order clips are made; a recipe runs when any of its types is asked for."""


@dataclass
class RecipeConfig:
    """Which artifact types to simulate, how strongly and how often (paper values where the paper gives one)."""

    frame_step: int = 8
    """Train on every K-th kept frame (paper: 8x frame skipping); the others are held out and become clips."""
    checkpoint_range: tuple[int, int] = (1500, 12000)
    """Checkpoints (iterations) are drawn in [MIN, MAX] (paper: 1.5K-12K)."""
    early_fraction: float = 0.25
    """Share of the checkpoint range counted as early (Blurring); the rest is late (our choice)."""
    clips_per_recipe: int = 1
    """Clips per recipe and scene (our choice); recipes reuse the scene's clip windows when there are fewer."""
    crack_strength: float = 1.0
    """Cracks: scales s become s_ref * ln(1 + s / s_ref) with s_ref = median scale / strength (0 = off; our choice)."""
    sh_noise_std: float = 0.5
    """Color Outliers: standard deviation of the Gaussian noise added to every SH coefficient (0 = off; our choice)."""
    aliasing_factor: int = 4
    """Aliasing: render at 1/f of the width and height, then upsample (nearest) to full size (1 = off; our choice)."""
    point_dropout: float = 0.2
    """Dilation: probability that a point is dropped from a training step's render (paper: 20 %)."""
    ghost_fraction: float = 0.5
    """Ghosting: share of the training images, one contiguous stretch, that show the transient (0 = off; our choice)."""
    ghost_radius: float = 0.08
    """Ghosting: the transient sphere's radius, as a fraction of the median camera distance to the scene centre (our choice)."""
    seed: int = 0
    """Seed of every draw (checkpoints, windows, noise), combined with the scene's name."""


@dataclass
class ClipJob:
    """One clip to make: a window of held-out frames rendered from one run's checkpoint, maybe perturbed."""

    name: str
    recipe: Recipe
    checkpoint: int
    """Iterations trained when the clip is rendered."""
    frames: list[int]
    """Capture frame indices."""
    params: dict[str, Any] = field(default_factory=dict)
    """The label's ``params``."""
    strength: float = 0.0
    """The perturbation's strength (``params`` holds it too)."""
    seed: int = 0


@dataclass
class RunPlan:
    """One training run of a scene and the checkpoints its clips are rendered at."""

    name: RunName
    iterations: int
    checkpoints: list[int]
    point_dropout: float = 0.0
    ghost_fraction: float = 0.0


@dataclass
class ScenePlan:
    name: str
    split: SparseSplit
    jobs: list[ClipJob]
    runs: list[RunPlan]

    @property
    def iterations(self) -> int:
        return sum(run.iterations for run in self.runs)


def recipes_for(types: list[str]) -> list[Recipe]:
    """The recipes that induce at least one of ``types`` (canonical names)."""
    wanted = set(types)
    return [recipe for recipe in RECIPES if wanted & set(recipe.types)]


def scene_seed(seed: int, scene: str) -> list[int]:
    """A seed sequence for ``np.random.default_rng`` from the run's seed and the scene's name (same on every shard)."""
    return [int(seed), int.from_bytes(hashlib.sha1(scene.encode()).digest()[:8], "little")]


def early_boundary(config: RecipeConfig) -> int:
    low, high = config.checkpoint_range
    return low + int(round(config.early_fraction * (high - low)))


def draw_checkpoint(rng: np.random.Generator, config: RecipeConfig, phase: str) -> int:
    low, high = config.checkpoint_range
    boundary = early_boundary(config)
    if phase == "early":
        high = max(low, boundary - 1)
    elif phase == "late":
        low = min(boundary, high)
    return int(rng.integers(low, high + 1))


def recipe_strength(recipe: Recipe, config: RecipeConfig) -> tuple[float, dict[str, Any]]:
    """The strength of ``recipe`` and the label parameters that describe it."""
    if recipe.perturbation == "cracks":
        return config.crack_strength, {"perturbation": "log-scale-compression", "strength": config.crack_strength}
    if recipe.perturbation == "color-outliers":
        return config.sh_noise_std, {"perturbation": "sh-noise", "strength": config.sh_noise_std}
    if recipe.perturbation == "aliasing":
        factor = config.aliasing_factor
        return float(factor), {"perturbation": "downsample", "strength": factor, "render_scale": 1.0 / factor}
    if recipe.run == "dilation":
        return config.point_dropout, {"perturbation": "point-dropout", "strength": config.point_dropout}
    if recipe.run == "ghosting":
        return config.ghost_fraction, {
            "perturbation": "transient",
            "strength": config.ghost_fraction,
            "transient_radius": config.ghost_radius,
        }
    return 0.0, {}


def plan_scene(
    name: str,
    split: SparseSplit,
    types: list[str],
    config: RecipeConfig,
    max_iterations: Optional[int] = None,
) -> ScenePlan:
    """The clips and training runs of one scene (no clip when ``split`` has no window)."""
    rng = np.random.default_rng(scene_seed(config.seed, name))
    jobs: list[ClipJob] = []
    if split.windows:
        for recipe in recipes_for(types):
            order = rng.permutation(len(split.windows)).tolist()
            for k in range(config.clips_per_recipe):
                window = split.windows[order[k % len(order)]]
                checkpoint = draw_checkpoint(rng, config, recipe.phase)
                if max_iterations is not None:
                    checkpoint = min(checkpoint, max_iterations)
                strength, params = recipe_strength(recipe, config)
                seed = int(rng.integers(0, 2**31 - 1))
                params = {
                    "frame_step": config.frame_step,
                    "checkpoint_step": checkpoint,
                    "checkpoint_phase": "early" if checkpoint < early_boundary(config) else "late",
                    **params,
                    "seed": seed,
                }
                jobs.append(
                    ClipJob(f"{name}__{recipe.key}_{k:02d}", recipe, checkpoint, window, params, strength, seed)
                )
    runs = []
    for run_name in ("sparse", "dilation", "ghosting"):
        checkpoints = sorted({job.checkpoint for job in jobs if job.recipe.run == run_name})
        if not checkpoints:
            continue
        iterations = max(checkpoints) if max_iterations is None else max_iterations
        runs.append(
            RunPlan(
                run_name,
                iterations,
                checkpoints,
                point_dropout=config.point_dropout if run_name == "dilation" else 0.0,
                ghost_fraction=config.ghost_fraction if run_name == "ghosting" else 0.0,
            )
        )
    return ScenePlan(name, split, jobs, runs)
