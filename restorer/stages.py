"""What both stages of :class:`artifactworld_ns.restorer.pipeline.ArtifactRestorer` run on, and the steps they share.

Stage 1 is :class:`artifactworld_ns.restorer.heatmap.HeatmapPredictor` (LoRA1), stage 2
:class:`artifactworld_ns.restorer.restoration_stage.RestorationStage` (LoRA2, AATF). Both take a
:class:`StageBackbone`: the one transformer carrying both adapters, the VAE, the prompt embeddings,
the settings and the device they compute on. ``ArtifactRestorer`` builds it for each call, so a
``to()`` or a change of ``settings`` between calls is seen by the next one.

Each stage seeds its own generator and draws in the official order (see
:mod:`artifactworld_ns.restorer.pipeline`): the target noise first (:meth:`StageBackbone.start`), then the
VAE posterior samples of its inputs, then the context noise of each step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from jaxtyping import Float
from torch import Tensor

from .conform import ConformPlan, plan_conform
from .latents import decode_latents, encode_video
from .presets import RestorerSettings
from .prompts import PromptEmbedding
from .sampler import ProgressCallback, initial_noise, latent_video_coords


@dataclass(frozen=True)
class StageBackbone:
    """The models and settings one restore call runs both stages on."""

    transformer: torch.nn.Module
    """The LTX-Video transformer with both LoRA adapters (the stage activates its own)."""
    vae: torch.nn.Module
    prompts: dict[str, PromptEmbedding]
    """Prompt embedding per adapter name."""
    settings: RestorerSettings
    execution_device: torch.device
    """Where the models compute (under group offloading the transformer's weights wait on the CPU)."""
    generator_device: torch.device | None = None
    """Where the stages' generators draw (default: ``execution_device``, as the official pipeline)."""

    def start(
        self, reference: Float[Tensor, "frames height width 3"]
    ) -> tuple[torch.Generator, Float[Tensor, "1 tokens channels"]]:
        """A fresh generator (the stage's seed) and the target noise, drawn first as in the official pipeline."""
        generator = torch.Generator(self.generator_device or self.execution_device).manual_seed(self.settings.seed)
        return generator, initial_noise(self.latent_shape(*reference.shape[:3]), generator, self.execution_device)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int, int]:
        """``(1, C, F', h', w')`` of a model-size video (8x time after frame 0, 32x space)."""
        t, s = self.vae.temporal_compression_ratio, self.vae.spatial_compression_ratio
        return (1, self.vae.config.latent_channels, (frames - 1) // t + 1, height // s, width // s)

    def encode(
        self, video: Float[Tensor, "frames height width 3"], generator: torch.Generator
    ) -> Float[Tensor, "1 channels latent_frames latent_height latent_width"]:
        return encode_video(self.vae, video, generator)

    def decode(
        self, latents: Float[Tensor, "1 channels latent_frames latent_height latent_width"]
    ) -> Float[Tensor, "frames height width 3"]:
        return decode_latents(self.vae, latents)

    def skip_posterior_sample(self, shape: torch.Size, generator: torch.Generator) -> None:
        """Advance ``generator`` exactly as the VAE posterior sample of a latent of ``shape`` would."""
        from diffusers.utils.torch_utils import randn_tensor  # diffusers loads on first use: `aw-* --help` stays fast

        randn_tensor(
            tuple(shape), generator=generator, device=self.execution_device, dtype=next(self.vae.parameters()).dtype
        )

    def coords(self, z_ref: Float[Tensor, "1 channels latent_frames latent_height latent_width"]) -> Tensor:
        """The target segment's RoPE coordinates (every segment reuses them)."""
        _, _, f, h, w = z_ref.shape
        return latent_video_coords(f, h, w, frame_rate=self.settings.frame_rate)


def conform_plan(settings: RestorerSettings, frames: int, height: int, width: int) -> ConformPlan:
    """How a ``frames x height x width`` input is brought to the model grid under ``settings``."""
    return plan_conform(frames, height, width, settings.processing_max_side, settings.processing_size)


@contextlib.contextmanager
def stage_progress(settings: RestorerSettings, progress: ProgressCallback | None) -> Iterator[ProgressCallback | None]:
    """``progress`` when given (or nothing with ``show_progress`` off), else a transient rich bar per stage."""
    if progress is not None or not settings.show_progress:
        yield progress
        return
    from rich.markup import escape
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(escape(f"{settings.label}{stage}"), total=total)
            bar.update(tasks[stage], completed=done)

        yield update
