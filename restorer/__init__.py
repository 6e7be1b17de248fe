"""ArtifactWorld video restorer: LTX-Video backbone, DBA, heatmap (stage 1), AATF (stage 2).

Never imports nerfstudio: it runs on any box that only restores videos.

    >>> from restorer import ArtifactRestorer
    >>> restorer = ArtifactRestorer.from_preset("tiny")            # or "full"
    >>> result = restorer.restore(frames, first_anchor, last_anchor)  # frames [T, H, W, 3] in [0, 1]
    >>> result.frames, result.heatmap                                 # [T, H, W, 3], [T, H, W]
"""

from restorer.dba import ANCHOR_TAIL_FRAMES, build_reference_video
from restorer.errors import RestorerInputError
from restorer.pipeline import ArtifactRestorer, RestorationResult

__all__ = [
    "ANCHOR_TAIL_FRAMES",
    "ArtifactRestorer",
    "RestorationResult",
    "RestorerInputError",
    "build_reference_video",
]
