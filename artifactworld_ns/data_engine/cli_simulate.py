"""``aw-simulate``: paired training clips from captures, for the nine artifact types (paper Sec. 3.2).

    aw-simulate SCENES --output-dir OUT [--clip-frames 89] [--frame-step 8] [--checkpoint-range 1500 12000]
                [--types Floaters Cracks ...] [--device cpu|cuda] [--dry-run] ...
    aw-simulate status OUT

``SCENES`` is a nerfstudio scene folder, a folder of them, or a text file listing them. Writes
``OUT/gt/NAME.mp4`` (captured held-out frames), ``OUT/artifact/NAME.mp4`` (the degraded model at the same
cameras) and ``OUT/labels.jsonl``; ``OUT/scenes/SCENE.json`` records each scene (finished scenes are
skipped by the next run). Under a SLURM array or torchrun each process takes its share of the scenes
(:mod:`.sharding`). See ``docs/data_engine.md``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional, Sequence

import tyro
from rich.console import Console

from artifactworld_ns.data_engine import records
from artifactworld_ns.data_engine.scenes import SceneError, SceneTooShortError, find_scenes, scene_names
from artifactworld_ns.data_engine.sharding import shard_index
from artifactworld_ns.data_engine.simulate import (
    PreparedScene,
    SimulationConfig,
    SimulationInputError,
    prepare_scene,
    simulate_scene,
    validate_config,
)
from artifactworld_ns.restorer import (
    InputError,
    Outcome,
    local_rank,
    print_error,
    print_note,
    rank_label,
    run_batch,
    shard,
)


@dataclass(kw_only=True)
class SimulateArgs(SimulationConfig):
    """Simulate paired clean / degraded clips from captures (paper Sec. 3.2): aw-simulate SCENES --output-dir OUT."""

    scenes: tyro.conf.Positional[Annotated[Path, tyro.conf.arg(metavar="SCENES")]]
    """A nerfstudio scene folder (transforms.json + images), a folder of scene folders, or a text file of scene paths."""
    output_dir: Path
    """Where gt/, artifact/, labels.jsonl and scenes/ (one record per scene) go."""
    dry_run: bool = False
    """Print the plan (scenes, trajectory filter, clips, recipes, trainings) and write nothing."""


@dataclass
class StatusArgs:
    """Merge the shards' labels into OUT/labels.jsonl; print clips per type and per scene, failures and time."""

    output_dir: tyro.conf.Positional[Annotated[Path, tyro.conf.arg(metavar="OUT")]]
    """The --output-dir of an aw-simulate run."""


def check_output_dir(output_dir: Path) -> None:
    probe = Path(output_dir).absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise SimulationInputError(
            f"The output folder {output_dir} lies under the file {probe}; choose another --output-dir."
        )


def plan_text(prepared: list[PreparedScene], config: SimulationConfig) -> str:
    """The dry run's plan: per scene its filter report, clips and trainings; then the totals."""
    lines = []
    for scene in prepared:
        capture, split, plan = scene.capture, scene.split, scene.plan
        lines += [
            f"{plan.name} ({capture.folder}): {len(capture)} frames; trajectory filter: {scene.report.summary()}",
            f"  sparse split: {len(split.train)} training frames (every {config.frame_step}th kept frame), "
            f"{len(split.held_out)} held out, {len(split.windows)} clip windows of {config.clip_frames} frames",
        ]
        pruned = sorted(scene.report.reasons.items())
        if pruned:
            shown = ", ".join(f"{i} ({why})" for i, why in pruned[:12])
            lines.append(f"  pruned frames: {shown}{' ...' if len(pruned) > 12 else ''}")
        for run in plan.runs:
            extra = f", point dropout {run.point_dropout}" if run.name == "dilation" else ""
            extra += f", transient in {run.ghost_fraction:.0%} of the training images" if run.name == "ghosting" else ""
            lines.append(
                f"  training: {run.name} run, {run.iterations} iterations{extra}; clips at {', '.join(map(str, run.checkpoints))}"
            )
        for job in plan.jobs:
            detail = ", ".join(f"{k} {v}" for k, v in job.params.items() if k not in ("frame_step", "seed"))
            lines.append(
                f"  clip {job.name}: {', '.join(job.recipe.types)} ({job.recipe.recipe}; {detail}); "
                f"frames {job.frames[0]}-{job.frames[-1]}"
            )
    clips = sum(len(s.plan.jobs) for s in prepared)
    trainings = sum(len(s.plan.runs) for s in prepared)
    iterations = sum(s.plan.iterations for s in prepared)
    lines.append(
        f"Plan: {len(prepared)} scenes, {clips} clips of {config.clip_frames} frames, {trainings} training runs "
        f"({iterations} iterations in all) on {config.resolved_device()}."
    )
    return "\n".join(lines) + "\n"


def run(args: SimulateArgs, console: Console, environ: Optional[dict] = None) -> int:
    """``aw-simulate SCENES``: check everything, plan, then simulate this shard's scenes."""
    started = time.perf_counter()
    try:
        types = validate_config(args)
        check_output_dir(args.output_dir)
        folders = find_scenes(args.scenes)
        index, count = shard_index(environ)
    except (SimulationInputError, InputError) as error:
        print_error(console, str(error))
        return 2
    names = scene_names(folders)
    mine = shard(folders, index, count)
    out = Path(args.output_dir)
    prepared: list[PreparedScene] = []
    finished: list[str] = []
    short: list[tuple[Path, str, str]] = []
    bad: list[tuple[Path, str, str]] = []
    with console.status("planning") as status:
        for folder in mine:
            name = names[folder]
            status.update(f"planning {name}")
            if not args.dry_run and records.is_done(out, name):
                finished.append(name)
                continue
            try:
                prepared.append(prepare_scene(folder, name, args, types))
            except SceneTooShortError as error:
                short.append((folder, name, str(error)))
            except SceneError as error:
                bad.append((folder, name, str(error)))
    label = rank_label(index, count)
    if args.dry_run:
        print(plan_text(prepared, args), end="")
        for _, _, message in short + bad:
            print_error(console, message)
        return 0 if prepared or not (short or bad) else 2
    if not prepared and not finished:
        for _, _, message in short + bad:
            print_error(console, message)
        if not short and not bad:
            print_note(console, f"aw-simulate{label}: no scene to simulate in this shard.")
            return 0
        return 2  # nothing usable: nothing written
    for folder, name, message in short:
        records.write_failed(out, folder, name, message, 0.0, status=records.SKIPPED)
    for folder, name, message in bad:
        records.write_failed(out, folder, name, message, 0.0)

    from artifactworld_ns.metrics import MetricSuite

    config_device = args.resolved_device()
    rank = local_rank(environ)
    if config_device == "cuda":
        import torch

        torch.cuda.set_device(rank)
    metrics = MetricSuite.build(config_device, with_video_metrics=False)
    holder: dict = {}

    def work(scene: PreparedScene) -> Outcome:
        start = time.perf_counter()
        try:
            simulate_scene(scene, out, args, progress=holder.get("progress"), metrics=metrics, local_rank=rank)
        except Exception as error:  # noqa: BLE001 - recorded for `status`, then reported by run_batch
            reason = str(error) if isinstance(error, InputError) else f"unexpected {type(error).__name__}: {error}"
            records.write_failed(out, scene.capture.folder, scene.plan.name, reason, time.perf_counter() - start)
            raise
        return Outcome.DONE

    result = run_batch(
        f"aw-simulate{label}",
        prepared,
        work,
        name=lambda scene: scene.plan.name,
        console=console,
        description=f"aw-simulate{label}: scenes",
        on_start=lambda progress: holder.update(progress=progress),
    )
    result.skipped.extend(finished)
    for _, name, message in short:
        result.notes.append(f"{name} was skipped: {message}")
    for _, name, message in bad:
        result.failed.append((name, message))
    labels = records.merge_labels(out)
    code = result.report(console, label)
    console.print(
        f"aw-simulate{label}: {len(labels)} clips in {out / 'labels.jsonl'} (all shards' finished scenes); "
        f"{time.perf_counter() - started:.0f} s. `aw-simulate status {out}` merges and summarises all shards.",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    return code


def run_status(args: StatusArgs, console: Console) -> int:
    try:
        text, code = records.status_text(args.output_dir)
    except records.RecordError as error:
        print_error(console, str(error))
        return 2
    print(text, end="")
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console-script entry point of ``aw-simulate``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    console = Console(stderr=True)
    if argv[:1] == ["status"]:
        return run_status(tyro.cli(StatusArgs, args=argv[1:], prog="aw-simulate status"), console)
    args = tyro.cli(SimulateArgs, args=argv, prog="aw-simulate", description=_description())
    return run(args, console)


def _description() -> str:
    return (
        "Simulate paired clean / degraded clips from captures (paper Sec. 3.2): aw-simulate SCENES --output-dir OUT. "
        "`aw-simulate status OUT` merges the shards' labels and prints counts, failures and time."
    )


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
