"""The closed loop (paper Sec. 4.4): sparse views, a restoration round, the bank, resume, failures, the loss."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import conftest
import pytest
import torch

from artifactworld_ns.reference_restorers import IdentityRestorer


def tiny_trainer(scene: Path, out: Path, **options):
    """The loop's runs: a third of the 12 demo views train the model."""
    return conftest.tiny_trainer(scene, out, **{"train_view_ratio": 0.34, **options})


@pytest.fixture(scope="module")
def first_run(small_demo_scene, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("ARTIFACTWORLD_CACHE", str(tmp_path_factory.mktemp("cache")))
    trainer = tiny_trainer(small_demo_scene, tmp_path_factory.mktemp("runs"), steps=80)
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


pytestmark = pytest.mark.slow


def test_sparse_views_round_bank_and_draws(first_run, small_demo_scene):
    datamanager = first_run.pipeline.datamanager
    # 12 views at ratio 0.34 -> 4 training views, 8 eval views, disjoint.
    train_names = {p.name for p in datamanager.train_dataset.image_filenames}
    eval_names = {p.name for p in datamanager.eval_dataset.image_filenames}
    assert len(train_names) == 4 and len(eval_names) == 8 and not train_names & eval_names

    # One round at step 40: 2 clips of 17 frames, the 15 inner frames of each go to the bank.
    assert [(r.step, r.status) for r in datamanager.bank.rounds] == [(40, "ok")]
    assert len(datamanager.bank) == 2 * 15
    bank_dir = first_run.base_dir / "bank"
    index = json.loads((bank_dir / "bank.json").read_text())
    assert len(index["views"]) == 30
    for view in index["views"]:
        assert (bank_dir / view["image"]).is_file() and (bank_dir / view["heatmap"]).is_file()
        rotation = torch.tensor(view["camera_to_world"])[:, :3]
        torch.testing.assert_close(rotation @ rotation.T, torch.eye(3), atol=1e-4, rtol=0)
    assert set(index["rounds"][0]["seconds"]) == {"render", "restore", "inject"}

    # Generated views are drawn after the round and never before it.
    draws = dict(datamanager.draws)
    assert not any(generated for step, generated in draws.items() if step < 40)
    after = [generated for step, generated in draws.items() if step >= 40]
    assert any(after) and not all(after)
    assert list((first_run.base_dir / "nerfstudio_models").glob("step-*.ckpt"))


def test_resume_keeps_the_bank(first_run, small_demo_scene, tmp_path):
    resumed = tiny_trainer(small_demo_scene, tmp_path, steps=10, load_dir=first_run.checkpoint_dir, timestamp="resumed")
    bank = resumed.pipeline.datamanager.bank
    assert len(bank) == 30 and [r.step for r in bank.rounds] == [40]
    assert torch.equal(bank.images[7], first_run.pipeline.datamanager.bank.images[7])
    assert (resumed.base_dir / "bank" / "bank.json").is_file()
    assert len(list((resumed.base_dir / "bank" / "round_000").glob("frame_*.png"))) == 30
    resumed.train()
    steps = [step for step, _ in resumed.pipeline.datamanager.draws]
    assert steps[0] == 80 and steps[-1] == 89, (
        "training went on from the checkpoint (nerfstudio counts --max-num-iterations from there)"
    )
    assert len(resumed.pipeline.datamanager.bank.rounds) == 1, "the round at step 40 is not redone"


def test_restorer_failure_is_logged_and_training_continues(small_demo_scene, tmp_path, monkeypatch):
    trainer = tiny_trainer(small_demo_scene, tmp_path, steps=12, restore_steps=(5,))
    datamanager = trainer.pipeline.datamanager

    def out_of_memory():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")

    monkeypatch.setattr(trainer.pipeline, "_get_restorer", out_of_memory)
    trainer.train()
    assert [r.status.split(":")[0] for r in datamanager.bank.rounds] == ["failed"]
    assert "out of memory" in datamanager.bank.rounds[0].status and len(datamanager.bank) == 0
    assert max(step for step, _ in datamanager.draws) == 11
    assert not any(generated for _, generated in datamanager.draws)


class FailsMidRound(IdentityRestorer):
    """Runs out of memory (a stand-in for CUDA's) at the second clip of its first round, holding a workspace."""

    def __init__(self) -> None:
        self.calls = 0
        self.offloads = 0
        self.progress = None
        self.held: list = []
        """Weak references to what the failed round allocated: its renders and the restorer's workspace."""

    def restore(self, frames, first_anchor, last_anchor, opacity=None, cameras=None):
        self.calls += 1
        if self.calls == 2:
            workspace = torch.empty(8, *frames.shape)  # the latents a 13B restorer would hold on the GPU
            self.held += [weakref.ref(frames), weakref.ref(workspace)]
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")
        return super().restore(frames, first_anchor, last_anchor, opacity)

    def offload(self) -> "FailsMidRound":
        self.offloads += 1
        return self


def test_failed_round_offloads_the_restorer_frees_its_memory_and_training_goes_on(
    small_demo_scene, tmp_path, monkeypatch, capsys
):
    import accelerate.utils

    trainer = tiny_trainer(small_demo_scene, tmp_path, steps=12, restore_steps=(4, 8))
    restorer = trainer.pipeline._restorer = FailsMidRound()
    released = []

    def release_memory(*objects):  # accelerate's: collect, then empty the device cache
        gc.collect()
        released.append([ref() is not None for ref in restorer.held])
        return list(objects)

    monkeypatch.setattr(accelerate.utils, "release_memory", release_memory)
    trainer.train()
    bank = trainer.pipeline.datamanager.bank
    assert [r.status.split(":")[0] for r in bank.rounds] == ["failed", "ok"]
    assert "out of memory" in bank.rounds[0].status
    # the failed round offloaded the restorer, and when the cache was emptied nothing of the round was alive
    assert restorer.offloads == 2
    assert released == [[False, False]]
    # training went on, and the next round (same restorer) filled the bank
    assert len(bank) == 30 and max(step for step, _ in trainer.pipeline.datamanager.draws) == 11
    assert any(generated for step, generated in trainer.pipeline.datamanager.draws if step >= 8)
    # the rounds show their progress as the batch commands do
    printed = capsys.readouterr().out
    assert "round 1: rendering 2 clips" in printed and "round 1: restoring 2 clips" in printed


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(train_view_ratio=0.1), "keeps 1 of 12 views for training"),
        (dict(restore_steps=(200,)), "--pipeline.restore-steps 200 is beyond the last iteration (9)"),
        (dict(clip_frames=20), "Clip length 20 is not 8n+1"),
    ],
)
def test_bad_settings_stop_with_one_sentence(small_demo_scene, tmp_path, capsys, settings, message):
    restore_steps = settings.pop("restore_steps", (5,))
    with pytest.raises(SystemExit) as stopped:
        tiny_trainer(small_demo_scene, tmp_path, steps=10, restore_steps=restore_steps, **settings)
    assert stopped.value.code == 2
    printed = " ".join(capsys.readouterr().out.split())
    assert "error:" in printed and message in printed


def test_resume_directory_without_bank(first_run, small_demo_scene, tmp_path, capsys):
    not_ours = tmp_path / "splatfacto_run" / "nerfstudio_models"
    not_ours.mkdir(parents=True)
    checkpoint = sorted(first_run.checkpoint_dir.glob("step-*.ckpt"))[-1]
    (not_ours / checkpoint.name).write_bytes(checkpoint.read_bytes())
    with pytest.raises(SystemExit):
        tiny_trainer(small_demo_scene, tmp_path, steps=10, restore_steps=(5,), load_dir=not_ours)
    printed = " ".join(capsys.readouterr().out.split())
    assert "has no pseudo-view bank" in printed and "not an ArtifactWorld run" in printed
