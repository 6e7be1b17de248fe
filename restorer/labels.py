"""Label records of the data engine (paper Sec. 3.1-3.2): one JSON object per clip in ``OUT/labels.jsonl``.

A training set in the benchmark layout (``OUT/gt/NAME.mp4`` + ``OUT/artifact/NAME.mp4``) may carry
``OUT/labels.jsonl`` beside the two folders: one :class:`ClipLabel` per clip, written by ``aw-simulate``
(``source="simulated"``) or ``aw-degrade`` (``source="generated"``) and read by ``aw-make-pairs`` (the
pairs keep each clip's types and source) and ``aw-eval video`` (one row per artifact type). The schema is
defined here once, on the restorer side (standard library only), so both sides read the same records.

A record, one line each (keys in this order; ``null`` where a metric could not be measured)::

    {"name": "garden_0003", "types": ["Floaters", "Needles"], "source": "simulated",
     "recipe": "sparse-checkpoint", "params": {"frame_step": 8, "checkpoint_step": 7000},
     "scene": "data/garden", "frame_indices": [3, 4, ...],
     "metrics": {"psnr": 21.4, "ssim": 0.71, "lpips": 0.28}}

The artifact types are the paper's nine names (Sec. 3.1, :data:`ARTIFACT_TYPES`); the official labeler's
names ``Floater``, ``Crack`` and ``Color`` are accepted as aliases, as are any case and ``-`` / ``_`` for
spaces (``color-outliers``). Non-finite metrics (a NaN PSNR) are written as ``null``, never as ``NaN``
(which is not JSON). Writes are atomic (:mod:`artifactworld_ns.restorer.atomic`).
"""

from __future__ import annotations

import json
import math
import numbers
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from .atomic import atomic_path
from .errors import RestorerInputError

ARTIFACT_TYPES: tuple[str, ...] = (
    "Floaters",
    "Dilation",
    "Needles",
    "Cracks",
    "Aliasing",
    "Blurring",
    "Popping",
    "Ghosting",
    "Color Outliers",
)
"""The paper's nine artifact types (Sec. 3.1), in its order."""

LABELS_FILE = "labels.jsonl"
"""``OUT/labels.jsonl``, beside ``OUT/gt`` and ``OUT/artifact``."""

LABEL_SOURCES = ("simulated", "generated")
"""Known values of :attr:`ClipLabel.source`: ``aw-simulate`` and ``aw-degrade``."""

OFFICIAL_LABELER_ALIASES: dict[str, str] = {"Floater": "Floaters", "Crack": "Cracks", "Color": "Color Outliers"}
"""The official labeler's (Q-Align-Artifacts) names that differ from the paper's."""


def _key(name: str) -> str:
    """Case-, separator- and space-insensitive lookup key of a type name (``Color_Outliers`` -> ``color outliers``)."""
    return " ".join(re.split(r"[\s_\-]+", name.strip().lower()))


_LOOKUP: dict[str, str] = {_key(n): n for n in ARTIFACT_TYPES} | {
    _key(alias): name for alias, name in OFFICIAL_LABELER_ALIASES.items()
}


class LabelError(RestorerInputError):
    """A label record or ``labels.jsonl`` the data engine cannot use; the message is one sentence for the user."""


def parse_artifact_types(names: str | Iterable[str]) -> list[str]:
    """Canonical artifact types, in :data:`ARTIFACT_TYPES` order without duplicates, from ``"Floaters,Needles"``
    or a list of names (each may itself be comma-separated); case-insensitive, official labeler aliases accepted.

    Raises :class:`LabelError` naming the first unknown name (and listing the nine), or when no name is given.
    """
    items = [names] if isinstance(names, str) else list(names)
    found: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            raise LabelError(f"Artifact types must be names, not {type(item).__name__} {item!r}.")
        for part in item.split(","):
            if not part.strip():
                continue
            canonical = _LOOKUP.get(_key(part))
            if canonical is None:
                raise LabelError(
                    f"Unknown artifact type {part.strip()!r}; use one or more of: {', '.join(ARTIFACT_TYPES)}."
                )
            found.add(canonical)
    if not found:
        raise LabelError(f"No artifact type given; use one or more of: {', '.join(ARTIFACT_TYPES)}.")
    return [t for t in ARTIFACT_TYPES if t in found]


def _json_value(value: Any, what: str) -> Any:
    """``value`` as plain JSON (paths and tuples converted, numpy scalars unwrapped, non-finite floats -> None)."""
    if hasattr(value, "tolist") and hasattr(value, "ndim"):
        value = value.tolist()  # numpy / torch scalars and arrays
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_value(v, f"{what}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v, what) for v in value]
    raise LabelError(f"The label field {what} holds a {type(value).__name__}, which JSON cannot store.")


def _metric(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise LabelError(f"The metric {key!r} must be a number or null, not {value!r}.")
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class ClipLabel:
    """The label record of one clip (see the module doc for the JSON form)."""

    name: str
    """Clip stem: ``OUT/gt/{name}.mp4`` and ``OUT/artifact/{name}.mp4``."""
    types: list[str]
    """Artifact types (canonical names of :data:`ARTIFACT_TYPES`; aliases are canonicalized on construction)."""
    source: str
    """``"simulated"`` (aw-simulate) or ``"generated"`` (aw-degrade)."""
    recipe: str
    """How the artifact was made, e.g. ``sparse-checkpoint``, ``cracks``, ``color-outliers``, ``aliasing``."""
    params: dict[str, Any]
    """The recipe's parameters, e.g. frame_step, checkpoint_step, perturbation, strength, render_scale, seed, prompt."""
    scene: str | None = None
    """Scene path or name (simulated clips)."""
    frame_indices: list[int] = field(default_factory=list)
    """Capture frame indices of the clip's frames."""
    metrics: dict[str, float | None] = field(default_factory=dict)
    """Artifact vs GT: psnr, ssim, lpips (lpips only when its weights are present); non-finite values become None."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or "/" in self.name or "\\" in self.name:
            raise LabelError(f"A clip name must be a non-empty file stem without folders, not {self.name!r}.")
        self.types = parse_artifact_types(self.types)
        for key in ("source", "recipe"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise LabelError(f"The clip {self.name!r} needs a non-empty {key} string, not {value!r}.")
        if not isinstance(self.params, dict):
            raise LabelError(f"The params of clip {self.name!r} must be a JSON object, not {self.params!r}.")
        if self.scene is not None:
            self.scene = str(self.scene)
        indices = list(self.frame_indices)
        if any(isinstance(i, bool) or not isinstance(i, numbers.Integral) or i < 0 for i in indices):
            raise LabelError(f"The frame indices of clip {self.name!r} must be non-negative integers.")
        self.frame_indices = [int(i) for i in indices]
        if not isinstance(self.metrics, dict):
            raise LabelError(f"The metrics of clip {self.name!r} must be a JSON object, not {self.metrics!r}.")
        self.metrics = {str(k): _metric(v, str(k)) for k, v in self.metrics.items()}

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON values (non-finite floats anywhere become None)."""
        return {f.name: _json_value(getattr(self, f.name), f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "") -> "ClipLabel":
        """Validate and build a record; ``where`` (e.g. ``"labels.jsonl line 3"``) prefixes every error."""
        prefix = f"{where}: " if where else ""
        if not isinstance(data, dict):
            raise LabelError(f"{prefix}a label record must be a JSON object, not {type(data).__name__}.")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise LabelError(
                f"{prefix}the label record has an unknown field {unknown[0]!r}; the fields are {', '.join(known)}."
            )
        required = ("name", "types", "source", "recipe", "params")
        missing = [k for k in required if k not in data]
        if missing:
            raise LabelError(f"{prefix}the label record lacks the field {missing[0]!r}.")
        if not isinstance(data["types"], list):
            raise LabelError(f"{prefix}the field 'types' must be a list of artifact type names.")
        if not isinstance(data.get("frame_indices", []), list):
            raise LabelError(f"{prefix}the field 'frame_indices' must be a list of integers.")
        try:
            return cls(**data)
        except LabelError as err:
            message = str(err)
            raise LabelError(f"{prefix}{message[0].lower()}{message[1:]}" if prefix else message) from None


def read_labels(path: str | Path) -> list[ClipLabel]:
    """The records of a ``labels.jsonl`` (blank lines skipped); one sentence naming the file and line for bad JSON,
    a bad record, or a clip name given twice."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"The label file {path} does not exist or is not a file.")
    labels: list[ClipLabel] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                raise LabelError(
                    f"{where} is not valid JSON ({err.msg} at column {err.colno}); fix or delete that line."
                ) from None
            label = ClipLabel.from_dict(data, where=where)
            if label.name in seen:
                raise LabelError(
                    f"{where} repeats the clip {label.name!r} of line {seen[label.name]}; keep one record per clip."
                )
            seen[label.name] = number
            labels.append(label)
    return labels


def write_labels(path: str | Path, labels: Iterable[ClipLabel]) -> None:
    """Write ``labels`` to ``path`` atomically, one JSON object a line (non-finite floats as ``null``)."""
    lines: list[str] = []
    seen: set[str] = set()
    for label in labels:
        if label.name in seen:
            raise LabelError(f"The clip {label.name!r} has two label records; keep one record per clip.")
        seen.add(label.name)
        lines.append(json.dumps(label.to_dict(), allow_nan=False, ensure_ascii=False))
    with atomic_path(Path(path)) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def labels_beside(folder: str | Path) -> Path | None:
    """The ``labels.jsonl`` in ``folder`` or in its parent (for a ``gt/`` or ``artifact/`` folder), else None."""
    folder = Path(folder)
    for candidate in (folder / LABELS_FILE, folder.parent / LABELS_FILE):
        if candidate.is_file():
            return candidate
    return None


def labels_by_name(labels: Iterable[ClipLabel]) -> dict[str, ClipLabel]:
    """``{name: label}`` of a list of records."""
    return {label.name: label for label in labels}


__all__ = [
    "ARTIFACT_TYPES",
    "LABELS_FILE",
    "LABEL_SOURCES",
    "OFFICIAL_LABELER_ALIASES",
    "ClipLabel",
    "LabelError",
    "labels_beside",
    "labels_by_name",
    "parse_artifact_types",
    "read_labels",
    "write_labels",
]
