"""The project's error classes: one base for the whole package, one for the restorer under it.

Every error we raise for bad input or a refused run says what is wrong and how to fix it in one sentence,
formed once, where the fault is known; callers let it through unchanged. Only the edges (the ``aw-*``
commands and the nerfstudio trainer of the method) turn it into an exit status.

This module is the light layer's root: it imports nothing, so both sides (the restorer and the nerfstudio
glue, which subclasses :class:`ArtifactWorldError`) can import it.
"""

from __future__ import annotations


class ArtifactWorldError(Exception):
    """Base of every error this package raises on purpose; the message is one sentence for the user."""


class RestorerError(ArtifactWorldError):
    """Base of the restorer's errors (video in, video out; no nerfstudio)."""


class RestorerInputError(RestorerError, ValueError):
    """Raised when the caller hands the restorer something it cannot use.

    Covers bad clips (too short, wrong shape, values out of range), missing or
    misplaced weight roots (the message carries the exact download command),
    LoRA files whose keys do not fit the transformer, and bad command-line input.
    """


InputError = RestorerInputError
"""Bad user input of an ``aw-*`` command (the same class: one sentence, exit status 2)."""
