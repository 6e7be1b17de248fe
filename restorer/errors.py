"""Error types raised by the restorer for bad input (one clear sentence each)."""

from __future__ import annotations


class RestorerInputError(ValueError):
    """Raised when the caller hands the restorer something it cannot use.

    Covers bad clips (too short, wrong shape, values out of range), missing or
    misplaced weight roots (the message carries the exact download command) and
    LoRA files whose keys do not fit the transformer.
    """
