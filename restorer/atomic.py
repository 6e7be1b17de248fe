"""Atomic writes: a file or a folder appears under its final name complete or not at all.

Everything is first written under a hidden temporary name in the destination's own folder (so the
final rename is one atomic ``os.replace`` / ``rename`` on the same file system) and moved into place
only when the writing succeeded; on failure the temporary is removed. Readers skip hidden names.
Standard library only: the nerfstudio glue uses it too (exported by ``restorer/__init__.py``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


def temporary_path(final: Path) -> Path:
    """The hidden temporary name of ``final``: same folder, same suffix (writers such as ffmpeg pick the
    format by it), this process's id in the stem."""
    return final.with_name(f".{final.stem}.tmp-{os.getpid()}{final.suffix}")


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary file path next to ``path`` (its folder is created); when the block succeeds it
    replaces ``path``, else it is removed.

        with atomic_path(out / "report.json") as tmp:
            tmp.write_text(text)
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(final)
    tmp.unlink(missing_ok=True)  # a leftover of a killed process with the same id
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path: PathLike) -> Iterator[Path]:
    """Yield a new, empty hidden staging folder next to ``path``; when the block succeeds it replaces
    ``path`` (an older folder there is removed first), else it is removed with what it holds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield staging
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
