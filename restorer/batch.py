"""Shared batch machinery of the ``aw-*`` command-line tools.

- :func:`list_videos` + :func:`shard` + :func:`process_index`: a sorted file list split by index
  over the processes of an ``accelerate launch`` / ``torchrun`` job (``RANK`` / ``WORLD_SIZE``), so
  every file goes to exactly one process; :func:`pair_videos`: the same-named mp4s of a GT and an
  artifact folder (``aw-prepare``, ``aw-make-pairs``).
- :func:`run_batch`: a rich progress bar over the files; a file whose work raises is recorded with a
  one-sentence reason and the batch goes on (a full disk stops it: every later file would fail too);
  outputs already present are skipped quietly, or with the reason when the work returns a :class:`Skip`
  (made with other settings); :meth:`BatchResult.report` lists failures at the end and returns the exit
  status.
- :class:`InputError` / :func:`print_error`: bad input is reported in one sentence, never a traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .errors import InputError, RestorerError, RestorerInputError
from .option_checks import describe_os_error, is_disk_full

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
"""Some file failed for a reason that is not bad input (a bug or an environment problem)."""
EXIT_BAD_INPUT = 2
"""Bad input: a missing folder, or files that could not be used (unreadable, zero frames, ...)."""

VIDEO_SUFFIXES = (".mp4",)


class BatchAbort(RestorerError):
    """Raised by a batch's work function to stop the whole batch (e.g. the model failed to load)."""


class Outcome(str, Enum):
    DONE = "done"
    SKIPPED = "skipped"
    """The output is already there, made with the same settings (or with unrecorded ones): skipped quietly."""


@dataclass(frozen=True)
class Skip:
    """The output is already there but was made with other settings: skipped, and the reason is said."""

    reason: str


def print_error(console: Console, message: str) -> None:
    """Print a one-sentence error (user text is not parsed as rich markup)."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_note(console: Console, message: str) -> None:
    console.print(f"[yellow]note:[/] {escape(message)}", highlight=False, soft_wrap=True)


def require_folder(path: Path, what: str) -> Path:
    """Return ``path`` if it is an existing folder, else raise :class:`InputError`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"The {what} {path} does not exist.")
    if not path.is_dir():
        raise InputError(f"The {what} {path} is not a folder.")
    return path


def require_pair_folders(gt_dir: Path, artifact_dir: Path, output_dir: Path) -> tuple[Path, Path]:
    """The GT and artifact folders of a pair-reading command, and an output folder apart from both."""
    gt_dir = require_folder(gt_dir, "GT folder (--gt-dir)")
    artifact_dir = require_folder(artifact_dir, "artifact folder (--artifact-dir)")
    if output_dir.resolve() in (gt_dir.resolve(), artifact_dir.resolve()):
        raise InputError(f"The output folder {output_dir} must differ from the GT and artifact folders.")
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"The output folder {output_dir} exists and is not a folder.")
    return gt_dir, artifact_dir


@dataclass
class VideoPairs:
    """The mp4s of a GT folder and an artifact folder, by file name, and the names found in both."""

    gt: dict[str, Path]
    artifact: dict[str, Path]
    names: list[str]

    def unpaired_notes(self, consequence: str) -> list[str]:
        """One note per video without its partner, ending in ``consequence`` (e.g. "it was skipped")."""
        gt, artifact = set(self.gt), set(self.artifact)
        notes = [
            f"{n} is in the GT folder but not in the artifact folder; {consequence}." for n in sorted(gt - artifact)
        ]
        notes += [
            f"{n} is in the artifact folder but not in the GT folder; {consequence}." for n in sorted(artifact - gt)
        ]
        return notes


def pair_videos(gt_dir: Path, artifact_dir: Path) -> VideoPairs:
    """Same-named mp4s of the two folders (:func:`list_videos` of each)."""
    gt = {p.name: p for p in list_videos(gt_dir)}
    artifact = {p.name: p for p in list_videos(artifact_dir)}
    return VideoPairs(gt, artifact, sorted(set(gt) & set(artifact)))


def list_videos(folder: Path) -> list[Path]:
    """Sorted ``*.mp4`` files directly in ``folder``; hidden files (our temporaries) are ignored."""
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in VIDEO_SUFFIXES
    )


def process_index(environ: dict[str, str] | None = None) -> tuple[int, int]:
    """``(rank, world_size)`` of this process from ``RANK`` / ``WORLD_SIZE`` (set by torchrun and
    ``accelerate launch``); ``(0, 1)`` when not launched as a multi-process job."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
    except ValueError:
        raise InputError(
            f"RANK={env.get('RANK')!r} and WORLD_SIZE={env.get('WORLD_SIZE')!r} must be integers."
        ) from None
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"RANK={rank} is not in [0, WORLD_SIZE={world}).")
    return rank, world


def local_rank(environ: dict[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    return int(env.get("LOCAL_RANK", "0") or 0)


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Items ``rank, rank + world_size, ...`` of the sorted sequence: a partition over the ranks."""
    return list(items[rank::world_size])


@dataclass
class BatchResult:
    """What happened to each item of a batch."""

    tool: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    unexpected: set[str] = field(default_factory=set)
    stale: list[str] = field(default_factory=list)
    """Skipped outputs that were made with other settings."""
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.unexpected:
            return EXIT_FAILED
        return EXIT_BAD_INPUT if self.failed else EXIT_OK

    def report(self, console: Console, rank_label: str = "") -> int:
        """Print the summary (and every failed file with its reason); return the exit status."""
        for note in self.notes:
            print_note(console, note)
        console.print(
            f"{self.tool}{rank_label}: {len(self.done)} written, "
            f"{len(self.skipped)} skipped (outputs already present), {len(self.failed)} failed.",
            highlight=False,
            markup=False,
        )
        if self.stale:
            print_note(
                console,
                f"{len(self.stale)} of the skipped outputs were made with other settings (listed above); "
                "pass --overwrite to redo them with these.",
            )
        if self.failed:
            console.print(f"[bold red]Failed ({len(self.failed)}):[/]", highlight=False)
            for name, reason in self.failed:
                console.print(f"  {name}: {reason}", highlight=False, soft_wrap=True, markup=False)
        return self.exit_code


def _describe(err: BaseException) -> tuple[str, bool]:
    """One-sentence reason for a failure and whether it was expected (bad input)."""
    if isinstance(err, RestorerInputError):  # InputError and VideoReadError are RestorerInputErrors
        return str(err), False
    if (sentence := describe_os_error(err)) is not None:
        return sentence, False
    return f"unexpected {type(err).__name__}: {err}", True


def run_batch(
    tool: str,
    items: Sequence[T],
    work: Callable[[T], Outcome | Skip],
    *,
    name: Callable[[T], str] = str,
    console: Console,
    description: str = "",
    on_start: Callable[[Progress], None] | None = None,
) -> BatchResult:
    """Run ``work`` on every item under a rich progress bar, recording outcomes and failures.

    ``on_start`` receives the live :class:`Progress` (e.g. to add per-step sub-tasks).
    """
    result = BatchResult(tool=tool)
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[current]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description or tool, total=len(items), current="")
        if on_start is not None:
            on_start(progress)
        for item in items:
            label = name(item)
            progress.update(task, current=label)
            try:
                outcome = work(item)
            except (KeyboardInterrupt, BatchAbort):
                raise
            except Exception as err:  # noqa: BLE001 - every failure is recorded, the batch goes on
                if is_disk_full(err):
                    raise BatchAbort(_describe(err)[0]) from None
                reason, unexpected = _describe(err)
                result.failed.append((label, reason))
                if unexpected:
                    result.unexpected.add(label)
                progress.console.print(
                    f"[red]failed[/] {escape(label)}: {escape(reason)}", highlight=False, soft_wrap=True
                )
            else:
                if isinstance(outcome, Skip):
                    result.skipped.append(label)
                    result.stale.append(label)
                    progress.console.print(f"skip {label}: {outcome.reason}", highlight=False, markup=False)
                elif outcome is Outcome.SKIPPED:
                    result.skipped.append(label)
                else:
                    result.done.append(label)
            progress.advance(task)
        progress.update(task, current="")
    return result


class StepProgress:
    """A ``progress(stage, done, total)`` callback that shows sampler steps as sub-tasks of a batch bar."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.progress: Progress | None = None
        self.tasks: dict[str, int] = {}

    def attach(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks.clear()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.progress is None:
            return
        task = self.tasks.get(stage)
        if task is None:
            task = self.tasks[stage] = self.progress.add_task(f"  {self.prefix}{stage}", total=total, current="")
        self.progress.update(task, completed=done, total=total)
        if done >= total:
            self.progress.remove_task(task)
            del self.tasks[stage]


def rank_label(rank: int, world_size: int) -> str:
    return f" (rank {rank}/{world_size})" if world_size > 1 else ""
