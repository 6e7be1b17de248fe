"""The pseudo-view bank as a resumed run sees it: only the rounds up to its checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from artifactworld_ns.bank import PseudoViewBank, RoundRecord
from artifactworld_ns.pipeline import dropped_rounds_note, resumed_bank_dir


def camera(width: int = 8, height: int = 6) -> dict:
    return {
        "camera_to_world": torch.eye(4)[:3].tolist(),
        "fx": 5.0,
        "fy": 5.0,
        "cx": width / 2,
        "cy": height / 2,
        "width": width,
        "height": height,
    }


def bank_with_rounds(folder: Path) -> PseudoViewBank:
    """Round 0 (step 40, 2 views), a failed round 1 (step 60), round 2 (step 120, 3 views), round 3 (step 160, 1 view)."""
    bank = PseudoViewBank()
    for index, (step, views) in enumerate([(40, 2), (60, 0), (120, 3), (160, 1)]):
        record = RoundRecord(round=index, step=step, status="ok" if views else "failed: OutOfMemoryError: ...")
        if views == 0:
            bank.add_failed_round(folder, record)
            continue
        frames = torch.full((views, 6, 8, 3), index / 4)
        bank.add_round(folder, record, frames, torch.zeros(views, 6, 8), [camera() for _ in range(views)])
    return bank


def test_drop_rounds_after_keeps_the_rounds_and_views_up_to_the_step(tmp_path):
    bank_with_rounds(tmp_path)
    bank = PseudoViewBank.load(tmp_path)
    dropped = bank.drop_rounds_after(119)
    assert [(r.round, r.step) for r in dropped] == [(2, 120), (3, 160)]
    assert [(r.round, r.step) for r in bank.rounds] == [(0, 40), (1, 60)]
    assert len(bank) == len(bank.images) == len(bank.heatmaps) == 2
    assert {view.round for view in bank.views} == {0} and torch.all(bank.images[1] == 0)
    assert bank.next_round == 2, "the dropped round runs again under its own number"
    # the folder is untouched: the old run's files stay
    assert len(list((tmp_path / "round_002").glob("frame_*.png"))) == 3
    assert len(PseudoViewBank.load(tmp_path)) == 6


def test_drop_rounds_after_the_last_round_drops_nothing(tmp_path):
    bank = bank_with_rounds(tmp_path)
    assert bank.drop_rounds_after(160) == [] and len(bank) == 6 and bank.next_round == 4


def test_dropped_rounds_note_is_one_line(tmp_path):
    bank = bank_with_rounds(tmp_path)
    note = dropped_rounds_note(bank.drop_rounds_after(100), 99, tmp_path)
    assert "\n" not in note
    assert note.startswith(
        "the checkpoint is from step 99, so the bank leaves out rounds 2 (step 120, 3 views), 3 (step 160, 1 view)"
    )
    assert f"{tmp_path} keeps its files" in note


def test_resumed_bank_dir_follows_nerfstudios_load_options(tmp_path):
    run = tmp_path / "run"
    assert resumed_bank_dir(run / "nerfstudio_models", None) == run / "bank"
    assert resumed_bank_dir(None, run / "nerfstudio_models" / "step-000000079.ckpt") == run / "bank"
    assert resumed_bank_dir(None, None) is None
