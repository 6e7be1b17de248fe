"""``aw-train-lora``: train the stage-1 (heatmap) or stage-2 (AATF) LoRA adapter as the official trainer does.

    aw-train-lora --stage 1 --preset full --data PAIRS --output-dir runs/stage1     # official 7500 steps
    accelerate launch --num_processes 8 -m artifactworld_ns.restorer.cli_train_lora --stage 2 ...   # multi-GPU / multi-node

Writes ``OUTPUT/stage1_pred_headmap_lora.safetensors`` (or ``stage2_noisemap_blend_lora.safetensors``)
in the official diffusers format, its ComfyUI copy ``OUTPUT/comfy_<name>``, a JSON of the training
config next to it, checkpoints under ``OUTPUT/checkpoints/checkpoint_K`` (the newest
``--checkpoints-total-limit``, 3 by default, are kept; ``--resume`` continues from the latest and leaves a
finished run as it is) and logs under ``OUTPUT/logs``. See :mod:`artifactworld_ns.restorer.training` for what matches the official trainer.
"""

from __future__ import annotations

import sys

import tyro
from rich.console import Console

from .batch import print_error, print_note
from .errors import RestorerInputError
from .train_config import TrainConfig
from .untrained import announce_untrained


def run(config: TrainConfig, console: Console | None = None) -> int:
    from .training import train

    console = console or Console(stderr=True)
    if config.preset == "tiny":
        print_note(console, announce_untrained("backbone"))
    try:
        result = train(config, console=console)
    except RestorerInputError as err:
        print_error(console, str(err))
        return 2
    if result.already_finished:
        console.print(
            f"aw-train-lora: the run in {config.output_dir} already finished at step {result.end_step} "
            f"(adapter {result.adapter_path.name}); nothing was changed, raise --steps to train on.",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        return 0
    done = result.end_step - result.start_step
    memory = result.peak_memory_bytes / 2**20
    console.print(
        f"aw-train-lora: stage {config.stage} adapter at step {result.end_step} written to {result.adapter_path} "
        f"(ComfyUI copy {result.comfy_path.name}, config {result.config_path.name}); {done} steps this run, {result.steps_per_second:.2f} steps/s, "
        f"peak memory {memory:.0f} MiB.",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point of ``aw-train-lora``."""
    return run(tyro.cli(TrainConfig, args=argv))


if __name__ == "__main__":
    sys.exit(main())
