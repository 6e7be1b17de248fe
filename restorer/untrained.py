"""How the tiny preset (random weights) says that it is UNTRAINED: a label for progress lines, and one
sentence per process for the command that uses it."""

from __future__ import annotations

UNTRAINED_LABEL = "[tiny preset: UNTRAINED, random weights]"
"""What the tiny preset's progress bars and log lines start with."""


def untrained_note(part: str = "restorer") -> str:
    """The one sentence every command prints about the tiny preset; ``part`` names the piece of it that
    the command uses (``restorer``, ``model``, ``VAE``, ``backbone``)."""
    return f"The tiny preset's {part} is UNTRAINED (random weights): fine for tests, CPU demos and smoke runs, not for results."


_untrained_note_shown: list[bool] = []


def announce_untrained(part: str = "restorer") -> str:
    """:func:`untrained_note` for a command to print once at its start; the restorer's loader then prints only
    the short label (:func:`first_untrained_note`)."""
    _untrained_note_shown.append(True)
    return untrained_note(part)


def first_untrained_note(part: str = "restorer") -> str | None:
    """:func:`untrained_note` unless this process has said it already (:func:`announce_untrained`), else None."""
    if _untrained_note_shown:
        return None
    return announce_untrained(part)
