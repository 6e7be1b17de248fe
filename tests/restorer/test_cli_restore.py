"""aw-restore end to end with the tiny (untrained) preset: names, frame counts, resolutions,
resumability, --heatmap-folder, bad files listed at the end, and the file split over ranks."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import wave_clip, write_zero_frame_mp4

from artifactworld_ns.restorer import cli_restore
from artifactworld_ns.restorer.batch import InputError
from artifactworld_ns.restorer.cli_restore import RestoreArgs
from artifactworld_ns.restorer.dba import build_reference_video
from artifactworld_ns.restorer.video_io import read_video, write_video

T = 17  # reference frames: a 9-frame clip in the official T + 8 layout
CLIP = T - 8


def clip(frames: int, height: int, width: int, phase: float) -> torch.Tensor:
    return wave_clip(frames, height, width, phases=(phase, phase, phase))


GOOD = {"a.mp4": (64, 96, 24.0), "b.mp4": (64, 96, 30.0), "c.mp4": (63, 95, 24.0)}  # name: (height, width, fps)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "aw-cache"


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> None:
    monkeypatch.setenv("ARTIFACTWORLD_CACHE", str(cache_dir))
    monkeypatch.setenv("COLUMNS", "250")
    for var in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "ARTIFACTWORLD_WEIGHTS_ROOT",
        "ARTIFACTWORLD_LTX_MAIN_ROOT",
        "ARTIFACTWORLD_LTX_097_DEV_ROOT",
    ):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("references")
    for i, (name, (h, w, fps)) in enumerate(GOOD.items()):
        artifact = clip(CLIP, h, w, phase=float(i))  # what aw-prepare writes: the official T + 8 layout
        write_video(folder / name, build_reference_video(artifact, artifact[0], artifact[-1]), fps, crf=0)
    (folder / "bad.mp4").write_bytes(b"not a video" * 50)
    write_zero_frame_mp4(folder / "zero.mp4")
    return folder


class SpyRestorer:
    """Delegates to the real tiny restorer and records which stages ran."""

    def __init__(self, real) -> None:
        self.real = real
        self.calls: list[tuple[str, bool]] = []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def predict_heatmap(self, reference):
        self.calls.append(("predict_heatmap", False))
        return self.real.predict_heatmap(reference)

    def restore_reference(self, reference, heatmap=None, opacity=None):
        self.calls.append(("restore_reference", heatmap is not None))
        return self.real.restore_reference(reference, heatmap=heatmap, opacity=opacity)


@pytest.fixture(scope="module")
def tiny_restorer(cache_dir: Path):
    """One real tiny restorer for the module, built through the CLI's own loader and flag mapping."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARTIFACTWORLD_CACHE", str(cache_dir))
        args = RestoreArgs(input_folder=Path("."), output_folder=Path("."), preset="tiny", heatmap_steps=2)
        restorer = cli_restore.load_restorer(args)
    assert restorer.settings.heatmap_steps == 2 and restorer.settings.num_inference_steps == 8
    assert restorer.device.type == "cpu"
    return restorer


@pytest.fixture
def spy(tiny_restorer, monkeypatch: pytest.MonkeyPatch) -> SpyRestorer:
    spy = SpyRestorer(tiny_restorer)

    def load(args, progress=None):
        assert args.preset == "tiny"
        tiny_restorer.progress = progress
        return spy

    monkeypatch.setattr(cli_restore, "load_restorer", load)
    return spy


def no_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def load(args, progress=None):
        raise AssertionError("the restorer must not be loaded")

    monkeypatch.setattr(cli_restore, "load_restorer", load)


def restore(inputs: Path, out: Path, *extra: str) -> int:
    return cli_restore.main(
        ["--input-folder", str(inputs), "--output-folder", str(out), "--preset", "tiny", "--heatmap-steps", "2", *extra]
    )


def check_outputs(folder: Path, names: set[str]) -> None:
    """Heatmaps keep the reference's T + 8 frames (as the official stage 1 writes them); samples are trimmed to T;
    each output has its settings beside it."""
    sidecars = {Path(name).stem + ".settings.json" for name in names}
    assert {p.name for p in folder.iterdir()} == names | sidecars  # nothing else: no temp or partial files
    for name in names:
        frames, fps = read_video(folder / name)
        h, w, in_fps = GOOD[name]
        assert frames.shape == (T if folder.name == "heatmaps" else CLIP, h, w, 3), name
        assert fps == pytest.approx(in_fps)


@pytest.mark.slow
def test_restore_end_to_end_resume_and_bad_files(
    inputs: Path, tmp_path: Path, spy: SpyRestorer, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    code = restore(inputs, out)
    text = capsys.readouterr().out
    assert code == 2  # two bad inputs, listed at the end
    assert "UNTRAINED" in text
    assert {p.name for p in out.iterdir()} == {"heatmaps", "samples"}
    check_outputs(out / "heatmaps", set(GOOD))
    check_outputs(out / "samples", set(GOOD))
    heat, _ = read_video(out / "heatmaps" / "a.mp4")
    assert heat[-9:].max() < 0.02 and heat[:-9].max() > 0.1  # the official hand-off: last 9 frames black
    assert "3 written, 0 skipped" in text and "2 failed" in text
    failed = text.split("Failed (2):")[1]
    assert re.search(r"bad\.mp4: Cannot read video \S*bad\.mp4: .*\.", failed)
    assert "zero.mp4: Cannot read video" in failed and "contains no video frames." in failed
    assert "Traceback" not in text
    assert sorted(spy.calls) == sorted([("predict_heatmap", False), ("restore_reference", True)] * 3)

    # A second run skips every finished file and does not even load the restorer.
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}
    no_load(monkeypatch)
    code = restore(inputs, out)
    text = capsys.readouterr().out
    assert code == 2 and "0 written, 3 skipped" in text
    assert not any(f"skip {name}" in text for name in GOOD)  # same settings: the summary line says it
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")} == mtimes

    # An interrupted run (sample missing, heatmap present) resumes with stage 2 only.
    (out / "samples" / "b.mp4").unlink()
    spy2 = SpyRestorer(spy.real)
    monkeypatch.setattr(cli_restore, "load_restorer", lambda args, progress=None: spy2)
    code = restore(inputs, out)
    text = capsys.readouterr().out
    assert "1 written, 2 skipped" in text
    assert spy2.calls == [("restore_reference", True)]
    check_outputs(out / "samples", set(GOOD))
    assert (out / "heatmaps" / "b.mp4").stat().st_mtime_ns == mtimes[out / "heatmaps" / "b.mp4"]


@pytest.mark.slow
def test_restore_with_heatmap_folder_runs_stage2_only(
    inputs: Path, tmp_path: Path, spy: SpyRestorer, capsys: pytest.CaptureFixture
) -> None:
    heat_dir = tmp_path / "stage1"
    assert restore(inputs, tmp_path / "s1", "--heatmap-only") == 2
    check_outputs(tmp_path / "s1" / "heatmaps", set(GOOD))
    assert not (tmp_path / "s1" / "samples").exists()
    assert spy.calls == [("predict_heatmap", False)] * 3
    # The release's layout: heatmaps straight in the folder; one is missing.
    heat_dir.mkdir()
    for name in ("a.mp4", "c.mp4"):
        (tmp_path / "s1" / "heatmaps" / name).rename(heat_dir / name)
    spy.calls.clear()
    capsys.readouterr()
    code = restore(inputs, tmp_path / "s2", "--heatmap-folder", str(heat_dir))
    text = capsys.readouterr().out
    assert code == 2
    assert spy.calls == [("restore_reference", True)] * 2
    assert {p.name for p in (tmp_path / "s2").iterdir()} == {"samples"}  # heatmaps were given, not written
    check_outputs(tmp_path / "s2" / "samples", {"a.mp4", "c.mp4"})
    assert f"b.mp4: No heatmap video b.mp4 in {heat_dir}" in text


@pytest.mark.slow
def test_restore_splits_files_across_ranks(
    inputs: Path, tmp_path: Path, spy: SpyRestorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "split"
    produced: list[set[str]] = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        before = set(p.name for p in (out / "heatmaps").glob("*.mp4")) if (out / "heatmaps").exists() else set()
        restore(inputs, out, "--heatmap-only")
        produced.append({p.name for p in (out / "heatmaps").glob("*.mp4")} - before)
    # Sorted: a, b, bad, c, zero -> rank 0: a, bad, zero; rank 1: b, c.
    assert produced == [{"a.mp4"}, {"b.mp4", "c.mp4"}]
    assert len(spy.calls) == 3


def test_missing_or_empty_input_folder(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    no_load(monkeypatch)
    assert restore(tmp_path / "nope", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "The input folder (--input-folder)" in err and "does not exist." in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    assert restore(tmp_path / "empty", tmp_path / "out") == 2
    assert "contains no .mp4 videos." in capsys.readouterr().err
    assert restore(tmp_path / "empty", tmp_path / "out", "--heatmap-folder", str(tmp_path / "nohm")) == 2
    assert "heatmap folder (--heatmap-folder)" in capsys.readouterr().err
    assert restore(tmp_path / "empty", tmp_path / "out", "--steps", "0") == 2
    assert "--steps must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_overrides_map_cli_flags_to_preset_fields() -> None:
    args = RestoreArgs(
        Path("i"),
        Path("o"),
        preset="full",
        weights_root=Path("/w"),
        steps=8,
        heatmap_steps=3,
        seed=5,
        device="cuda:3",
        download=True,
        processing_max_side=512,
    )
    assert cli_restore.restorer_overrides(args) == {
        "weights_root": "/w",
        "num_inference_steps": 8,
        "heatmap_steps": 3,
        "seed": 5,
        "device": "cuda:3",
        "allow_download": True,
        "processing_max_side": 512,
        "processing_size": None,
    }
    tiny = cli_restore.restorer_overrides(RestoreArgs(Path("i"), Path("o"), preset="tiny"))
    assert tiny == {}  # the tiny preset keeps its own (cpu) device
    full = cli_restore.restorer_overrides(RestoreArgs(Path("i"), Path("o"), preset="full"))
    assert full == {"device": "cuda:0" if torch.cuda.is_available() else "cpu"}


def test_schedule_mismatch_is_reported_before_the_batch() -> None:
    table = SimpleNamespace(rows=((1.0, 0.0, 0.0),) * 8)
    cli_restore.check_schedule(SimpleNamespace(settings=SimpleNamespace(schedule=table, num_inference_steps=8)))
    with pytest.raises(InputError, match="Stage 2 runs 4 steps but its heatmap blend table has 8 rows"):
        cli_restore.check_schedule(SimpleNamespace(settings=SimpleNamespace(schedule=table, num_inference_steps=4)))


def test_restore_help_documents_every_option(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        cli_restore.main(["--help"])
    assert info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    source = inspect.getsource(RestoreArgs)
    documented = dict(re.findall(r"\n    (\w+): [^\n]+\n    \"\"\"([^\n]+)\"\"\"", source))
    names = [f for f in RestoreArgs.__dataclass_fields__]
    assert set(documented) == set(names)  # every field has a docstring
    for name in names:
        assert f"--{name.replace('_', '-')}" in help_text
        first_words = " ".join(documented[name].split()[:5])
        assert first_words in help_text, name


class EchoRestorer:
    """Stands in for the restorer (no compute): black heatmap, the reference itself as the restored clip."""

    def predict_heatmap(self, reference):
        return torch.zeros_like(reference)

    def restore_reference(self, reference, heatmap=None, opacity=None):
        return SimpleNamespace(frames=reference.clone())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--crf", "-5"], "--crf must be between 0 (lossless) and 51 (x264's range; 18 is visually lossless), got -5."),
        (["--processing-max-side", "0"], "--processing-max-side must be at least 32 (the model works on multiples"),
        (["--device", "cuda"], "--device cuda needs a CUDA GPU and this machine has none that torch can use"),
        (["--device", "gpu0"], "--device 'gpu0' is not a torch device; use e.g. cpu, cuda or cuda:1."),
        (["--heatmap-steps", "0"], "--heatmap-steps must be at least 1, got 0."),
    ],
)
def test_bad_options_are_refused_before_anything_loads(
    extra, message, inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    no_load(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = restore(inputs, tmp_path / "out", *extra)
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and message in err and "Traceback" not in err
    assert err.count("error:") == 1  # one sentence, once (not once per file)
    assert not (tmp_path / "out").exists()


def test_full_disk_is_named_before_any_compute(inputs: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    from artifactworld_ns.restorer import option_checks

    no_load(monkeypatch)
    monkeypatch.setattr(option_checks.shutil, "disk_usage", lambda path: SimpleNamespace(free=5 * 2**20))
    assert restore(inputs, tmp_path / "out") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"The disk holding {tmp_path / 'out'} is full (no space left: 5 MiB free" in err
    assert "choose another --output-folder" in err


def test_disk_full_while_writing_stops_the_batch_in_one_sentence(
    inputs: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    import errno

    monkeypatch.setattr(cli_restore, "load_restorer", lambda args, progress=None: EchoRestorer())

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(cli_restore, "write_video", full)
    assert restore(inputs, tmp_path / "out") == 2
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert "The disk is full (no space left on device) while writing" in err and "Traceback" not in err
    assert err.count("error:") == 1 and "failed" not in captured.out  # the batch stopped: every file would fail


def test_ffmpeg_out_of_space_is_named_a_full_disk(tmp_path: Path, monkeypatch) -> None:
    import errno
    import os

    from artifactworld_ns.restorer import video_io

    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\ncat > /dev/null\necho 'Error writing trailer: No space left on device' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(video_io, "find_ffmpeg", lambda: str(fake))
    with pytest.raises(OSError) as err:
        write_video(tmp_path / "o" / "x.mp4", torch.zeros(2, 8, 8, 3), 24)
    assert err.value.errno == errno.ENOSPC
    assert not [p for p in os.listdir(tmp_path / "o")], "no partial or temporary file"


def test_a_one_frame_input_is_refused_once_and_a_load_failure_stops_the_batch(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    folder = tmp_path / "in"
    write_video(folder / "one.mp4", clip(1, 64, 96, 0.0), 24)
    write_video(folder / "two.mp4", clip(17, 64, 96, 0.0), 24)
    monkeypatch.setattr(cli_restore, "load_restorer", lambda args, progress=None: EchoRestorer())
    assert restore(folder, tmp_path / "out") == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "one.mp4: one.mp4 has 1 frame; the restorer needs a clip of at least 2 frames" in out
    assert "resampled" not in out and "1 written" in out

    def broken(args, progress=None):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    monkeypatch.setattr(cli_restore, "load_restorer", broken)
    assert restore(folder, tmp_path / "out2") == 2
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert "The 'tiny' restorer could not be loaded (RuntimeError: CUDA error: no kernel image" in err
    assert err.count("could not be loaded") == 1 and "failed two.mp4" not in captured.out  # once, not per file


def test_restore_help_names_what_the_profiles_choose(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        cli_restore.main(["--help"])
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "chooses transformer offload and VAE tiling (bf16 weights in all three)" in text
    assert "fp8" not in text  # no profile stores the weights in fp8
