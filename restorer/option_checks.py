"""Checks that need no model: output paths, free disk space, the torch device and numeric options.

The command-line tools run them before they load anything, so a read-only output folder, a full disk,
``--device cuda`` on a machine without a GPU or ``--crf -5`` costs one sentence, not minutes of compute.
Each check raises :class:`RestorerInputError` naming the flag and the fix. :func:`describe_os_error`
turns the ``OSError`` of a write that failed anyway (the disk filled up meanwhile) into one sentence
that names a full disk as such.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from .errors import RestorerInputError

MIN_FREE_BYTES = 100 * 2**20
"""Free space an output folder needs before any compute: a handful of restored clips, with room to spare."""
MAX_CRF = 51
"""x264's largest constant rate factor (8-bit)."""
MIN_PROCESSING_SIDE = 32
"""The model works on multiples of 32 pixels (the VAE's spatial compression)."""
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
NOT_WRITABLE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}


def existing_ancestor(path: Path) -> Path:
    """``path`` itself when it exists, else its nearest existing parent folder."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_free_space(target: Path, flag: str, min_free: int = MIN_FREE_BYTES) -> None:
    """Refuse an output whose disk has less than ``min_free`` bytes free ("disk full")."""
    free = shutil.disk_usage(existing_ancestor(target)).free
    if free < min_free:
        raise RestorerInputError(
            f"The disk holding {target} is full (no space left: {free / 2**20:.0f} MiB free, at least "
            f"{min_free / 2**20:.0f} MiB needed); free some space or choose another {flag}."
        )


def _check_writable_under(folder: Path, target: Path, flag: str, min_free: int) -> None:
    """``folder`` (or its nearest existing parent) must be a writable folder on a disk with free space, so that
    ``target`` (the path given to ``flag``) can be written there."""
    probe = existing_ancestor(folder)
    if not probe.is_dir():
        raise RestorerInputError(f"The {flag} {target} lies under {probe}, which is a file; choose another {flag}.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RestorerInputError(
            f"The folder {probe} is not writable (read-only or another user's), so {flag} {target} cannot be "
            f"written; choose a writable {flag}."
        )
    check_free_space(target, flag, min_free)


def check_output_folder(folder: Path, flag: str, min_free: int = MIN_FREE_BYTES) -> Path:
    """The output folder (or, when it does not exist yet, its nearest existing parent) must be a writable folder
    on a disk with free space; returns ``folder``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RestorerInputError(f"The {flag} {folder} exists and is not a folder.")
    _check_writable_under(folder, folder, flag, min_free)
    return folder


def check_output_file(path: Path, flag: str, example: str = "out.mp4", min_free: int = MIN_FREE_BYTES) -> Path:
    """An output file path: not an existing folder, in a writable folder on a disk with free space."""
    path = Path(path)
    if path.is_dir():
        raise RestorerInputError(f"The {flag} {path} is a folder; give a file name, e.g. {flag} {path / example}.")
    _check_writable_under(path.parent, path, flag, min_free)
    return path


def check_device(device: str | None, flag: str = "--device") -> None:
    """A torch device string that this machine has (``cuda`` needs a CUDA GPU; ``cuda:N`` needs N + 1 GPUs)."""
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise RestorerInputError(f"{flag} {device!r} is not a torch device; use e.g. cpu, cuda or cuda:1.") from None
    if parsed.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise RestorerInputError(
            f"{flag} {device} needs a CUDA GPU and this machine has none that torch can use; use {flag} cpu "
            "(slow with the full preset) or run on a GPU machine."
        )
    count = torch.cuda.device_count()
    if parsed.index is not None and parsed.index >= count:
        raise RestorerInputError(
            f"{flag} {device} names GPU {parsed.index} but this machine has {count} (cuda:0 to cuda:{count - 1})."
        )


def check_crf(crf: int, flag: str = "--crf") -> None:
    if not 0 <= crf <= MAX_CRF:
        raise RestorerInputError(
            f"{flag} must be between 0 (lossless) and {MAX_CRF} (x264's range; 18 is visually lossless), got {crf}."
        )


def check_at_least(flag: str, value: int | float | None, minimum: int | float) -> None:
    """``value`` (when set) must be at least ``minimum``."""
    if value is not None and value < minimum:
        raise RestorerInputError(f"{flag} must be at least {minimum}, got {value}.")


def check_processing_max_side(value: int | None, flag: str = "--processing-max-side") -> None:
    if value is not None and value < MIN_PROCESSING_SIDE:
        raise RestorerInputError(
            f"{flag} must be at least {MIN_PROCESSING_SIDE} (the model works on multiples of "
            f"{MIN_PROCESSING_SIDE} pixels), got {value}; leave it out for the preset's size."
        )


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


def describe_os_error(error: BaseException) -> str | None:
    """One sentence for an ``OSError`` of a write (disk full, not writable); None for anything else."""
    if not isinstance(error, OSError) or error.errno is None:
        return None
    where = f" {error.filename}" if error.filename else ""
    if error.errno in DISK_FULL_ERRNOS:
        return f"The disk is full (no space left on device) while writing{where}; free some space and rerun."
    if error.errno in NOT_WRITABLE_ERRNOS:
        return f"Cannot write{where}: {os.strerror(error.errno).lower()}; choose a writable output folder."
    return None
