"""ArtifactRestorer: video in, video out (paper Sec. 4).

``restore`` reads top to bottom:

1. conform the clip to the LTX grid (``8n + 1`` frames, sides multiple of 32),
2. build the DBA reference video (Eq. 1) and encode it to ``z_ref``,
3. stage 1 (LoRA1): sample the heatmap latent from ``[z_ref, z_hm]`` and decode the heatmap,
4. optionally raise the heatmap where the render is transparent (``max(h, 1 - opacity)``),
5. stage 2 (LoRA2): AATF with ``[z_ref, z_target, z~hm(s)]`` and the heatmap decay of Eq. 2,
6. decode and bring frames and heatmap back to the input's frame count and resolution.

One frozen transformer carries both LoRA adapters (homogeneous dual model).
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from restorer.aatf import (
    PAPER_BEST_SCHEDULE,
    STAGE2_ADAPTER,
    BlendTable,
    HeatmapSchedule,
    PiecewiseDecay,
    paper_best_schedule,
    raise_heatmap_by_opacity,
    sample_restored_latent,
)
from restorer.conform import ConformPlan, from_model, plan_conform, resize_image, to_model
from restorer.dba import build_reference_video
from restorer.errors import RestorerInputError
from restorer.heatmap import STAGE1_ADAPTER, sample_heatmap_latent
from restorer.latents import auxiliary_latents, decode_latents, encode_video, mask_to_video, video_to_mask
from restorer.loading import (
    Z_FULL_FILE,
    Z_NULL_FILE,
    ReleaseRoots,
    cache_dir,
    default_dtype,
    ensure_roots,
    load_auxiliary_latent,
    load_backbone,
    load_text_encoder,
    quiet_hub_progress,
    resolve_roots,
    text_encoder_identity,
)
from restorer.lora import load_lora_adapter, set_active_adapter
from restorer.prompts import STAGE_PROMPTS, PromptEmbedding, cached_prompt_embeddings
from restorer.sampler import ProgressCallback, flow_sigmas, latent_video_coords


FP8_SKIP_MODULES = ("pos_embed", "patch_embed", "norm", "^proj_in$", "^proj_out$", "lora_")
"""Modules kept in the compute dtype under fp8 storage: diffusers' defaults plus the LoRA adapters."""


@dataclass
class RestorationResult:
    """Restored frames ``[T, H, W, 3]`` and the heatmap used for them ``[T, H, W]``, both in ``[0, 1]``."""

    frames: Float[Tensor, "frames height width 3"]
    heatmap: Float[Tensor, "frames height width"]


@dataclass
class RestorerSettings:
    """Inference settings resolved from a preset (see ``method_configs/restorer_presets.py``)."""

    num_inference_steps: int = 8
    heatmap_steps: int = 8
    schedule: HeatmapSchedule = field(default_factory=lambda: PAPER_BEST_SCHEDULE)
    processing_max_side: int | None = None
    frame_rate: float = 25.0
    seed: int = 0
    label: str = ""
    show_progress: bool = True
    model_cpu_offload: bool = False


class ArtifactRestorer:
    """The two-stage ArtifactWorld restorer on one LTX-Video backbone with two LoRA adapters."""

    def __init__(
        self,
        transformer: torch.nn.Module,
        vae: torch.nn.Module,
        scheduler,
        prompts: dict[str, PromptEmbedding],
        roots: ReleaseRoots,
        settings: RestorerSettings,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.transformer = transformer
        self.vae = vae
        self.scheduler = scheduler
        self.prompts = prompts
        self.roots = roots
        self.settings = settings
        self.progress = progress
        self._aux_cache: dict[tuple[int, ...], tuple[Tensor, Tensor]] = {}
        self.execution_device = next(transformer.parameters()).device
        """Where the models compute; with ``model_cpu_offload`` each waits on the CPU while the other works."""

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_preset(cls, name: str = "full", progress: ProgressCallback | None = None, **overrides) -> "ArtifactRestorer":
        """Build from a preset in ``method_configs/restorer_presets.py`` (``"full"`` or ``"tiny"``).

        ``overrides`` replace preset fields (e.g. ``num_inference_steps=4``, ``weights_root=...``).
        The tiny preset builds its untrained release in the cache dir on first use and then
        loads it through the same loader as ``full``.
        """
        from method_configs.restorer_presets import get_preset

        try:
            preset = get_preset(name, **overrides)
        except (KeyError, TypeError) as err:
            raise RestorerInputError(str(err.args[0])) from None
        label = "[tiny preset: UNTRAINED, random weights] " if preset.untrained else ""
        with quiet_hub_progress(enabled=preset.untrained):
            restorer = cls._from_preset(preset, label, progress)
        if preset.untrained:
            _console().print(
                f"{label}ArtifactRestorer '{preset.name}' loaded from {restorer.roots.weights.parent}; "
                "its outputs are untrained (random weights) and only good for tests and smoke runs.",
                markup=False, soft_wrap=True,
            )
        return restorer

    @classmethod
    def _from_preset(cls, preset, label: str, progress: ProgressCallback | None) -> "ArtifactRestorer":
        roots = None
        if preset.build_tiny_release and not any((preset.weights_root, preset.ltx_main_root, preset.ltx_097_dev_root)):
            from restorer.tiny import ensure_tiny_release

            roots = ensure_tiny_release(seed=preset.seed)
        if roots is None:
            roots = resolve_roots(preset.weights_root, preset.ltx_main_root, preset.ltx_097_dev_root)
        if preset.decay_thresholds is not None:
            schedule: HeatmapSchedule = PiecewiseDecay(*preset.decay_thresholds)
        elif preset.blend_table is not None:
            schedule = BlendTable(tuple(tuple(row) for row in preset.blend_table))
        else:
            schedule = paper_best_schedule(preset.num_inference_steps)
        if isinstance(schedule, BlendTable) and len(schedule.rows) != preset.num_inference_steps:
            raise RestorerInputError(
                f"The heatmap blend table has {len(schedule.rows)} rows but "
                f"num_inference_steps is {preset.num_inference_steps}; give a matching blend_table or decay_thresholds."
            )
        settings = RestorerSettings(
            num_inference_steps=preset.num_inference_steps,
            heatmap_steps=preset.heatmap_steps,
            schedule=schedule,
            processing_max_side=preset.processing_max_side,
            frame_rate=preset.frame_rate,
            seed=preset.seed,
            label=label,
            show_progress=preset.show_progress,
            model_cpu_offload=preset.model_cpu_offload,
        )
        restorer = cls.from_roots(
            roots, settings=settings, device=preset.device, allow_download=preset.allow_download,
            max_prompt_tokens=preset.max_prompt_tokens, progress=progress,
        )
        restorer.apply_memory_options(vae_tiling=preset.vae_tiling, fp8_transformer_storage=preset.fp8_transformer_storage)
        return restorer

    def apply_memory_options(self, vae_tiling: bool = False, fp8_transformer_storage: bool = False) -> "ArtifactRestorer":
        """VAE tiling and fp8 weight storage for the transformer (see ``RestorerPreset``)."""
        if vae_tiling:
            self.vae.enable_tiling()
        if fp8_transformer_storage:
            compute_dtype = next(self.transformer.parameters()).dtype
            self.transformer.enable_layerwise_casting(
                storage_dtype=torch.float8_e4m3fn,
                compute_dtype=compute_dtype,
                skip_modules_pattern=FP8_SKIP_MODULES,
            )
        return self

    @classmethod
    def from_roots(
        cls,
        roots: ReleaseRoots,
        settings: RestorerSettings | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        allow_download: bool = False,
        adapters: Sequence[str] = (STAGE1_ADAPTER, STAGE2_ADAPTER),
        max_prompt_tokens: int = 128,
        progress: ProgressCallback | None = None,
    ) -> "ArtifactRestorer":
        """Load the backbone, the requested LoRA adapters and the cached prompt embeddings from three roots."""
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or default_dtype(device)
        roots = ensure_roots(roots, allow_download=allow_download)
        backbone = load_backbone(roots, device, dtype)
        lora_files = {STAGE1_ADAPTER: roots.stage1_lora, STAGE2_ADAPTER: roots.stage2_lora}
        for adapter in adapters:
            load_lora_adapter(backbone.transformer, lora_files[adapter], adapter)
        prompts = cached_prompt_embeddings(
            STAGE_PROMPTS,
            text_encoder_identity(roots),
            lambda: load_text_encoder(roots, device, dtype),
            cache_dir(),
            max_tokens=max_prompt_tokens,
        )
        return cls(backbone.transformer, backbone.vae, backbone.scheduler, prompts, roots, settings or RestorerSettings(), progress)

    # ------------------------------------------------------------------ devices

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def to(self, device: str | torch.device) -> "ArtifactRestorer":
        """Move transformer and VAE to ``device`` (dtype unchanged); it becomes the execution device."""
        self.execution_device = torch.device(device)
        self.transformer.to(device)
        self.vae.to(device)
        return self

    def offload(self) -> "ArtifactRestorer":
        """Move everything to the CPU and release cached GPU memory (between closed-loop rounds)."""
        execution_device = self.execution_device
        self.to("cpu")
        self.execution_device = execution_device  # the next round computes where this one did
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return self

    # ------------------------------------------------------------------ public API

    def restore(
        self,
        frames: Float[Tensor, "frames height width 3"],
        first_anchor: Float[Tensor, "height width 3"],
        last_anchor: Float[Tensor, "height width 3"],
        opacity: Float[Tensor, "frames height width"] | None = None,
    ) -> RestorationResult:
        """Restore an artifact clip between two clean anchor views (both stages).

        Args:
            frames: the artifact clip ``[T, H, W, 3]`` in ``[0, 1]``, ``T >= 2``, any size.
            first_anchor, last_anchor: clean views ``[H, W, 3]`` for DBA (Eq. 1).
            opacity: optional render accumulation ``[T, H, W]`` or ``[T, H, W, 1]`` in ``[0, 1]``.

        Returns:
            frames ``[T, H, W, 3]`` and heatmap ``[T, H, W]`` at the input's size and length.

        Note: DBA replaces the (conformed) clip's frame 0 by ``first_anchor`` and its last 8
        frames by ``last_anchor`` in the reference, so the restored frames there are generated
        from the anchors and their neighbours rather than from the artifact frames.
        """
        frames = _check_video(frames, "frames")
        num_frames, height, width, _ = frames.shape
        first_anchor = _check_image(first_anchor, "first_anchor", (height, width))
        last_anchor = _check_image(last_anchor, "last_anchor", (height, width))
        opacity = _check_opacity(opacity, (num_frames, height, width))

        plan = plan_conform(num_frames, height, width, self.settings.processing_max_side)
        reference = build_reference_video(
            to_model(frames, plan),
            resize_image(first_anchor, plan.height, plan.width),
            resize_image(last_anchor, plan.height, plan.width),
        )
        return self._restore_conformed(reference, plan, heatmap=None, opacity=opacity)

    def predict_heatmap(self, reference: Float[Tensor, "frames height width 3"]) -> Float[Tensor, "frames height width"]:
        """Stage 1 only: the artifact heatmap ``[T, H, W]`` of an already-built DBA reference video."""
        reference = _check_video(reference, "reference")
        plan = plan_conform(*reference.shape[:3], self.settings.processing_max_side)
        reference = to_model(reference, plan)
        with self._progress_bar() as progress:
            heatmap = self._stage1(self._encode(reference), progress)
        return from_model(heatmap[..., None], plan)[..., 0].clamp(0, 1)

    def restore_reference(
        self,
        reference: Float[Tensor, "frames height width 3"],
        heatmap: Float[Tensor, "frames height width"] | None = None,
        opacity: Float[Tensor, "frames height width"] | None = None,
    ) -> RestorationResult:
        """Both stages on an already-built DBA reference video, or stage 2 only when ``heatmap`` is given.

        A reference whose length is not ``8n + 1 >= 17`` is resampled in time (see
        :mod:`restorer.conform`), which moves its tail anchor; prepare references with
        ``8n + 1`` frames to keep DBA exact.
        """
        reference = _check_video(reference, "reference")
        shape = tuple(reference.shape[:3])
        if heatmap is not None:
            heatmap = _check_opacity(heatmap, shape, name="heatmap")
        opacity = _check_opacity(opacity, shape)
        plan = plan_conform(*shape, self.settings.processing_max_side)
        heatmap_model = None if heatmap is None else to_model(heatmap[..., None], plan)[..., 0]
        return self._restore_conformed(to_model(reference, plan), plan, heatmap=heatmap_model, opacity=opacity)

    # ------------------------------------------------------------------ stages

    def _restore_conformed(
        self, reference: Tensor, plan: ConformPlan, heatmap: Tensor | None, opacity: Tensor | None
    ) -> RestorationResult:
        z_ref = self._encode(reference)  # shared by both stages
        with self._progress_bar() as progress:
            if heatmap is None:
                heatmap = self._stage1(z_ref, progress)
            if opacity is not None:
                heatmap = raise_heatmap_by_opacity(heatmap, to_model(opacity[..., None], plan)[..., 0])
            restored = self._stage2(z_ref, reference.shape[:3], heatmap, progress)
        return RestorationResult(
            frames=from_model(restored, plan).clamp(0, 1),
            heatmap=from_model(heatmap[..., None], plan)[..., 0].clamp(0, 1),
        )

    def _stage1(self, z_ref: Tensor, progress: ProgressCallback | None) -> Tensor:
        """Latent of the DBA reference -> heatmap ``[T, H, W]`` (internal size)."""
        set_active_adapter(self.transformer, STAGE1_ADAPTER)
        with self._working(self.transformer):
            z_hm = sample_heatmap_latent(
                self.transformer,
                self.prompts[STAGE1_ADAPTER],
                z_ref,
                self._sigmas(self.settings.heatmap_steps, z_ref),
                self._coords(z_ref),
                self._generator(),
                progress,
            )
        return video_to_mask(self._decode(z_hm)).cpu()

    def _stage2(self, z_ref: Tensor, size: tuple[int, int, int], heatmap: Tensor, progress: ProgressCallback | None) -> Tensor:
        """Latent of the DBA reference + heatmap (internal size) -> restored frames (internal size)."""
        z_hm = self._encode(mask_to_video(heatmap))
        z_full, z_null = self.auxiliary_latents(*size, z_ref.shape)
        set_active_adapter(self.transformer, STAGE2_ADAPTER)
        with self._working(self.transformer):
            z_target = sample_restored_latent(
                self.transformer,
                self.prompts[STAGE2_ADAPTER],
                z_ref,
                z_hm,
                z_full,
                z_null,
                self.settings.schedule,
                self._sigmas(self.settings.num_inference_steps, z_ref),
                self._coords(z_ref),
                self._generator(),
                progress,
            )
        return self._decode(z_target).cpu()

    def _encode(self, video: Tensor) -> Tensor:
        with self._working(self.vae):
            return encode_video(self.vae, video)

    def _decode(self, latents: Tensor) -> Tensor:
        with self._working(self.vae):
            return decode_latents(self.vae, latents)

    @contextlib.contextmanager
    def _working(self, model: torch.nn.Module) -> Iterator[None]:
        """With ``model_cpu_offload``, ``model`` computes on the execution device while the other waits on the CPU."""
        if self.settings.model_cpu_offload:
            idle = self.vae if model is self.transformer else self.transformer
            idle.to("cpu")
            if self.execution_device.type == "cuda":
                torch.cuda.empty_cache()
            model.to(self.execution_device)
        yield

    def auxiliary_latents(self, frames: int, height: int, width: int, latent_shape: torch.Size) -> tuple[Tensor, Tensor]:
        """``(z_full, z_null)``: the release's files when their shape fits this clip, else computed with the VAE."""
        key = (frames, height, width)
        if key not in self._aux_cache:
            z_full = load_auxiliary_latent(self.roots, Z_FULL_FILE)
            z_null = load_auxiliary_latent(self.roots, Z_NULL_FILE)
            if z_full is None or z_null is None or z_full.shape != latent_shape or z_null.shape != latent_shape:
                with self._working(self.vae):
                    z_full, z_null = auxiliary_latents(self.vae, frames, height, width)
            self._aux_cache[key] = (z_full.cpu(), z_null.cpu())
        return self._aux_cache[key]

    # ------------------------------------------------------------------ helpers

    def _sigmas(self, steps: int, z_ref: Tensor) -> Tensor:
        _, _, f, h, w = z_ref.shape
        return flow_sigmas(self.scheduler, steps, f * h * w)

    def _coords(self, z_ref: Tensor) -> Tensor:
        _, _, f, h, w = z_ref.shape
        return latent_video_coords(f, h, w, frame_rate=self.settings.frame_rate)

    def _generator(self) -> torch.Generator:
        return torch.Generator("cpu").manual_seed(self.settings.seed)

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


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _check_video(video, name: str) -> Tensor:
    video = torch.as_tensor(video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise RestorerInputError(f"The {name} must be a [T, H, W, 3] tensor, got shape {tuple(video.shape)}.")
    if video.shape[0] < 2:
        raise RestorerInputError(f"The {name} clip must have at least 2 frames, got {video.shape[0]}.")
    return _check_range(video, name)


def _check_image(image, name: str, size: tuple[int, int]) -> Tensor:
    image = torch.as_tensor(image)
    if tuple(image.shape) != (*size, 3):
        raise RestorerInputError(f"The {name} must have shape {(*size, 3)} like the frames, got {tuple(image.shape)}.")
    return _check_range(image, name)


def _check_opacity(opacity, shape: tuple[int, int, int], name: str = "opacity") -> Tensor | None:
    if opacity is None:
        return None
    opacity = torch.as_tensor(opacity)
    if opacity.ndim == 4 and opacity.shape[-1] == 1:
        opacity = opacity[..., 0]
    if tuple(opacity.shape) != shape:
        raise RestorerInputError(f"The {name} must have shape {shape} or {(*shape, 1)}, got {tuple(opacity.shape)}.")
    return _check_range(opacity, name)


def _check_range(x: Tensor, name: str) -> Tensor:
    if not torch.is_floating_point(x):
        raise RestorerInputError(f"The {name} must be a float tensor in [0, 1], got dtype {x.dtype}.")
    x = x.float()
    if x.numel() and (x.min() < -1e-3 or x.max() > 1 + 1e-3 or not torch.isfinite(x).all()):
        raise RestorerInputError(f"The {name} values must lie in [0, 1], got [{x.min():.3g}, {x.max():.3g}].")
    return x.clamp(0, 1).cpu()
