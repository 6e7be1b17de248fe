"""Mixing simulated and generated data (paper Sec. 3.3: 83,188 generated + the simulated clips = 107,520).

* ``aw-make-pairs --sources DIR [DIR ...]`` reads several folders in the layout of ``aw-simulate`` and
  ``aw-degrade`` (``DIR/gt``, ``DIR/artifact``, ``DIR/labels.jsonl``, and ``DIR/gate.jsonl`` when ``aw-gate`` ran:
  its dropped clips are left out) at once; each pair keeps its source and types (:func:`collect_sources`), and
  the counts per source and per type are printed (:func:`count_lines`).
* ``aw-train-lora --source-weights simulated 1 generated 0.5`` draws each step's pair by source weight, then
  uniformly within the source (:class:`WeightedSamplingState`); without it every pair is drawn once per epoch.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoints import SamplingState
from ..errors import RestorerInputError
from ..labels import ARTIFACT_TYPES, LABELS_FILE, ClipLabel, labels_by_name, read_labels

GATE_FILE = "gate.jsonl"
UNLABELLED = "unlabelled"
"""The source of a pair without a label record."""


@dataclass
class Sources:
    """The clips of several source folders, merged by name."""

    gt: dict[str, Path] = field(default_factory=dict)
    artifact: dict[str, Path] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    records: dict[str, ClipLabel] = field(default_factory=dict)
    label_files: list[Path] = field(default_factory=list)
    gated_out: dict[str, str] = field(default_factory=dict)
    """Clips that ``aw-gate`` dropped (name -> reason); they are not paired."""
    unpaired: list[str] = field(default_factory=list)


def read_gate(path: Path) -> dict[str, dict]:
    """``{name: record}`` of a ``gate.jsonl`` (see :mod:`.gate`); one sentence for a bad line."""
    import json

    records: dict[str, dict] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records[str(record["name"])] = record
            bool(record["kept"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise RestorerInputError(
                f"{path} line {number} is not an aw-gate record (a JSON object with name and kept); rerun aw-gate."
            ) from None
    return records


def collect_sources(folders: list[Path]) -> Sources:
    """The clips of every source folder (``DIR/gt/NAME.mp4`` + ``DIR/artifact/NAME.mp4``), with their labels and
    gate decisions; one sentence for a folder that is not such a layout or a clip name found in two sources."""
    from ..batch import pair_videos, require_folder

    merged = Sources()
    origin: dict[str, Path] = {}
    for folder in folders:
        folder = require_folder(folder, "source folder (--sources)")
        if not (folder / "gt").is_dir() or not (folder / "artifact").is_dir():
            raise RestorerInputError(
                f"The source folder {folder} has no gt/ and artifact/ folders; give folders written by aw-simulate "
                "or aw-degrade."
            )
        videos = pair_videos(folder / "gt", folder / "artifact")
        merged.unpaired += videos.unpaired_notes(f"it was skipped (source {folder})")
        labels = labels_by_name(read_labels(folder / LABELS_FILE)) if (folder / LABELS_FILE).is_file() else {}
        if labels:
            merged.label_files.append(folder / LABELS_FILE)
        gate = read_gate(folder / GATE_FILE) if (folder / GATE_FILE).is_file() else {}
        for name in videos.names:
            if name in origin:
                raise RestorerInputError(
                    f"The clip {name} is in two sources ({origin[name]} and {folder}); pair names must be unique, "
                    "so rename one or leave one source out."
                )
            origin[name] = folder
            stem = Path(name).stem
            decision = gate.get(stem)
            if decision is not None and not decision["kept"]:
                merged.gated_out[stem] = str(decision.get("reason", "dropped by aw-gate"))
                continue
            merged.gt[name], merged.artifact[name] = videos.gt[name], videos.artifact[name]
            merged.names.append(name)
            if stem in labels:
                merged.records[stem] = labels[stem]
    merged.names.sort()
    return merged


def count_lines(labels: dict[str, dict], names: list[str]) -> list[str]:
    """Two lines: pairs per source and pairs per artifact type (a pair counts once for each of its types)."""
    per_source: Counter = Counter()
    per_type: Counter = Counter()
    for name in names:
        entry = labels.get(name)
        per_source[entry["source"] if entry else UNLABELLED] += 1
        per_type.update(entry["types"] if entry else [])
    sources = ", ".join(f"{source} {count}" for source, count in sorted(per_source.items()))
    types = ", ".join(f"{t} {per_type[t]}" for t in ARTIFACT_TYPES if per_type[t])
    return [f"pairs per source: {sources or 'none'}.", f"pairs per type: {types or 'none (no labels)'}."]


# ---------------------------------------------------------------------------------------------- weighted sampling


def pair_sources(dataset) -> list[str]:
    """Each pair's source (``simulated``, ``generated`` ... or ``unlabelled``), in the dataset's order."""
    return [(dataset.label(i) or {}).get("source", UNLABELLED) for i in range(len(dataset))]


def pair_probabilities(sources: list[str], weights: dict[str, float]) -> torch.Tensor:
    """Per-pair probability: a source's weight shared evenly by its pairs, normalised over the sources present.

    One sentence for a weight on a source the pairs do not have, a negative weight, or no positive weight on any
    present source (sources without a weight get 0)."""
    present = Counter(sources)
    unknown = sorted(set(weights) - set(present))
    if unknown:
        raise RestorerInputError(
            f"--source-weights names the source {unknown[0]!r}, which no pair has; the pairs' sources are "
            f"{', '.join(f'{s} ({n})' for s, n in sorted(present.items()))}."
        )
    if any(w < 0 for w in weights.values()):
        raise RestorerInputError("--source-weights must not be negative.")
    if sum(weights.values()) <= 0:
        raise RestorerInputError("--source-weights gives every source weight 0, so no pair would be drawn.")
    probabilities = torch.tensor([weights.get(s, 0.0) / present[s] for s in sources], dtype=torch.float64)
    return probabilities / probabilities.sum()


class WeightedSamplingState(SamplingState):
    """:class:`artifactworld_ns.restorer.checkpoints.SamplingState` that draws each pair with :func:`pair_probabilities` (with
    replacement, from the same checkpointed generator; no epoch order, so ``pending`` stays empty)."""

    def __init__(self, generator, probabilities: torch.Tensor, process_index: int, num_processes: int) -> None:
        super().__init__(generator, len(probabilities), process_index, num_processes)
        self.probabilities = probabilities

    def next_index(self) -> int:
        return int(torch.multinomial(self.probabilities, 1, generator=self.generator))


def make_sampling_state(config, dataset, generator, process_index: int, num_processes: int) -> SamplingState:
    """The run's sampler: by source weight with ``--source-weights``, else the epoch order of the official trainer."""
    if not config.source_weights:
        return SamplingState(generator, len(dataset), process_index, num_processes)
    probabilities = pair_probabilities(pair_sources(dataset), dict(config.source_weights))
    return WeightedSamplingState(generator, probabilities, process_index, num_processes)
