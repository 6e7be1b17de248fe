"""Per-scene records of ``aw-simulate`` runs, the merged ``OUT/labels.jsonl``, and ``aw-simulate status``.

Every scene a run finishes, skips or fails gets one JSON record, ``OUT/scenes/NAME.json``, written atomically
after its clips are in place: a ``done`` record is what makes a scene finished (an interrupted scene has
none and is redone), and it carries the scene's label records, its time per phase and its filter report.
Shards (SLURM array tasks, torchrun processes) only ever write their own scenes' records, so they never
write the same file; ``OUT/labels.jsonl`` is the merge of every ``done`` record, rewritten by each shard when
it ends and by ``aw-simulate status``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from artifactworld_ns.restorer import (
    ARTIFACT_TYPES,
    LABELS_FILE,
    ArtifactWorldError,
    ClipLabel,
    atomic_path,
    write_labels,
)

RECORDS_DIR = "scenes"
WORK_DIR = "staging"
"""Where a scene is staged until it is finished (then moved into place atomically)."""
DONE, FAILED, SKIPPED = "done", "failed", "skipped"


class RecordError(ArtifactWorldError, ValueError):
    """An output folder whose records cannot be read; one sentence."""


def record_path(output_dir: Path, name: str) -> Path:
    return Path(output_dir) / RECORDS_DIR / f"{name}.json"


def _write(output_dir: Path, name: str, record: dict[str, Any]) -> None:
    record = {"name": name, "written": time.strftime("%Y-%m-%dT%H:%M:%S"), **record}
    with atomic_path(record_path(output_dir, name)) as tmp:
        tmp.write_text(json.dumps(record, indent=1, allow_nan=False) + "\n", encoding="utf-8")


def write_done(output_dir: Path, scene: Path, result) -> None:
    """The record of a finished scene (``result``: :class:`artifactworld_ns.data_engine.simulate.SceneResult`)."""
    _write(
        output_dir,
        result.name,
        {
            "status": DONE,
            "scene": str(scene),
            "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
            "trainings": result.trainings,
            "iterations": result.iterations,
            "filter": result.report,
            "clips": [label.to_dict() for label in result.labels],
        },
    )


def write_failed(output_dir: Path, scene: Path, name: str, reason: str, seconds: float, status: str = FAILED) -> None:
    """The record of a scene that failed (redone by the next run) or was skipped (e.g. too short for a clip)."""
    _write(
        output_dir,
        name,
        {"status": status, "scene": str(scene), "reason": reason, "seconds": {"total": round(seconds, 3)}},
    )


def read_record(output_dir: Path, name: str) -> Optional[dict[str, Any]]:
    path = record_path(output_dir, name)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # not one of ours (records are written atomically): treated as unfinished


def is_done(output_dir: Path, name: str) -> bool:
    """A scene is finished when its record says so and every clip it lists is on disk."""
    record = read_record(output_dir, name)
    if record is None or record.get("status") != DONE:
        return False
    out = Path(output_dir)
    return all(
        (out / kind / f"{clip['name']}.mp4").is_file()
        for clip in record.get("clips", [])
        for kind in ("gt", "artifact")
    )


def read_records(output_dir: Path) -> list[dict[str, Any]]:
    folder = Path(output_dir) / RECORDS_DIR
    if not folder.is_dir():
        return []
    records = []
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("."):
            continue
        record = read_record(output_dir, path.stem)
        if record is not None:
            records.append(record)
    return records


def merged_labels(records: list[dict[str, Any]]) -> list[ClipLabel]:
    """The label records of every finished scene, in scene then clip order, each clip once."""
    labels, seen = [], set()
    for record in records:
        if record.get("status") != DONE:
            continue
        for clip in record.get("clips", []):
            label = ClipLabel.from_dict(clip, where=f"{RECORDS_DIR}/{record.get('name')}.json")
            if label.name not in seen:
                seen.add(label.name)
                labels.append(label)
    return labels


def merge_labels(output_dir: Path) -> list[ClipLabel]:
    """Rewrite ``OUT/labels.jsonl`` from the finished scenes' records; return its records."""
    labels = merged_labels(read_records(output_dir))
    write_labels(Path(output_dir) / LABELS_FILE, labels)
    return labels


def unfinished_scenes(output_dir: Path, records: list[dict[str, Any]]) -> list[str]:
    """Scenes with a work folder but no record: running now, or interrupted (the next run redoes them)."""
    work = Path(output_dir) / WORK_DIR
    recorded = {r.get("name") for r in records}
    if not work.is_dir():
        return []
    return sorted(p.name for p in work.iterdir() if p.is_dir() and p.name not in recorded)


def status_text(output_dir: Path) -> tuple[str, int]:
    """``aw-simulate status``'s report (per-type and per-scene counts, failures, time) and its exit status."""
    out = Path(output_dir)
    if not out.is_dir():
        raise RecordError(f"{out} is not a folder; pass the --output-dir of an aw-simulate run.")
    records = read_records(out)
    if not records and not (out / RECORDS_DIR).is_dir():
        raise RecordError(
            f"{out} holds no aw-simulate records ({RECORDS_DIR}/); pass the --output-dir of an aw-simulate run."
        )
    labels = merge_labels(out)
    by_status = Counter(r.get("status") for r in records)
    types = Counter(t for label in labels for t in label.types)
    recipes = Counter(label.recipe for label in labels)
    lines = [
        f"{out}: {len(labels)} clips from {by_status[DONE]} finished scenes; {by_status[SKIPPED]} skipped, "
        f"{by_status[FAILED]} failed; labels merged into {out / LABELS_FILE}.",
        "",
        "| artifact type | clips |",
        "| --- | --- |",
        *[f"| {t} | {types[t]} |" for t in ARTIFACT_TYPES],
        "",
        "| recipe | clips |",
        "| --- | --- |",
        *[f"| {r} | {n} |" for r, n in sorted(recipes.items())],
        "",
        "| scene | status | clips | trainings | iterations | training s | rendering s | encoding s | total s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    totals = Counter()
    for record in records:
        seconds = record.get("seconds", {})
        totals.update({k: v for k, v in seconds.items() if isinstance(v, (int, float))})
        cells = [
            record.get("name", "?"),
            record.get("status", "?"),
            str(len(record.get("clips", []))),
            str(record.get("trainings", 0)),
            str(record.get("iterations", 0)),
            *(f"{seconds.get(k, 0.0):.1f}" for k in ("training", "rendering", "encoding", "total")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    hours = totals.get("total", 0.0) / 3600
    lines += [
        "",
        f"Time in all finished, skipped and failed scenes: {totals.get('total', 0.0):.1f} s "
        f"(training {totals.get('training', 0.0):.1f} s, rendering {totals.get('rendering', 0.0):.1f} s, "
        f"encoding {totals.get('encoding', 0.0):.1f} s)"
        + (f"; {len(labels) / hours:.1f} clips per hour of scene time." if hours > 0 and labels else "."),
    ]
    failures = [r for r in records if r.get("status") in (FAILED, SKIPPED)]
    if failures:
        lines += ["", "Failed or skipped scenes:"]
        lines += [f"  {r.get('name')} ({r.get('status')}): {r.get('reason', '')}" for r in failures]
    pending = unfinished_scenes(out, records)
    if pending:
        lines += ["", f"Unfinished (running now, or interrupted and redone by the next run): {', '.join(pending)}."]
    return "\n".join(lines) + "\n", 2 if by_status[FAILED] else 0
