"""restorer.video_io: ffmpeg round trips, exact sizes and frame counts, atomic writes, clear errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from conftest import wave_clip, write_zero_frame_mp4

from artifactworld_ns.restorer.video_io import (
    VideoReadError,
    VideoWriteError,
    find_ffmpeg,
    gray_to_rgb,
    probe_video,
    read_video,
    rgb_to_gray,
    write_video,
)


def smooth_clip(frames: int, height: int, width: int, phase: float = 0.0) -> torch.Tensor:
    return wave_clip(
        frames,
        height,
        width,
        freqs=(2.0, 2.5, 0.0),
        phases=(phase, phase, 0.0),
        blue=lambda x, y, t: (0.2 + 0.6 * (x + y) / 2 + 0.02 * t).clamp(0, 1),
    )


def test_round_trip_keeps_frames_size_and_fps(tmp_path: Path) -> None:
    clip = smooth_clip(17, 64, 96)
    out = write_video(tmp_path / "clip.mp4", clip, 24.0, crf=0)
    assert out == tmp_path / "clip.mp4"
    frames, fps = read_video(out)
    assert frames.shape == (17, 64, 96, 3)
    assert frames.dtype == torch.float32
    assert fps == pytest.approx(24.0)
    assert 0.0 <= frames.min() and frames.max() <= 1.0
    err = (frames - clip).abs()
    assert err.mean() < 0.01, err.mean()
    # Frame order is preserved: each decoded frame is closest to its own source frame.
    dists = torch.cdist(frames.flatten(1), clip.flatten(1))
    assert torch.equal(dists.argmin(dim=1), torch.arange(17))


def test_odd_resolution_is_kept_exactly(tmp_path: Path) -> None:
    clip = smooth_clip(9, 63, 95)
    write_video(tmp_path / "odd.mp4", clip, 30.0)
    info = probe_video(tmp_path / "odd.mp4")
    assert (info.width, info.height, info.fps) == (95, 63, pytest.approx(30.0))
    frames, _ = read_video(tmp_path / "odd.mp4")
    assert frames.shape == (9, 63, 95, 3)
    assert (frames - clip).abs().mean() < 0.02


def test_uint8_input_fractional_fps_and_quality_setting(tmp_path: Path) -> None:
    clip = smooth_clip(5, 32, 32)
    as_uint8 = (clip * 255).round().to(torch.uint8)
    write_video(tmp_path / "u8.mp4", as_uint8, 12.5, crf=0)
    frames, fps = read_video(tmp_path / "u8.mp4")
    assert fps == pytest.approx(12.5)
    assert (frames - clip).abs().mean() < 0.01
    # A lower quality setting gives a smaller file: crf is passed through.
    noisy = torch.rand(5, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    write_video(tmp_path / "q0.mp4", noisy, 24, crf=0)
    write_video(tmp_path / "q40.mp4", noisy, 24, crf=40)
    assert (tmp_path / "q40.mp4").stat().st_size < (tmp_path / "q0.mp4").stat().st_size / 2


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "v.mp4"
    write_video(target, smooth_clip(3, 32, 32), 24)
    before = target.read_bytes()
    # A failing encode (invalid x264 preset) raises, keeps the old file, and cleans its temp file.
    with pytest.raises(VideoWriteError, match="could not write"):
        write_video(target, smooth_clip(3, 32, 32, phase=1.0), 24, preset="no-such-preset")
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["v.mp4"]
    # A failing encode of a new file leaves nothing at all.
    with pytest.raises(VideoWriteError):
        write_video(tmp_path / "new.mp4", smooth_clip(3, 32, 32), 24, preset="no-such-preset")
    assert not (tmp_path / "new.mp4").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["sub"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "does not exist"),
        (b"", "empty"),
        (b"this is not a video at all" * 10, "Invalid data"),
    ],
)
def test_unreadable_files_raise_one_sentence(tmp_path: Path, content: bytes | None, reason: str) -> None:
    path = tmp_path / "bad.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoReadError) as info:
        read_video(path)
    message = str(info.value)
    assert reason in message
    assert message.startswith(f"Cannot read video {path}") and message.endswith(".") and "\n" not in message
    assert isinstance(info.value, ValueError)


def test_zero_frame_video_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "zero.mp4"
    write_zero_frame_mp4(path)
    assert path.stat().st_size > 0
    with pytest.raises(VideoReadError, match="no video frames"):
        read_video(path)


def test_invalid_frames_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        write_video(tmp_path / "a.mp4", torch.zeros(3, 32, 32), 24)
    with pytest.raises(ValueError, match="zero frames"):
        write_video(tmp_path / "a.mp4", torch.zeros(0, 32, 32, 3), 24)
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "a.mp4", torch.zeros(2, 33, 32, 3), 24, pix_fmt="yuv420p")
    assert list(tmp_path.iterdir()) == []


def test_heatmap_gray_round_trip(tmp_path: Path) -> None:
    heat = smooth_clip(9, 32, 64)[..., 0]
    rgb = gray_to_rgb(heat)
    assert rgb.shape == (9, 32, 64, 3) and torch.equal(rgb[..., 2], heat)
    write_video(tmp_path / "h.mp4", rgb, 24, crf=0)
    back = rgb_to_gray(read_video(tmp_path / "h.mp4")[0])
    assert back.shape == heat.shape
    assert (back - heat).abs().max() < 0.02


def test_find_ffmpeg_falls_back_to_imageio(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import imageio_ffmpeg

    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_ffmpeg() == imageio_ffmpeg.get_ffmpeg_exe()
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_ffmpeg() == str(fake)


def test_rotation_metadata_does_not_garble_frames(tmp_path: Path) -> None:
    clip = smooth_clip(5, 64, 96)
    write_video(tmp_path / "plain.mp4", clip, 24, crf=0)
    subprocess.run(
        [
            find_ffmpeg(),
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-display_rotation",
            "90",
            "-i",
            str(tmp_path / "plain.mp4"),
            "-c",
            "copy",
            str(tmp_path / "rotated.mp4"),
        ],
        check=True,
    )
    rotated, _ = read_video(tmp_path / "rotated.mp4")
    plain, _ = read_video(tmp_path / "plain.mp4")
    assert rotated.shape == (5, 64, 96, 3)
    assert torch.equal(rotated, plain)  # the stored frames, not a reshaped transpose


def test_a_stream_without_a_frame_rate_is_refused_unless_one_is_given(tmp_path: Path, monkeypatch) -> None:
    import artifactworld_ns.restorer.video_io as video_io

    path = tmp_path / "a.mp4"
    write_video(path, torch.rand(3, 32, 32, 3), 12.5)
    assert probe_video(path).fps == 12.5  # from the container's metadata
    monkeypatch.setattr(video_io, "stream_frame_rate", lambda stream: None)
    with pytest.raises(VideoReadError) as info:
        read_video(path)
    message = str(info.value)
    assert message.startswith(f"Cannot read video {path}: its video stream has no frame rate;") and "\n" not in message
    frames, fps = read_video(path, fps_if_missing=30.0)
    assert fps == 30.0 and frames.shape == (3, 32, 32, 3)


def test_stream_frame_rate_prefers_the_average_then_the_guessed_rate() -> None:
    from fractions import Fraction
    from types import SimpleNamespace

    from artifactworld_ns.restorer.video_io import stream_frame_rate

    ntsc = Fraction(24000, 1001)
    assert stream_frame_rate(SimpleNamespace(average_rate=ntsc, guessed_rate=Fraction(25))) == float(ntsc)
    assert stream_frame_rate(SimpleNamespace(average_rate=None, guessed_rate=Fraction(25))) == 25.0
    assert stream_frame_rate(SimpleNamespace(average_rate=Fraction(0), guessed_rate=None)) is None
