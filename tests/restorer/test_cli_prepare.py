"""aw-prepare: DBA reference videos from GT / artifact pairs; resumable, atomic, split over ranks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import wave_clip

from artifactworld_ns.restorer import cli_prepare
from artifactworld_ns.restorer.batch import list_videos, process_index, shard
from artifactworld_ns.restorer.video_io import read_video, write_video

T, H, W = 17, 64, 96


def clip(frames: int, phase: float, height: int = H, width: int = W) -> torch.Tensor:
    """Distinct per frame and per phase."""
    return wave_clip(frames, height, width, speeds=(0.35, 0.25, 0.1), phases=(phase, 2 * phase, phase))


@pytest.fixture
def dataset(tmp_path: Path) -> dict[str, object]:
    gt_dir, art_dir = tmp_path / "gt", tmp_path / "artifact"
    clips = {}
    for i, name in enumerate(["a.mp4", "b.mp4", "c.mp4"]):
        gt, art = clip(T, phase=0.7 * i), clip(T, phase=0.7 * i + 2.0)
        write_video(gt_dir / name, gt, 24, crf=0)
        write_video(art_dir / name, art, 24, crf=0)
        clips[name] = (gt, art)
    # Bad pairs: lengths differ; artifact unreadable; GT without a partner.
    write_video(gt_dir / "short.mp4", clip(T, 5.0), 24, crf=0)
    write_video(art_dir / "short.mp4", clip(T - 4, 5.0), 24, crf=0)
    write_video(gt_dir / "broken.mp4", clip(T, 6.0), 24, crf=0)
    (art_dir / "broken.mp4").write_bytes(b"definitely not an mp4 file" * 20)
    write_video(gt_dir / "lonely.mp4", clip(T, 7.0), 24, crf=0)
    return {"gt": gt_dir, "art": art_dir, "out": tmp_path / "prepared", "clips": clips}


def run_prepare(dataset: dict, *extra: str) -> int:
    return cli_prepare.main(
        [
            "--gt-dir",
            str(dataset["gt"]),
            "--artifact-dir",
            str(dataset["art"]),
            "--output-dir",
            str(dataset["out"]),
            *extra,
        ]
    )


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def frame_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().mean().item()


def test_prepare_writes_dba_references_and_lists_bad_pairs(dataset: dict, capsys: pytest.CaptureFixture) -> None:
    code = run_prepare(dataset)
    out = capsys.readouterr().out
    assert code == 2  # bad pairs were listed, the good ones were written
    out_dir: Path = dataset["out"]
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.mp4", "b.mp4", "c.mp4"]  # no partial / temp files
    assert "3 written, 0 skipped" in out and "2 failed" in out
    failed_block = out.split("Failed (2):")[1]
    assert "short.mp4: The GT video has 17 frames but the artifact video has 13" in failed_block
    assert "broken.mp4: Cannot read video" in failed_block
    assert "lonely.mp4 is in the GT folder but not in the artifact folder" in out
    assert "Traceback" not in out

    for name, (gt, art) in dataset["clips"].items():
        ref, fps = read_video(out_dir / name)
        # the official layout: T + 8 frames = GT first, artifact 1 .. T-2, GT last x 9
        assert ref.shape == (T + 8, H, W, 3) and fps == pytest.approx(24.0)
        assert frame_err(ref[0], gt[0]) < 0.02 and frame_err(ref[0], art[0]) > 0.1
        for i in range(T - 1, T + 8):
            assert frame_err(ref[i], gt[-1]) < 0.02
        assert frame_err(ref[T - 1], art[T - 1]) > 0.1
        for i in range(1, T - 1):
            assert frame_err(ref[i], art[i]) < 0.02 and frame_err(ref[i], gt[i]) > 0.1


def test_prepare_is_resumable(dataset: dict, capsys: pytest.CaptureFixture) -> None:
    run_prepare(dataset)
    out_dir: Path = dataset["out"]
    mtimes = {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()}
    capsys.readouterr()
    code = run_prepare(dataset)
    out = capsys.readouterr().out
    assert code == 2
    assert "0 written, 3 skipped" in out
    assert {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()} == mtimes
    for name in mtimes:
        assert f"skip {name}" not in out  # skipped quietly: the summary line counts them
    # --overwrite redoes them.
    code = run_prepare(dataset, "--overwrite")
    assert "3 written, 0 skipped" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns != mtimes[p.name] for p in out_dir.iterdir())


def test_prepare_splits_pairs_across_ranks(dataset: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    out_dir: Path = dataset["out"]
    seen: list[set[str]] = []
    before: set[str] = set()
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        run_prepare(dataset)
        now = {p.name for p in out_dir.iterdir()}
        seen.append(now - before)
        before = now
    # Sorted pairs a, b, broken, c, short: rank 0 gets a, broken, short; rank 1 gets b, c.
    assert seen == [{"a.mp4"}, {"b.mp4", "c.mp4"}]


def test_shard_partitions_every_file_once() -> None:
    files = [f"v{i:02d}.mp4" for i in range(11)]
    for world in (1, 2, 3, 4, 16):
        parts = [shard(files, r, world) for r in range(world)]
        flat = [f for part in parts for f in part]
        assert sorted(flat) == files and len(flat) == len(set(flat))
    assert process_index({"RANK": "1", "WORLD_SIZE": "2"}) == (1, 2)
    assert process_index({}) == (0, 1)
    with pytest.raises(ValueError, match="RANK=2 is not in"):
        process_index({"RANK": "2", "WORLD_SIZE": "2"})


def test_list_videos_ignores_hidden_temporaries(tmp_path: Path) -> None:
    for name in ["b.mp4", "a.MP4", ".a.tmp-1.mp4", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir.mp4").mkdir()
    assert [p.name for p in list_videos(tmp_path)] == ["a.MP4", "b.mp4"]


def test_prepare_missing_input_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = cli_prepare.main(
        ["--gt-dir", str(tmp_path / "nope"), "--artifact-dir", str(tmp_path), "--output-dir", str(tmp_path / "o")]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert "The GT folder (--gt-dir)" in captured.err and "does not exist." in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "o").exists()
    (tmp_path / "gt").mkdir()
    code = cli_prepare.main(
        ["--gt-dir", str(tmp_path / "gt"), "--artifact-dir", str(tmp_path), "--output-dir", str(tmp_path)]
    )
    assert code == 2 and "must differ from the GT and artifact folders." in capsys.readouterr().err


def test_prepare_help_documents_every_option(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        cli_prepare.main(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option, doc in [
        ("--gt-dir", "Folder of ground-truth videos"),
        ("--artifact-dir", "Folder of artifact"),
        ("--output-dir", "Folder for the reference videos"),
        ("--crf", "constant rate factor"),
        ("--overwrite", "Rewrite outputs"),
    ]:
        assert option in text and doc in text, option


def test_run_batch_records_outcomes_and_exit_codes(capsys: pytest.CaptureFixture) -> None:
    from rich.console import Console

    from artifactworld_ns.restorer.batch import InputError, Outcome, run_batch

    def work(name: str) -> Outcome:
        if name == "bad[1].mp4":
            raise InputError("It is bad.")
        if name == "bug.mp4":
            raise TypeError("oops")
        return Outcome.SKIPPED if name == "old.mp4" else Outcome.DONE

    console = Console(width=200)
    result = run_batch("tool", ["a.mp4", "bad[1].mp4", "old.mp4"], work, console=console)
    assert (result.done, result.skipped, result.failed) == (["a.mp4"], ["old.mp4"], [("bad[1].mp4", "It is bad.")])
    assert result.report(console) == 2
    out = capsys.readouterr().out
    assert "tool: 1 written, 1 skipped (outputs already present), 1 failed." in out
    assert "  bad[1].mp4: It is bad." in out  # file names are not eaten as rich markup
    result = run_batch("tool", ["bug.mp4", "a.mp4"], work, console=console)
    assert result.done == ["a.mp4"]
    assert result.report(console) == 1  # an unexpected error is not "bad input"
    assert "bug.mp4: unexpected TypeError: oops" in capsys.readouterr().out


@pytest.mark.slow
def test_prepare_under_torchrun_two_processes(dataset: dict) -> None:
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    proc = subprocess.run(
        [
            str(bin_dir / "torchrun"),
            "--standalone",
            "--nproc-per-node",
            "2",
            "--no-python",
            str(bin_dir / "aw-prepare"),
            "--gt-dir",
            str(dataset["gt"]),
            "--artifact-dir",
            str(dataset["art"]),
            "--output-dir",
            str(dataset["out"]),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "250"},
        timeout=120,
    )
    assert proc.returncode != 0  # the bad pairs make a process exit with status 2
    assert sorted(p.name for p in dataset["out"].iterdir()) == ["a.mp4", "b.mp4", "c.mp4"]
    # Each rank reports its own share; together every pair was handled exactly once.
    assert "aw-prepare (rank 0/2): 1 written, 0 skipped (outputs already present), 2 failed." in proc.stdout
    assert "aw-prepare (rank 1/2): 2 written, 0 skipped (outputs already present), 0 failed." in proc.stdout


def test_prepare_refuses_a_pair_that_aw_make_pairs_refuses(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A 10-frame pair would give an 18-frame reference that aw-restore resamples (moving its tail anchor), and
    aw-make-pairs refuses it: aw-prepare refuses it too, with the same sentence."""
    data = {"gt": tmp_path / "gt", "art": tmp_path / "art", "out": tmp_path / "out"}
    write_video(data["gt"] / "ten.mp4", clip(10, 1.0), 24, crf=0)
    write_video(data["art"] / "ten.mp4", clip(10, 2.0), 24, crf=0)
    assert run_prepare(data) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "ten.mp4: Clip length 10 is not 8n+1 (e.g. 17, 25, 33, or 89 as trained)" in out
    assert not list(data["out"].glob("*.mp4"))


def test_prepare_checks_crf_and_output_before_reading(dataset: dict, tmp_path: Path, capsys, monkeypatch) -> None:
    def no_read(*args, **kwargs):
        raise AssertionError("no video may be read before the options are checked")

    monkeypatch.setattr(cli_prepare, "read_video", no_read)
    assert run_prepare(dataset, "--crf", "60") == 2
    assert "--crf must be between 0 (lossless) and 51" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("x")
    assert run_prepare({**dataset, "out": tmp_path / "a_file" / "prepared"}) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"lies under {tmp_path / 'a_file'}, which is a file; choose another --output-dir." in err
