"""Video reading and writing through ffmpeg (ffmpeg-python command lines, raw rgb24 pipes).

Frames are float tensors ``[frames, height, width, 3]`` in ``[0, 1]``. Writes are atomic
(:mod:`artifactworld_ns.restorer.atomic`): the video is encoded to a hidden temporary file in the destination folder and
moved into place, so an interrupted run never leaves a half-written file under the final name.

The ffmpeg executable is looked up on ``PATH`` and falls back to the binary shipped with
``imageio-ffmpeg``. ``ffprobe`` is not needed: stream parameters are parsed from ``ffmpeg -i``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import ffmpeg
import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from .atomic import atomic_path
from .errors import RestorerError, RestorerInputError

PathLike = Union[str, os.PathLike]

__all__ = [
    "VideoReadError",
    "VideoWriteError",
    "VideoInfo",
    "find_ffmpeg",
    "probe_video",
    "read_video",
    "write_video",
    "gray_to_rgb",
    "rgb_to_gray",
    "DEFAULT_CRF",
]

DEFAULT_CRF = 18
"""x264 constant rate factor used when none is given (visually lossless; 0 = lossless)."""


class VideoReadError(RestorerInputError):
    """A video file could not be read (missing, not a video, or without frames)."""


class VideoWriteError(RestorerError, RuntimeError):
    """ffmpeg failed to encode a video."""


@dataclass(frozen=True)
class VideoInfo:
    """Parameters of the first video stream of a file, as reported by ffmpeg."""

    width: int
    height: int
    fps: float


def find_ffmpeg() -> str:
    """Path of the ffmpeg executable: ``ffmpeg`` on PATH, else the imageio-ffmpeg binary."""
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg
    except ImportError as err:  # pragma: no cover - imageio-ffmpeg is a dependency
        raise RuntimeError("ffmpeg was not found on PATH and imageio-ffmpeg is not installed.") from err
    return imageio_ffmpeg.get_ffmpeg_exe()


def environment_with_ffmpeg(env: dict | None = None) -> dict:
    """A copy of ``env`` (default: this process's) whose PATH finds an ``ffmpeg``: the one already on it,
    else the binary bundled with imageio-ffmpeg, linked as ``ffmpeg`` under the cache folder.

    nerfstudio's ``ns-render`` and mediapy call ``ffmpeg`` by name, so our CLIs work even when the
    venv's ``bin/`` (where set-up links it) is not on PATH.
    """
    env = dict(os.environ if env is None else env)
    if shutil.which("ffmpeg", path=env.get("PATH")):
        return env
    from .roots import cache_dir

    folder = cache_dir() / "bin"
    link = folder / "ffmpeg"
    if not link.exists():
        with atomic_path(link) as temporary:
            temporary.symlink_to(find_ffmpeg())
    env["PATH"] = f"{folder}{os.pathsep}{env.get('PATH', '')}"
    return env


def put_ffmpeg_on_path() -> None:
    """Make ``ffmpeg`` findable by name in this process (see :func:`environment_with_ffmpeg`)."""
    os.environ["PATH"] = environment_with_ffmpeg()["PATH"]


def _last_error_line(stderr: bytes | None) -> str:
    lines = [ln.strip() for ln in (stderr or b"").decode("utf-8", "replace").splitlines() if ln.strip()]
    # Skip ffmpeg's generic trailer lines; the specific reason is usually just before them.
    generic = ("At least one output file", "Error opening input file", "Conversion failed")
    useful = [ln for ln in lines if not ln.startswith(generic)]
    line = (useful or lines or ["unknown ffmpeg error"])[-1]
    line = re.sub(r"^\[[^\]]*\]\s*", "", line)  # drop "[in#0 @ 0x...]" prefixes
    return line.rstrip(".")


_STREAM_RE = re.compile(r"Stream #\d+:\d+.*?: Video: (?P<rest>.*)")
_SIZE_RE = re.compile(r"[\s,](\d{1,6})x(\d{1,6})(?=[\s,\[]|$)")
_FPS_RE = re.compile(r"([\d.]+)(k?) (fps|tbr)")


def probe_video(path: PathLike) -> VideoInfo:
    """Width, height and frame rate of the first video stream (raises :class:`VideoReadError`)."""
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"Cannot read video {path}: the file does not exist.")
    if path.stat().st_size == 0:
        raise VideoReadError(f"Cannot read video {path}: the file is empty.")
    # ``ffmpeg -i FILE`` without an output prints the input header and exits non-zero.
    proc = subprocess.run(
        [find_ffmpeg(), "-hide_banner", "-nostdin", "-i", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    stderr = proc.stderr
    text = stderr.decode("utf-8", "replace")
    header = _parse_header(text)
    if header is None:
        if re.search(r"^Input #\d+", text, flags=re.MULTILINE):
            raise VideoReadError(f"Cannot read video {path}: it contains no video frames.")
        raise VideoReadError(f"Cannot read video {path}: {_last_error_line(stderr)}.")
    return header


def _parse_header(text: str) -> VideoInfo | None:
    for line in text.splitlines():
        match = _STREAM_RE.search(line)
        if not match:
            continue
        rest = match.group("rest")
        size = _SIZE_RE.search(rest)
        if not size:
            continue
        fps = 0.0
        for value, kilo, kind in _FPS_RE.findall(rest):
            with contextlib.suppress(ValueError):
                fps = float(value) * (1000.0 if kilo else 1.0)
                if kind == "fps" and fps > 0:
                    break
        return VideoInfo(width=int(size.group(1)), height=int(size.group(2)), fps=fps or 24.0)
    return None


def read_video(path: PathLike) -> tuple[Float[Tensor, "frames height width 3"], float]:
    """Decode every frame of the first video stream.

    Returns ``(frames, fps)`` with frames as float32 in ``[0, 1]``. Raises :class:`VideoReadError`
    with a one-sentence message when the file is missing, is not a video, or has no frames.
    """
    path = Path(path)
    info = probe_video(path)
    try:
        out, _ = (
            # -noautorotate: decode the stored frames, whose size is the one probed above (a rotated
            # phone video would otherwise come out with swapped sides and the same byte count).
            ffmpeg.input(str(path), noautorotate=None)["v:0"]
            .output("pipe:", format="rawvideo", pix_fmt="rgb24")
            .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
            .run(cmd=find_ffmpeg(), capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as err:
        raise VideoReadError(f"Cannot read video {path}: {_last_error_line(err.stderr)}.") from None
    frame_bytes = info.width * info.height * 3
    if len(out) == 0:
        raise VideoReadError(f"Cannot read video {path}: it contains no video frames.")
    if len(out) % frame_bytes:
        raise VideoReadError(
            f"Cannot read video {path}: decoded data does not match the {info.width}x{info.height} frame size."
        )
    array = np.frombuffer(out, dtype=np.uint8).reshape(-1, info.height, info.width, 3)
    frames = torch.from_numpy(array.copy()).float().div_(255.0)
    return frames, info.fps


def _to_uint8(frames: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if not isinstance(frames, Tensor):
        raise TypeError(f"frames must be a torch.Tensor or numpy array, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape [frames, height, width, 3], got {tuple(frames.shape)}")
    if frames.shape[0] == 0:
        raise ValueError("cannot write a video with zero frames")
    frames = frames.detach().cpu()
    if frames.dtype == torch.uint8:
        return frames.contiguous().numpy()
    return frames.float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).contiguous().numpy()


def write_video(
    path: PathLike,
    frames: Float[Tensor, "frames height width 3"] | np.ndarray,
    fps: float,
    *,
    crf: int = DEFAULT_CRF,
    preset: str = "medium",
    pix_fmt: str | None = None,
) -> Path:
    """Encode frames to an H.264 mp4 atomically; the file has exactly the frames' count and size.

    Args:
        path: Destination ``.mp4`` file; parent folders are created.
        frames: ``[T, H, W, 3]`` floats in ``[0, 1]`` (clamped) or uint8.
        fps: Frame rate written to the container.
        crf: x264 constant rate factor (0 = lossless in YUV, 18 = visually lossless, 23 = x264 default).
        preset: x264 speed preset.
        pix_fmt: Output pixel format. ``None`` picks ``yuv420p`` (widest player support) when width
            and height are even and ``yuv444p`` otherwise, because 4:2:0 needs even sides and the
            output must keep the input's exact resolution.
    """
    data = _to_uint8(frames)
    count, height, width, _ = data.shape
    if pix_fmt is None:
        pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    elif pix_fmt in ("yuv420p", "nv12") and (width % 2 or height % 2):
        raise ValueError(f"pix_fmt {pix_fmt} needs even width and height, got {width}x{height}")
    if not fps or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    final = Path(path)
    with atomic_path(final) as tmp:
        stream = ffmpeg.input(
            "pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=f"{fps:g}"
        ).output(str(tmp), vcodec="libx264", pix_fmt=pix_fmt, crf=int(crf), preset=preset, an=None)
        stream = stream.global_args("-hide_banner", "-nostdin", "-loglevel", "error").overwrite_output()
        process = stream.run_async(cmd=find_ffmpeg(), pipe_stdin=True, pipe_stdout=True, pipe_stderr=True)
        try:
            _, stderr = process.communicate(input=data.tobytes())
        except BaseException:  # Ctrl-C: stop ffmpeg before the temporary file is removed
            process.kill()
            process.wait()
            raise
        if process.returncode:
            if b"No space left on device" in (stderr or b""):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(final))
            raise VideoWriteError(f"ffmpeg could not write {final}: {_last_error_line(stderr)}.")
        if count and not tmp.exists():  # pragma: no cover - defensive
            raise VideoWriteError(f"ffmpeg did not produce {final}.")
    return final


def gray_to_rgb(maps: Float[Tensor, "frames height width"]) -> Float[Tensor, "frames height width 3"]:
    """Replicate single-channel maps (e.g. heatmaps) to 3 channels for writing."""
    if maps.ndim == 4 and maps.shape[-1] == 1:
        maps = maps[..., 0]
    if maps.ndim != 3:
        raise ValueError(f"expected [frames, height, width] maps, got {tuple(maps.shape)}")
    return maps.unsqueeze(-1).expand(*maps.shape, 3)


def rgb_to_gray(frames: Float[Tensor, "frames height width 3"]) -> Float[Tensor, "frames height width"]:
    """Average the channels of a (grayscale-replicated) video back to one channel."""
    return frames.mean(dim=-1)
