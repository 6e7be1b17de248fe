"""Reading the official Q-Align artifact labeler's output (paper Sec. 3.3's gatekeeper).

The labeler is ``tools/infer_q_align.py`` of the official repository (``fyting/ArtifactWorld``), a GPU-only
mPLUG-Owl2 model whose weights are ``buaadwxl/Q-Align-Artifacts``; we do not run it, we read what it writes.
Its JSON comes in three shapes, all read here (:func:`read_qalign_labels`):

* one video (``--video``): an entry ``{"video": PATH, "artifacts": {NAME: {"prediction": "Yes"|"No",
  "prob_yes": p, "prob_no": q}}}``;
* a per-GPU shard (``labels_gpu0.json``): a list of such entries;
* the merged file (``--video_list``): ``{"total_videos": N, "successful": M, "results": [entries]}``.

``NAME`` is one of the labeler's nine names (``Aliasing``, ``Blurring``, ``Color``, ``Crack``, ``Dilation``,
``Floater``, ``Ghosting``, ``Needles``, ``Popping``), mapped to the paper's names (``Color`` -> Color Outliers,
``Crack`` -> Cracks, ``Floater`` -> Floaters); ``prob_yes`` and ``prob_no`` are a softmax over the Yes/No logits,
so each lies in [0, 1] and they sum to 1. A file that breaks this (an unknown name, a probability out of
range, an entry without a video) is refused with one sentence naming the entry.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import RestorerInputError
from ..labels import ARTIFACT_TYPES, OFFICIAL_LABELER_ALIASES, LabelError, parse_artifact_types

OFFICIAL_LABELER_NAMES = (
    "Aliasing",
    "Blurring",
    "Color",
    "Crack",
    "Dilation",
    "Floater",
    "Ghosting",
    "Needles",
    "Popping",
)
"""The labeler's names (``q_align/artifacts.py`` of the official repository)."""
PROBABILITY_SUM_TOLERANCE = 1e-3


class QAlignError(RestorerInputError):
    """A labeler file the gate cannot use; the message is one sentence."""


@dataclass(frozen=True)
class TypeJudgement:
    """One type of one video: the labeler's answer and its probabilities."""

    prediction: bool
    prob_yes: float
    prob_no: float


@dataclass
class VideoJudgement:
    video: str
    """The path the labeler was given (as written in the file)."""
    types: dict[str, TypeJudgement]
    """Paper's type name -> judgement."""


def _entries(data, path: Path) -> list:
    if isinstance(data, dict) and "results" in data:
        data = data["results"]
    elif isinstance(data, dict) and "video" in data:
        data = [data]
    if not isinstance(data, list):
        raise QAlignError(
            f"{path} is not a Q-Align labeler file: expected an entry with 'video' and 'artifacts', a list of them, "
            "or the merged {'results': [...]} of tools/infer_q_align.py."
        )
    return data


def _probability(value, path: Path, video: str, name: str, key: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 <= value <= 1
    ):
        raise QAlignError(
            f"{path}: the {key} of {name} for {video} is {value!r}, not a probability between 0 and 1; "
            "the file is not what tools/infer_q_align.py writes."
        )
    return float(value)


def _type_name(name, path: Path, video: str) -> str:
    try:
        if not isinstance(name, str):
            raise LabelError(name)
        return parse_artifact_types(name)[0]
    except LabelError:
        raise QAlignError(
            f"{path}: {video} has the unknown artifact type {name!r}; the labeler's names are "
            f"{', '.join(OFFICIAL_LABELER_NAMES)} (or the paper's: {', '.join(ARTIFACT_TYPES)})."
        ) from None


def read_qalign_labels(path: str | Path) -> list[VideoJudgement]:
    """Every entry of a labeler file (any of its three shapes), validated; one sentence for the first bad one."""
    path = Path(path)
    if not path.is_file():
        raise QAlignError(f"The labeler file {path} does not exist or is not a file.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise QAlignError(f"The labeler file {path} is not valid JSON ({err}).") from None
    judgements: list[VideoJudgement] = []
    for number, entry in enumerate(_entries(data, path), start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("video"), str) or not entry["video"].strip():
            raise QAlignError(f"{path}: entry {number} names no video (each entry needs a 'video' path).")
        video = entry["video"]
        artifacts = entry.get("artifacts")
        if not isinstance(artifacts, dict) or not artifacts:
            raise QAlignError(f"{path}: the entry of {video} has no 'artifacts' answers.")
        types: dict[str, TypeJudgement] = {}
        for name, item in artifacts.items():
            canonical = _type_name(name, path, video)
            if not isinstance(item, dict) or str(item.get("prediction")) not in ("Yes", "No"):
                raise QAlignError(f"{path}: the answer for {name} of {video} has no Yes/No 'prediction'.")
            yes = _probability(item.get("prob_yes"), path, video, name, "prob_yes")
            no = _probability(item.get("prob_no"), path, video, name, "prob_no")
            if abs(yes + no - 1) > PROBABILITY_SUM_TOLERANCE:
                raise QAlignError(
                    f"{path}: prob_yes {yes:g} and prob_no {no:g} of {name} for {video} do not sum to 1, as the "
                    "labeler's softmax does."
                )
            types[canonical] = TypeJudgement(item["prediction"] == "Yes", yes, no)
        judgements.append(VideoJudgement(video, types))
    return judgements


def match_clips(judgements: list[VideoJudgement], names: list[str]) -> tuple[dict[str, VideoJudgement], list[str]]:
    """``{clip name: judgement of its artifact video}`` and the labeler's videos that match no clip.

    The labeler ran elsewhere, so paths are matched by their end: ``artifact/NAME.mp4`` first, then ``NAME.mp4``
    when only one entry has that file name (a GT video of the same name is never taken for the artifact)."""
    wanted = set(names)
    by_clip: dict[str, VideoJudgement] = {}
    loose: dict[str, list[VideoJudgement]] = {}
    stray: list[str] = []
    for judgement in judgements:
        video = Path(judgement.video.replace("\\", "/"))
        if video.stem not in wanted:
            stray.append(judgement.video)
        elif video.parent.name == "artifact":
            by_clip[video.stem] = judgement
        elif video.parent.name != "gt":
            loose.setdefault(video.stem, []).append(judgement)
    for name, found in loose.items():
        if name not in by_clip and len(found) == 1:
            by_clip[name] = found[0]
    return by_clip, stray


__all__ = ["OFFICIAL_LABELER_ALIASES", "QAlignError", "read_qalign_labels", "match_clips"]
