"""Which scenes this process simulates: a SLURM job array, torchrun's processes, or both.

A SLURM array task reads ``SLURM_ARRAY_TASK_ID`` (offset by ``SLURM_ARRAY_TASK_MIN``, divided by
``SLURM_ARRAY_TASK_STEP``) out of ``SLURM_ARRAY_TASK_COUNT``; a torchrun / ``accelerate launch`` process
reads ``RANK`` out of ``WORLD_SIZE`` (the restorer's :func:`process_index`, as ``aw-restore`` does). Under
both (one torchrun per array task) the shard is ``task * WORLD_SIZE + RANK`` of ``COUNT * WORLD_SIZE``.
The sorted scene list is split with the restorer's :func:`shard`, so every scene goes to exactly one process.
"""

from __future__ import annotations

import os
from typing import Optional

from artifactworld_ns.restorer import InputError, process_index


def slurm_array_index(environ: Optional[dict[str, str]] = None) -> tuple[int, int]:
    """``(task, count)`` of a SLURM array task; ``(0, 1)`` outside an array."""
    env = os.environ if environ is None else environ
    if "SLURM_ARRAY_TASK_ID" not in env:
        return 0, 1
    try:
        task = int(env["SLURM_ARRAY_TASK_ID"])
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        step = int(env.get("SLURM_ARRAY_TASK_STEP", "1") or 1)
        count = int(env["SLURM_ARRAY_TASK_COUNT"])
    except KeyError:
        raise InputError(
            "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not; run under sbatch --array (Slurm 17.11 or newer)."
        ) from None
    except ValueError:
        raise InputError("The SLURM_ARRAY_TASK_* variables must be integers.") from None
    index = (task - first) // max(step, 1)
    if not 0 <= index < count:
        raise InputError(
            f"SLURM_ARRAY_TASK_ID={task} is not one of the {count} tasks starting at {first}; check the --array range."
        )
    return index, count


def shard_index(environ: Optional[dict[str, str]] = None) -> tuple[int, int]:
    """``(shard, shards)`` of this process (see the module doc)."""
    task, count = slurm_array_index(environ)
    rank, world = process_index(environ)
    return task * world + rank, count * world
