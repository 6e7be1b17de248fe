"""Pieces the benchmark scripts share: peak memory of this process and a synthetic test clip."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def moving_pattern(frames: int, height: int, width: int):
    """A smooth moving colour pattern ``[T, H, W, 3]`` in [0, 1]: stands in for a clean video."""
    import torch

    t = torch.arange(frames, dtype=torch.float32).view(-1, 1, 1)
    y = torch.linspace(0, 1, height).view(1, -1, 1)
    x = torch.linspace(0, 1, width).view(1, 1, -1)
    r = 0.5 + 0.4 * torch.sin(6 * x + 0.4 * t)
    g = 0.5 + 0.4 * torch.cos(5 * y - 0.3 * t)
    b = 0.5 + 0.3 * torch.sin(4 * (x + y) + 0.2 * t)
    return torch.stack(torch.broadcast_tensors(r, g, b), dim=-1)


def ensure_restorer_importable() -> None:
    """Make ``artifactworld_ns.restorer`` importable from this checkout when the project is not installed (a GPU
    machine with the carried wheels on ``PYTHONPATH``): ``restorer/`` installs inside ``artifactworld_ns``
    (pyproject's package-dir), so the checkout's root joins that package's search path, as the install would."""
    try:
        import artifactworld_ns.restorer  # noqa: F401

        return
    except ModuleNotFoundError as err:
        if err.name not in ("artifactworld_ns", "artifactworld_ns.restorer"):
            raise
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    import artifactworld_ns

    if root not in artifactworld_ns.__path__:
        artifactworld_ns.__path__.append(root)
