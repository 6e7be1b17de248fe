"""Resuming a run is exact: a resumed run ends where the uninterrupted run of the same length ends.

The demo scene, a restoration round before the checkpoint and one after it, and densification
(splits, duplicates and prunes) on both sides of the checkpoint. Single-threaded, the CPU path is
deterministic, so the comparison is exact (with several threads the rasterizer's backward
accumulates in a varying order and two identical runs already differ; see docs/method.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_trainer
from gsplat.strategy import DefaultStrategy

pytestmark = pytest.mark.slow

CHECKPOINT_STEP, MORE_STEPS = 80, 70
ROUNDS = (40, 120)


def trainer(scene: Path, out: Path, steps: int, timestamp: str, restore_steps, load_dir=None):
    return tiny_trainer(
        scene,
        out,
        steps=steps,
        timestamp=timestamp,
        restore_steps=restore_steps,
        load_dir=load_dir,
        experiment="resume",
        train_view_ratio=0.34,
    )


@pytest.fixture(scope="module")
def runs(small_demo_scene, tmp_path_factory):
    """(uninterrupted, first part, resumed part) and the refinements each did after the checkpoint step."""
    out = tmp_path_factory.mktemp("resume-runs")
    threads = torch.get_num_threads()
    refinements: list[tuple[str, int, str, int]] = []
    current = {"run": ""}
    grow, prune = DefaultStrategy._grow_gs, DefaultStrategy._prune_gs

    def counting_grow(self, params, optimizers, state, step):
        n_dupli, n_split = grow(self, params, optimizers, state, step)
        refinements.extend([(current["run"], step, "duplicate", n_dupli), (current["run"], step, "split", n_split)])
        return n_dupli, n_split

    def counting_prune(self, params, optimizers, state, step):
        n_prune = prune(self, params, optimizers, state, step)
        refinements.append((current["run"], step, "prune", n_prune))
        return n_prune

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ARTIFACTWORLD_CACHE", str(tmp_path_factory.mktemp("cache")))
        patch.setattr(DefaultStrategy, "_grow_gs", counting_grow)
        patch.setattr(DefaultStrategy, "_prune_gs", counting_prune)
        torch.set_num_threads(1)
        try:
            current["run"] = "uninterrupted"
            uninterrupted = trainer(small_demo_scene, out, CHECKPOINT_STEP + MORE_STEPS, "uninterrupted", ROUNDS)
            uninterrupted.train()
            current["run"] = "first"
            first = trainer(small_demo_scene, out, CHECKPOINT_STEP, "first", ROUNDS[:1])
            first.train()
            current["run"] = "resumed"
            resumed = trainer(small_demo_scene, out, MORE_STEPS, "resumed", ROUNDS[1:], load_dir=first.checkpoint_dir)
            resumed.train()
        finally:
            torch.set_num_threads(threads)
    return uninterrupted, first, resumed, refinements


def test_resumed_run_equals_the_uninterrupted_run(runs):
    uninterrupted, first, resumed, refinements = runs
    after = [(kind, n) for run, step, kind, n in refinements if run == "resumed" and step >= CHECKPOINT_STEP]
    # the resumed part really densified: Gaussians were duplicated, split and pruned after the checkpoint
    for kind in ("duplicate", "split", "prune"):
        assert sum(n for k, n in after if k == kind) > 0, kind
    after_checkpoint = [r[1:] for r in refinements if r[0] == "uninterrupted" and r[1] >= CHECKPOINT_STEP]
    assert [r[1:] for r in refinements if r[0] == "resumed"] == after_checkpoint
    expected, got = uninterrupted.pipeline.model.gauss_params, resumed.pipeline.model.gauss_params
    assert first.pipeline.model.num_points < got["means"].shape[0] == expected["means"].shape[0]
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    # the optimizers follow the live parameters, with their Adam moments
    for name, param in got.items():
        optimizer = resumed.optimizers.optimizers[name]
        assert optimizer.param_groups[0]["params"][0] is param
        assert optimizer.state[param]["exp_avg"].shape == param.shape
        reference = uninterrupted.optimizers.optimizers[name].state[expected[name]]["exp_avg"]
        assert torch.equal(optimizer.state[param]["exp_avg"], reference), name
    assert resumed.pipeline.datamanager.draws == uninterrupted.pipeline.datamanager.draws[CHECKPOINT_STEP:]


def test_bank_is_intact_and_later_rounds_still_run(runs):
    uninterrupted, first, resumed, _ = runs
    bank, original = resumed.pipeline.datamanager.bank, first.pipeline.datamanager.bank
    assert [(r.step, r.status) for r in bank.rounds] == [(40, "ok"), (120, "ok")]
    assert [(r.step, r.status) for r in uninterrupted.pipeline.datamanager.bank.rounds] == [(40, "ok"), (120, "ok")]
    assert len(bank) == 2 * len(original) == 60
    for index in range(len(original)):
        assert torch.equal(bank.images[index], original.images[index])
        assert bank.views[index] == original.views[index]
    for index in range(len(bank)):
        assert torch.equal(bank.images[index], uninterrupted.pipeline.datamanager.bank.images[index])
    assert len(list((resumed.base_dir / "bank" / "round_001").glob("frame_*.png"))) == 30


def test_eval_render_and_viewer_frustums_work_on_the_resumed_run(runs, run_cli, tmp_path):
    import json

    _, _, resumed, _ = runs
    config = resumed.base_dir / "config.yml"
    result = run_cli("ns-eval", "--load-config", str(config), "--output-path", str(tmp_path / "eval.json"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert 10 < json.loads((tmp_path / "eval.json").read_text())["results"]["psnr"] < 60
    video = tmp_path / "resumed.mp4"
    result = run_cli(
        "aw-render",
        "interpolate",
        "--load-config",
        str(config),
        "--output-path",
        str(video),
        "--restore",
        "--preset",
        "tiny",
        "--interpolation-steps",
        "4",
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    from artifactworld_ns.restorer.video_io import read_video

    frames, _ = read_video(video)
    assert frames.shape[0] >= 9 and frames.shape[1:] == (72, 96, 3)

    # the viewer's bank frustums: one per banked view of both rounds, with the resumed images
    added = []

    class Scene:
        def add_frame(self, *args, **kwargs):
            pass

        def add_camera_frustum(self, name, image, **kwargs):
            added.append((name, image.shape))

    pipeline = resumed.pipeline
    pipeline.viewer_control.viser_server = type("Server", (), {"scene": Scene()})()
    pipeline.show_bank_checkbox.value = True
    pipeline.show_bank_in_viewer()
    assert len(added) == len(pipeline.datamanager.bank) == 60
