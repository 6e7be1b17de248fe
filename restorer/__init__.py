"""ArtifactWorld video restorer: LTX-Video backbone, DBA, heatmap (stage 1), AATF (stage 2).

Never imports nerfstudio: it runs on any box that only restores videos. Its public API has two layers:

* this package, the **light layer**: errors (:class:`ArtifactWorldError`, :class:`RestorerError` under it),
  atomic writes, video IO, batch progress, option checks, the clip-length rule, the label schema of the data
  engine. It imports no diffusers, transformers or peft, so any module that only writes a file or a video may
  import it at module level;
* :mod:`artifactworld_ns.restorer.pipeline`, the **model API**: :class:`~artifactworld_ns.restorer.pipeline.ArtifactRestorer`,
  its settings and result, imported where a clip is restored.

On the tiny preset (random weights, built offline in seconds)::

    >>> import torch
    >>> from artifactworld_ns.restorer.pipeline import ArtifactRestorer
    >>> restorer = ArtifactRestorer.from_preset("tiny", show_progress=False)  # doctest: +SKIP
    >>> frames = torch.rand(17, 64, 96, 3)                                     # [T, H, W, 3] in [0, 1], T = 8n + 1
    >>> result = restorer.restore(frames, frames[0], frames[-1])              # doctest: +SKIP
    >>> result.frames.shape, result.heatmap.shape                             # doctest: +SKIP
    (torch.Size([17, 64, 96, 3]), torch.Size([17, 64, 96]))

Clips are ``T = 8n + 1`` frames (89 as trained); their DBA reference is ``T + 8`` frames
(:mod:`artifactworld_ns.restorer.dba`, where the clip-length rule is stated once).
"""

from .atomic import atomic_folder, atomic_path
from .batch import (
    Outcome,
    StepProgress,
    local_rank,
    print_error,
    print_note,
    process_index,
    rank_label,
    run_batch,
    shard,
)
from .dba import (
    ANCHOR_TAIL_FRAMES,
    MIN_CLIP_FRAMES,
    TRAINED_CLIP_FRAMES,
    ClipLengthError,
    build_reference_video,
    check_clip_length,
    is_clip_length,
    largest_clip_length,
    nearest_clip_length,
    trim_to_clip,
)
from .errors import ArtifactWorldError, InputError, RestorerError, RestorerInputError
from .labels import (
    ARTIFACT_TYPES,
    LABELS_FILE,
    ClipLabel,
    LabelError,
    labels_beside,
    labels_by_name,
    parse_artifact_types,
    read_labels,
    write_labels,
)
from .option_checks import (
    check_at_least,
    check_device,
    check_output_file,
    check_output_folder,
    check_processing_max_side,
)
from .pseudo_heatmaps import ALEXNET_WEIGHTS_FILE, alexnet_weights_path, missing_alexnet_weights
from .untrained import UNTRAINED_LABEL, announce_untrained, untrained_note
from .video_io import VideoReadError, environment_with_ffmpeg, put_ffmpeg_on_path, read_video, write_video

__all__ = [
    "ALEXNET_WEIGHTS_FILE",
    "ANCHOR_TAIL_FRAMES",
    "ARTIFACT_TYPES",
    "LABELS_FILE",
    "MIN_CLIP_FRAMES",
    "TRAINED_CLIP_FRAMES",
    "UNTRAINED_LABEL",
    "ArtifactWorldError",
    "ClipLabel",
    "ClipLengthError",
    "InputError",
    "LabelError",
    "Outcome",
    "RestorerError",
    "RestorerInputError",
    "StepProgress",
    "VideoReadError",
    "announce_untrained",
    "alexnet_weights_path",
    "atomic_folder",
    "atomic_path",
    "build_reference_video",
    "check_at_least",
    "check_clip_length",
    "check_device",
    "check_output_file",
    "check_output_folder",
    "check_processing_max_side",
    "environment_with_ffmpeg",
    "is_clip_length",
    "labels_beside",
    "labels_by_name",
    "largest_clip_length",
    "local_rank",
    "missing_alexnet_weights",
    "nearest_clip_length",
    "parse_artifact_types",
    "print_error",
    "print_note",
    "process_index",
    "put_ffmpeg_on_path",
    "rank_label",
    "read_labels",
    "read_video",
    "run_batch",
    "shard",
    "trim_to_clip",
    "untrained_note",
    "write_labels",
    "write_video",
]
