"""aw-simulate's recipes on the demo scene: each one's signature against an unperturbed control of the same checkpoint.

Four short splatfacto runs on a small demo scene (the recipes' own training code, nerfstudio's Trainer on the CPU
rasterizer): the sparse run (every 4th frame; its checkpoints feed Blurring, the late types and the three
render-time perturbations), a dense control (every frame), the Dilation run and the Ghosting run. Densification
is off (warm-up longer than the runs), so every run keeps the same Gaussians and they compare point for point.
The render-time tests also check that strength 0 gives back the control exactly, so each fails at strength 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from artifactworld_ns.data_engine.clips import sparse_split
from artifactworld_ns.data_engine.perturbations import compress_log_scales
from artifactworld_ns.data_engine.recipes import RecipeConfig, RunPlan
from artifactworld_ns.data_engine.rendering import HeldOutViews, render_clip
from artifactworld_ns.data_engine.scenes import read_capture
from artifactworld_ns.data_engine.training import train_run, write_run_data
from artifactworld_ns.data_engine.transients import path_footprint, plan_transient
from artifactworld_ns.model import ArtifactWorldModelConfig
from artifactworld_ns.render_io import render_frames

ITERATIONS, EARLY, FRAME_STEP, CLIP = 80, 20, 4, 9
DEFAULTS = RecipeConfig()
PERTURBATIONS = {
    "cracks": DEFAULTS.crack_strength,
    "color-outliers": DEFAULTS.sh_noise_std,
    "aliasing": DEFAULTS.aliasing_factor,
}
OFF = {"cracks": 0.0, "color-outliers": 0.0, "aliasing": 1}


@dataclass
class Snapshot:
    """What a test needs of one checkpoint: its Gaussians' scales and renders of the clip window and the training views."""

    scales: torch.Tensor
    rgb: torch.Tensor
    accumulation: torch.Tensor
    gt: torch.Tensor
    train_rgb: torch.Tensor
    train_gt: torch.Tensor
    perturbed: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    from artifactworld_ns.demo_scene import DemoSceneArgs, write_demo_scene

    return write_demo_scene(DemoSceneArgs(tmp_path_factory.mktemp("sim") / "demo", num_views=24, width=48, height=36))


@pytest.fixture(scope="module")
def capture(scene):
    return read_capture(scene, "demo")


@pytest.fixture(scope="module")
def split(capture):
    return sparse_split(np.ones(len(capture), bool), FRAME_STEP, CLIP)


def train(capture, split, work: Path, *, frame_step=FRAME_STEP, run="sparse", dropout=0.0, ghost=0.0, perturb=False):
    """One run of the recipes' training code; a :class:`Snapshot` at EARLY and ITERATIONS iterations."""
    window = split.windows[0]
    run_split = sparse_split(np.ones(len(capture), bool), frame_step, CLIP)
    transient = plan_transient(capture.camera_to_worlds, split.train, ghost, DEFAULTS.ghost_radius) if ghost else None
    held_out = [f for f in window if f not in run_split.train]
    transforms = write_run_data(capture, run_split, held_out, work / "data", transient)
    frame_of = {str(p.resolve()): i for i, p in enumerate(capture.image_paths)}
    snapshots = {}

    def images(pipeline, frames):
        """Renders and images of ``frames``, from the eval split where held out, else from the training split."""
        dm = pipeline.datamanager
        if all(f in held_out for f in frames):
            views = HeldOutViews(pipeline, frame_of)
            cameras = views.cameras(frames)
            return cameras, views.gt(frames, torch.zeros(3))
        index = {}
        for i, p in enumerate(dm.train_dataset.image_filenames):
            index[frame_of.get(str(Path(p)), int(Path(p).stem) if Path(p).stem.isdigit() else -1)] = i
        ids = [index[f] for f in frames]
        gt = torch.stack([dm.cached_train[i]["image"].float() / 255 for i in ids])
        return dm.train_dataset.cameras[torch.tensor(ids)], gt

    def on_checkpoint(iterations, pipeline):
        cameras, gt = images(pipeline, window)
        rgb, accumulation = render_clip(pipeline, cameras)
        train_cameras, train_gt = images(pipeline, split.train)
        train_rgb, _ = render_frames(pipeline, train_cameras)
        snapshot = Snapshot(
            torch.exp(pipeline.model.gauss_params["scales"].detach().clone()),
            rgb,
            accumulation,
            gt,
            train_rgb,
            train_gt,
        )
        if perturb:
            for kind in PERTURBATIONS:
                for strength in (PERTURBATIONS[kind], OFF[kind]):
                    snapshot.perturbed[kind, strength] = render_clip(pipeline, cameras, kind, strength, seed=3)
        snapshots[iterations] = snapshot

    plan = RunPlan(run, ITERATIONS, [EARLY, ITERATIONS], point_dropout=dropout, ghost_fraction=ghost)
    model = ArtifactWorldModelConfig(warmup_length=10**6, num_downscales=0, sh_degree_interval=20)
    train_run(
        transforms, work, plan, device="cpu", seed=0, schedule_scale=1.0, on_checkpoint=on_checkpoint, model=model
    )
    return snapshots, transient


@pytest.fixture(scope="module")
def sparse(capture, split, tmp_path_factory):
    return train(capture, split, tmp_path_factory.mktemp("sparse"), perturb=True)[0]


def high_frequency_energy(frames: torch.Tensor) -> float:
    """Mean squared Laplacian of the grey frames."""
    g = frames.mean(-1)
    laplacian = 4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]
    return float((laplacian**2).mean())


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


def test_cracks_lower_the_rendered_accumulation(sparse):
    late = sparse[ITERATIONS]
    _, cracked = late.perturbed["cracks", PERTURBATIONS["cracks"]]
    assert float(cracked.mean()) < 0.9 * float(late.accumulation.mean())
    _, off = late.perturbed["cracks", 0.0]
    assert torch.equal(off, late.accumulation)  # strength 0: the control, so the signature is gone


def test_log_compression_shrinks_large_scales_most():
    scales = torch.log(torch.tensor([[0.01, 0.1, 1.0]]).repeat(5, 1))
    compressed = torch.exp(compress_log_scales(scales, 1.0))
    ratio = compressed / torch.exp(scales)
    assert (ratio < 1).all() and ratio[0, 0] > ratio[0, 1] > ratio[0, 2]
    assert torch.allclose(torch.exp(compress_log_scales(scales, 1e-6)), torch.exp(scales), rtol=1e-4)


def test_sh_noise_changes_colour_not_structure(sparse):
    late = sparse[ITERATIONS]
    rgb, accumulation = late.perturbed["color-outliers", PERTURBATIONS["color-outliers"]]
    colour_change = float((rgb - late.rgb).abs().mean())
    structure_change = float((accumulation - late.accumulation).abs().mean())
    assert colour_change > 0.02 and colour_change > 10 * structure_change
    rgb_off, _ = late.perturbed["color-outliers", 0.0]
    assert float((rgb_off - late.rgb).abs().mean()) == 0.0


def test_downsampling_raises_high_frequency_energy(sparse):
    late = sparse[ITERATIONS]
    aliased, _ = late.perturbed["aliasing", PERTURBATIONS["aliasing"]]
    assert aliased.shape == late.rgb.shape
    assert high_frequency_energy(aliased) > 2 * high_frequency_energy(late.rgb)
    off, _ = late.perturbed["aliasing", 1]
    assert torch.equal(off, late.rgb)


def test_early_checkpoints_lower_high_frequency_energy(sparse):
    assert high_frequency_energy(sparse[EARLY].rgb) < 0.75 * high_frequency_energy(sparse[ITERATIONS].rgb)


def test_sparse_late_checkpoint_opens_a_train_held_out_gap(sparse, capture, split, tmp_path_factory):
    dense = train(capture, split, tmp_path_factory.mktemp("dense"), frame_step=1)[0][ITERATIONS]
    late = sparse[ITERATIONS]
    sparse_gap = psnr(late.train_rgb, late.train_gt) - psnr(late.rgb, late.gt)
    dense_gap = psnr(dense.train_rgb, dense.train_gt) - psnr(dense.rgb, dense.gt)
    assert sparse_gap > dense_gap + 0.2


def test_dilation_raises_the_mean_gaussian_scale(sparse, capture, split, tmp_path_factory):
    dilated = train(capture, split, tmp_path_factory.mktemp("dilation"), run="dilation", dropout=DEFAULTS.point_dropout)
    control = sparse[ITERATIONS].scales.mean()
    assert float(dilated[0][ITERATIONS].scales.mean()) > 1.05 * float(control)


def test_ghosting_leaves_residue_along_the_transient_path(sparse, capture, split, tmp_path_factory):
    runs, transient = train(
        capture, split, tmp_path_factory.mktemp("ghost"), run="ghosting", ghost=DEFAULTS.ghost_fraction
    )
    assert transient is not None, "the transient shows in no training image"
    ghost, control = runs[ITERATIONS], sparse[ITERATIONS]
    height, width = control.rgb.shape[1:3]
    window = split.windows[0]
    footprint = np.stack(
        [path_footprint(capture.camera_to_worlds[f], capture.intrinsics(f), height, width, transient) for f in window]
    )
    on_path = torch.from_numpy(footprint > 0.5)
    assert 0.02 < float(on_path.float().mean()) < 0.5
    delta = ghost.rgb - control.rgb
    magenta = (delta[..., 0] + delta[..., 2]) / 2 - delta[..., 1]  # the transient's colour, against the control
    assert float(magenta[on_path].mean()) > 0.005
    assert float(magenta[on_path].mean()) > 3 * abs(float(magenta[~on_path].mean()))
    assert torch.equal(ghost.gt, control.gt)  # the GT stays the clean capture
