"""The two stages of :class:`artifactworld_ns.restorer.pipeline.ArtifactRestorer` on model-size videos (a mixin).

Stage 1 (LoRA1) samples the heatmap latent from ``[z_ref, z_hm]`` and decodes it; the hand-off
(:func:`artifactworld_ns.restorer.aatf.hand_off_heatmap`) prepares it for stage 2 (LoRA2), which runs AATF. Each stage
seeds its own generator and draws in the official order (see :mod:`artifactworld_ns.restorer.pipeline`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor

from .aatf import STAGE2_ADAPTER, hand_off_heatmap, sample_restored_latent
from .conform import ConformPlan, plan_conform
from .heatmap import STAGE1_ADAPTER, sample_heatmap_latent
from .latents import decode_latents, encode_video
from .lora import set_active_adapter
from .sampler import ProgressCallback, initial_noise, latent_video_coords, linear_quadratic_sigmas


class StageRunner:
    """Stage 1, stage 2 and their shared steps; needs ``transformer``, ``vae``, ``prompts``, ``settings``,
    ``progress``, ``execution_device``, ``latent_shape`` and ``auxiliary_latents`` from the restorer."""

    def _both_stages(self, reference: Tensor, opacity: Tensor | None) -> tuple[Tensor, Tensor]:
        """Model-size reference -> (restored frames, RGB heatmap handed to stage 2), both ``F`` frames."""
        with self._progress_bar() as progress:
            heatmap, z_ref = self._stage1(reference, progress)
            heatmap = hand_off_heatmap(heatmap, opacity)
            restored = self._stage2(reference, heatmap, progress, z_ref=z_ref)
        return restored, heatmap

    def _stage1(self, reference: Tensor, progress: ProgressCallback | None) -> tuple[Tensor, Tensor]:
        """Model-size reference ``[F, h, w, 3]`` -> (decoded RGB heatmap ``[F, h, w, 3]``, ``z_ref``)."""
        generator, noise = self._stage_start(reference)
        z_ref = self._encode(reference, generator)
        set_active_adapter(self.transformer, STAGE1_ADAPTER)
        z_hm = sample_heatmap_latent(
            self.transformer,
            self.prompts[STAGE1_ADAPTER],
            z_ref,
            noise,
            linear_quadratic_sigmas(self.settings.heatmap_steps),
            self._coords(z_ref),
            generator,
            progress,
        )
        return self._decode(z_hm).cpu(), z_ref

    def _stage2(
        self, reference: Tensor, heatmap: Tensor, progress: ProgressCallback | None, z_ref: Tensor | None = None
    ) -> Tensor:
        """Model-size reference and RGB heatmap ``[F, h, w, 3]`` -> restored frames ``[F, h, w, 3]``.

        ``z_ref`` from stage 1 is reused: with the same seed the official stage 2 draws the same
        noise and the same posterior sample for the reference, so only the generator is advanced.
        """
        generator, noise = self._stage_start(reference)
        if z_ref is None:
            z_ref = self._encode(reference, generator)
        else:
            self._skip_posterior_sample(z_ref.shape, generator)
        z_hm = self._encode(heatmap, generator)
        z_full, z_null = self.auxiliary_latents(*reference.shape[:3], z_ref.shape)
        set_active_adapter(self.transformer, STAGE2_ADAPTER)
        z_target = sample_restored_latent(
            self.transformer,
            self.prompts[STAGE2_ADAPTER],
            z_ref,
            z_hm,
            z_full,
            z_null,
            self.settings.schedule,
            noise,
            linear_quadratic_sigmas(self.settings.num_inference_steps),
            self._coords(z_ref),
            generator,
            progress,
        )
        return self._decode(z_target).cpu()

    def _stage_start(self, reference: Tensor) -> tuple[torch.Generator, Tensor]:
        """A fresh generator (the stage's seed) and the target noise, drawn first as in the official pipeline."""
        generator = torch.Generator(self.execution_device).manual_seed(self.settings.seed)
        return generator, initial_noise(self.latent_shape(*reference.shape[:3]), generator, self.execution_device)

    def _skip_posterior_sample(self, shape: torch.Size, generator: torch.Generator) -> None:
        """Advance ``generator`` exactly as the VAE posterior sample of a latent of ``shape`` would."""
        from diffusers.utils.torch_utils import randn_tensor  # diffusers loads on first use: `aw-* --help` stays fast

        randn_tensor(
            tuple(shape), generator=generator, device=self.execution_device, dtype=next(self.vae.parameters()).dtype
        )

    def _encode(self, video: Tensor, generator: torch.Generator) -> Tensor:
        return encode_video(self.vae, video, generator)

    def _decode(self, latents: Tensor) -> Tensor:
        return decode_latents(self.vae, latents)

    def _plan(self, frames: int, height: int, width: int) -> ConformPlan:
        return plan_conform(frames, height, width, self.settings.processing_max_side, self.settings.processing_size)

    def _coords(self, z_ref: Tensor) -> Tensor:
        _, _, f, h, w = z_ref.shape
        return latent_video_coords(f, h, w, frame_rate=self.settings.frame_rate)

    @contextlib.contextmanager
    def _progress_bar(self) -> Iterator[ProgressCallback | None]:
        if self.progress is not None or not self.settings.show_progress:
            yield self.progress
            return
        from rich.markup import escape
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            tasks: dict[str, int] = {}

            def update(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(escape(f"{self.settings.label}{stage}"), total=total)
                bar.update(tasks[stage], completed=done)

            yield update
