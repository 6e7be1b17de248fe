"""ArtifactWorld video restorer: LTX-Video backbone, DBA, heatmap (stage 1), AATF (stage 2).

Never imports nerfstudio: it runs on any box that only restores videos.

    >>> from . import ArtifactRestorer
    >>> restorer = ArtifactRestorer.from_preset("tiny")            # or "full"
    >>> result = restorer.restore(frames, first_anchor, last_anchor)  # frames [T, H, W, 3] in [0, 1]
    >>> result.frames, result.heatmap                                 # [T, H, W, 3], [T, H, W]

Clips are ``T = 8n + 1`` frames (89 as trained); their DBA reference is ``T + 8`` frames
(:mod:`restorer.dba`, where the clip-length rule is stated once).
"""

from .batch import StepProgress, print_error, print_note
from .dba import (
    ANCHOR_TAIL_FRAMES,
    TRAINED_CLIP_FRAMES,
    ClipLengthError,
    build_reference_video,
    check_clip_length,
    is_clip_length,
    nearest_clip_length,
    trim_to_clip,
)
from .errors import RestorerInputError
from .pipeline import ArtifactRestorer, RestorationResult
from .video_io import VideoReadError, environment_with_ffmpeg, put_ffmpeg_on_path, read_video, write_video

__all__ = [
    "ANCHOR_TAIL_FRAMES",
    "TRAINED_CLIP_FRAMES",
    "ArtifactRestorer",
    "ClipLengthError",
    "RestorationResult",
    "RestorerInputError",
    "StepProgress",
    "VideoReadError",
    "build_reference_video",
    "check_clip_length",
    "environment_with_ffmpeg",
    "is_clip_length",
    "nearest_clip_length",
    "print_error",
    "print_note",
    "put_ffmpeg_on_path",
    "read_video",
    "trim_to_clip",
    "write_video",
]
