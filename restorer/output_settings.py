"""The settings an output was made with, kept in a small sidecar next to it (``NAME.settings.json``).

A rerun that finds an output compares the sidecar with its own settings: the same settings (or an output
without a sidecar, made before sidecars existed) skip quietly; other settings skip with the difference
named, so that a changed flag never passes unnoticed (``--overwrite`` redoes the output). Settings are
kept by flag name (``{"--steps": 8, ...}``), so the difference reads as the flags the user types.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .atomic import atomic_path

SIDECAR_SUFFIX = ".settings.json"


def sidecar_path(output: Path) -> Path:
    """``OUT/NAME.settings.json`` for ``OUT/NAME.mp4``."""
    output = Path(output)
    return output.with_name(output.stem + SIDECAR_SUFFIX)


def read_settings(output: Path) -> dict[str, Any] | None:
    """The recorded settings of ``output``; None when it has no readable sidecar."""
    try:
        data = json.loads(sidecar_path(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_settings(output: Path, settings: dict[str, Any]) -> None:
    """Record ``settings`` for ``output`` (atomic). Written before the output itself, so an output never
    carries a record of settings it was not made with."""
    with atomic_path(sidecar_path(output)) as tmp:
        tmp.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _show(value: Any) -> str:
    return "default" if value is None else str(value)


def describe_change(recorded: dict[str, Any] | None, current: dict[str, Any]) -> str | None:
    """``"--steps 4 (now 8), --seed 1 (now 42)"`` for the flags whose values differ; None when nothing differs
    or nothing was recorded."""
    if recorded is None:
        return None
    changed = [
        f"{flag} {_show(recorded.get(flag))} (now {_show(value)})"
        for flag, value in current.items()
        if recorded.get(flag) != value
    ]
    return ", ".join(changed) or None
