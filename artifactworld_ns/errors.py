"""The nerfstudio glue's errors, under the package's one base (:class:`artifactworld_ns.restorer.ArtifactWorldError`),
and :func:`stop`, the one way an edge (a command, the method's trainer, a run loaded by nerfstudio's tools) turns
such an error into a sentence and exit status 2.

The model, datamanager and pipeline raise; they never exit. The edges catch :class:`ArtifactWorldError`.
"""

from __future__ import annotations

from typing import NoReturn

from nerfstudio.utils.rich_utils import CONSOLE

from artifactworld_ns.restorer import ArtifactWorldError

EXIT_REFUSED = 2
"""Exit status of a refused run (bad option, scene or checkpoint)."""


class PreflightError(ArtifactWorldError, ValueError):
    """A bad option, scene or checkpoint of a run, found before it trains; the message says what and how to fix it."""


class SceneLoadError(ArtifactWorldError, ValueError):
    """Scene data that nerfstudio could not load (a dataparser's error, an unreadable image); one sentence."""


def stop(message: str) -> NoReturn:
    """One sentence on nerfstudio's console and exit status 2. For the edges only."""
    CONSOLE.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise SystemExit(EXIT_REFUSED)
