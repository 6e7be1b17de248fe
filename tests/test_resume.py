"""Resuming a run is exact: a resumed run ends where the uninterrupted run of the same length ends.

The demo scene, a restoration round before the checkpoint and one after it, and densification
(splits, duplicates and prunes) on both sides of the checkpoint. The first run crashes after its
second round, so its bank holds a round made after the checkpoint it resumes from: the resumed run
must leave that round out and run it again. Single-threaded, the CPU path is deterministic, so the
comparison is exact (with several threads the rasterizer's backward accumulates in a varying order
and two identical runs already differ; see docs/method.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_trainer
from gsplat.strategy import DefaultStrategy
from nerfstudio.utils.rich_utils import CONSOLE

from artifactworld_ns.pipeline import ArtifactWorldPipeline

pytestmark = pytest.mark.slow

CHECKPOINT_STEP = 79
"""The crashed run's last checkpoint (saved after step 79); the resumed part starts at RESUME_STEP."""
RESUME_STEP, MORE_STEPS = CHECKPOINT_STEP + 1, 70
ROUNDS = (40, 120)
CRASH_STEP = 125
"""The first run crashes here: after its round at step 120, with its last checkpoint at step 80."""


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


def crash_at(trainer, step: int) -> None:
    """Make ``trainer`` die at ``step`` as a killed or crashed ``ns-train`` would: no checkpoint after its last save."""
    train_iteration = trainer.train_iteration

    def crashing(current: int):
        if current == step:
            raise RuntimeError(f"simulated crash at step {step}")
        return train_iteration(current)

    trainer.train_iteration = crashing


@pytest.fixture(scope="module")
def runs(small_demo_scene, tmp_path_factory):
    """(uninterrupted, crashed, resumed part, refinements after the checkpoint step, rounds run, resume console)."""
    out = tmp_path_factory.mktemp("resume-runs")
    threads = torch.get_num_threads()
    refinements: list[tuple[str, int, str, int]] = []
    rounds_run: list[tuple[str, int]] = []
    current = {"run": ""}
    grow, prune = DefaultStrategy._grow_gs, DefaultStrategy._prune_gs
    run_round = ArtifactWorldPipeline.run_round

    def counting_grow(self, params, optimizers, state, step):
        n_dupli, n_split = grow(self, params, optimizers, state, step)
        refinements.extend([(current["run"], step, "duplicate", n_dupli), (current["run"], step, "split", n_split)])
        return n_dupli, n_split

    def counting_prune(self, params, optimizers, state, step):
        n_prune = prune(self, params, optimizers, state, step)
        refinements.append((current["run"], step, "prune", n_prune))
        return n_prune

    def counting_round(self, step):
        rounds_run.append((current["run"], step))
        return run_round(self, step)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ARTIFACTWORLD_CACHE", str(tmp_path_factory.mktemp("cache")))
        patch.setattr(DefaultStrategy, "_grow_gs", counting_grow)
        patch.setattr(DefaultStrategy, "_prune_gs", counting_prune)
        patch.setattr(ArtifactWorldPipeline, "run_round", counting_round)
        torch.set_num_threads(1)
        try:
            current["run"] = "uninterrupted"
            uninterrupted = trainer(small_demo_scene, out, RESUME_STEP + MORE_STEPS, "uninterrupted", ROUNDS)
            uninterrupted.train()
            current["run"] = "crashed"
            crashed = trainer(small_demo_scene, out, RESUME_STEP + MORE_STEPS, "crashed", ROUNDS)
            crashed.config.steps_per_save = CHECKPOINT_STEP
            crash_at(crashed, CRASH_STEP)
            with pytest.raises(RuntimeError, match="simulated crash"):
                crashed.train()
            current["run"] = "resumed"
            # the same schedule, as a user reruns the command with --load-dir
            with CONSOLE.capture() as console:
                resumed = trainer(small_demo_scene, out, MORE_STEPS, "resumed", ROUNDS, load_dir=crashed.checkpoint_dir)
            resumed.train()
        finally:
            torch.set_num_threads(threads)
    return uninterrupted, crashed, resumed, refinements, rounds_run, " ".join(console.get().split())


def test_resumed_run_equals_the_uninterrupted_run(runs):
    uninterrupted, crashed, resumed, refinements, _, _ = runs
    assert [p.name for p in crashed.checkpoint_dir.glob("step-*.ckpt")] == [f"step-{CHECKPOINT_STEP:09d}.ckpt"]
    after = [(kind, n) for run, step, kind, n in refinements if run == "resumed" and step >= RESUME_STEP]
    # the resumed part really densified: Gaussians were duplicated, split and pruned after the checkpoint
    for kind in ("duplicate", "split", "prune"):
        assert sum(n for k, n in after if k == kind) > 0, kind
    after_checkpoint = [r[1:] for r in refinements if r[0] == "uninterrupted" and r[1] >= RESUME_STEP]
    assert [r[1:] for r in refinements if r[0] == "resumed"] == after_checkpoint
    expected, got = uninterrupted.pipeline.model.gauss_params, resumed.pipeline.model.gauss_params
    assert got["means"].shape[0] == expected["means"].shape[0]
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    # the optimizers follow the live parameters, with their Adam moments
    for name, param in got.items():
        optimizer = resumed.optimizers.optimizers[name]
        assert optimizer.param_groups[0]["params"][0] is param
        assert optimizer.state[param]["exp_avg"].shape == param.shape
        reference = uninterrupted.optimizers.optimizers[name].state[expected[name]]["exp_avg"]
        assert torch.equal(optimizer.state[param]["exp_avg"], reference), name
    assert resumed.pipeline.datamanager.draws == uninterrupted.pipeline.datamanager.draws[RESUME_STEP:]


def test_bank_keeps_the_rounds_up_to_the_checkpoint_and_reruns_later_ones(runs):
    uninterrupted, crashed, resumed, _, rounds_run, console = runs
    # the crashed run had made the round at 120, after its checkpoint at 79
    assert [(r.step, r.status) for r in crashed.pipeline.datamanager.bank.rounds] == [(40, "ok"), (120, "ok")]
    assert rounds_run == [
        ("uninterrupted", 40),
        ("uninterrupted", 120),
        ("crashed", 40),
        ("crashed", 120),
        ("resumed", 120),
    ]
    assert (
        "the checkpoint is from step 79, so the bank leaves out round 1 (step 120, 30 views) made after it" in console
    )

    bank, expected = resumed.pipeline.datamanager.bank, uninterrupted.pipeline.datamanager.bank
    assert [(r.round, r.step, r.status) for r in bank.rounds] == [(0, 40, "ok"), (1, 120, "ok")]
    assert len(bank) == len(expected) == 60
    for index in range(len(expected)):
        assert bank.views[index] == expected.views[index]
        assert torch.equal(bank.images[index], expected.images[index])
        assert torch.equal(bank.heatmaps[index], expected.heatmaps[index])
    written = json.loads((resumed.base_dir / "bank" / "bank.json").read_text())
    assert [r["step"] for r in written["rounds"]] == [40, 120] and len(written["views"]) == 60
    assert len(list((resumed.base_dir / "bank" / "round_001").glob("frame_*.png"))) == 30

    # the crashed run's files stay where they were
    old = crashed.base_dir / "bank"
    assert [r["step"] for r in json.loads((old / "bank.json").read_text())["rounds"]] == [40, 120]
    assert len(list((old / "round_001").glob("frame_*.png"))) == 30


def test_eval_render_and_viewer_frustums_work_on_the_resumed_run(runs, run_cli, tmp_path):
    import json

    resumed = runs[2]
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
