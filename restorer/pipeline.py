"""ArtifactRestorer: video in, video out (paper Sec. 4), with the official inference conventions.

``restore`` reads top to bottom:

1. conform the clip to the model grid (``T = 8n + 1`` frames; the official 544 x 960 frame),
2. build the DBA reference video (Eq. 1, official layout: ``T + 8`` frames),
3. stage 1 (LoRA1): sample the heatmap latent from ``[z_ref, z_hm]`` and decode the RGB heatmap,
4. hand it to stage 2 as the official scripts do: 8-bit levels, raised where the render is
   transparent (``max(h, 1 - opacity)``, ours), last 9 frames black,
5. stage 2 (LoRA2): AATF with ``[z_ref, z_target, 0.05 z~hm(s)]`` and the official blend table,
6. decode, trim the ``T + 8`` frames back to ``T``, and bring frames and heatmap back to the input's
   frame count and resolution.

Each stage seeds its own generator (seed 42) and draws in the official order: the target noise as
``[1, C, F, h, w]``, the VAE posterior samples of its inputs, then the context noise of each step.
One frozen transformer carries both LoRA adapters (homogeneous dual model); the official scripts
load it twice, in two processes.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from .aatf import STAGE2_ADAPTER, hand_off_heatmap, raise_outside_anchors
from .checks import check_heatmap, check_image, check_opacity, check_video
from .configs import FP8_SKIP_MODULES
from .conform import from_model, resize_image, to_model
from .dba import build_reference_video, trim_to_clip
from .heatmap import STAGE1_ADAPTER
from .latents import auxiliary_latents, mask_to_video, video_to_mask
from .loading import (
    default_dtype,
    load_auxiliary_latent,
    load_backbone,
    load_text_encoder,
    quiet_hub_progress,
    text_encoder_identity,
)
from .lora import load_lora_adapter
from .presets import (
    RestorerSettings,
    builds_tiny_release,
    console,
    preset_roots,
    resolve_restorer_preset,
    settings_from_preset,
    torch_dtype,
)
from .prompts import MAX_PROMPT_TOKENS, STAGE_PROMPTS, PromptEmbedding, cached_prompt_embeddings
from .roots import Z_FULL_FILE, Z_NULL_FILE, ReleaseRoots, cache_dir, ensure_roots
from .sampler import (
    ProgressCallback,
    compute_dtype,
    execution_device,
)
from .stages import StageRunner
from .untrained import UNTRAINED_LABEL, first_untrained_note

__all__ = ["FP8_SKIP_MODULES", "ArtifactRestorer", "RestorationResult", "RestorerSettings", "hand_off_heatmap"]


@dataclass
class RestorationResult:
    """Restored frames ``[T, H, W, 3]`` and the heatmap used for them ``[T, H, W]``, both in ``[0, 1]``."""

    frames: Float[Tensor, "frames height width 3"]
    heatmap: Float[Tensor, "frames height width"]


class ArtifactRestorer(StageRunner):
    """The two-stage ArtifactWorld restorer on one LTX-Video backbone with two LoRA adapters."""

    def __init__(
        self,
        transformer: torch.nn.Module,
        vae: torch.nn.Module,
        prompts: dict[str, PromptEmbedding],
        roots: ReleaseRoots,
        settings: RestorerSettings,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.transformer = transformer
        self.vae = vae
        self.prompts = prompts
        self.roots = roots
        self.settings = settings
        self.progress = progress
        self._aux_cache: dict[tuple[int, ...], tuple[Tensor, Tensor]] = {}
        self._aux_note_printed = False
        self.execution_device = execution_device(transformer)
        """Where the models compute (under group offloading the transformer's weights wait on the CPU)."""

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_preset(
        cls, name: str = "full", progress: ProgressCallback | None = None, **overrides
    ) -> "ArtifactRestorer":
        """Build from a preset in ``restorer/presets.py`` (``"full"`` or ``"tiny"``).

        ``overrides`` replace preset fields (e.g. ``num_inference_steps=4``, ``weights_root=...``).
        The tiny preset builds its untrained release in the cache dir on first use and then
        loads it through the same loader as ``full``.
        """
        preset = resolve_restorer_preset(name, overrides)
        label = f"{UNTRAINED_LABEL} " if preset.untrained else ""
        with quiet_hub_progress(enabled=preset.untrained):
            restorer = cls._from_preset(preset, label, progress)
        if preset.untrained:
            note = first_untrained_note() or UNTRAINED_LABEL  # the full sentence once per process, then the label
            console().print(
                f"ArtifactRestorer '{preset.name}' loaded from {restorer.roots.weights.parent}. {note}",
                markup=False,
                soft_wrap=True,
            )
        return restorer

    @staticmethod
    def check_weights(name: str = "full", **overrides) -> None:
        """Raise :class:`RestorerInputError` (one sentence with the download command) unless the preset's
        weights are on disk or may be downloaded, or when its memory profile does not fit the GPU; loads
        nothing. The tiny preset builds its own weights."""
        preset = resolve_restorer_preset(name, overrides)
        if not builds_tiny_release(preset) and not preset.allow_download:
            ensure_roots(preset_roots(preset), allow_download=False, transformer_source=preset.transformer_source)

    @classmethod
    def _from_preset(cls, preset, label: str, progress: ProgressCallback | None) -> "ArtifactRestorer":
        roots = preset_roots(preset)
        settings = settings_from_preset(preset, label)
        restorer = cls.from_roots(
            roots,
            settings=settings,
            device=preset.device,
            dtype=torch_dtype(preset.torch_dtype),
            allow_download=preset.allow_download,
            max_prompt_tokens=preset.max_prompt_tokens,
            progress=progress,
            transformer_source=preset.transformer_source,
            transformer_config=preset.transformer_config,
            transformer_num_layers=preset.transformer_num_layers,
            group_offload=preset.group_offload,
            fp8_transformer_storage=preset.fp8_transformer_storage,
            vae_tiling=preset.vae_tiling,
        )
        return restorer

    def apply_memory_options(
        self, vae_tiling: bool = False, fp8_transformer_storage: bool = False, group_offload: bool = False
    ) -> "ArtifactRestorer":
        """VAE tiling, fp8 weight storage and group offloading of the transformer (see ``RestorerPreset``).

        All three are diffusers' own: ``enable_tiling``, ``enable_layerwise_casting`` and
        ``enable_group_offload`` (block level; weights wait on the CPU, prefetched on a CUDA stream).
        """
        if vae_tiling:
            self.vae.enable_tiling()
        if fp8_transformer_storage:
            self.transformer.enable_layerwise_casting(
                storage_dtype=torch.float8_e4m3fn,
                compute_dtype=compute_dtype(self.transformer),
                skip_modules_pattern=FP8_SKIP_MODULES,
            )
        if group_offload:
            self.transformer.to("cpu")
            self.transformer.enable_group_offload(
                onload_device=self.execution_device,
                offload_device=torch.device("cpu"),
                offload_type="block_level",
                num_blocks_per_group=1,
                use_stream=self.execution_device.type == "cuda",
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
        max_prompt_tokens: int = MAX_PROMPT_TOKENS,
        progress: ProgressCallback | None = None,
        transformer_source: str = "0.9.8-distilled",
        transformer_config: str = "ltxv-13b",
        transformer_num_layers: int | None = None,
        group_offload: bool = False,
        fp8_transformer_storage: bool = False,
        vae_tiling: bool = False,
    ) -> "ArtifactRestorer":
        """Load the cached prompt embeddings, the backbone and the requested LoRA adapters from the release roots.

        The prompts come first: on a first run the text encoder is loaded, used and freed before the
        backbone, so the two never share the GPU. The memory options are applied once, at the end
        (:meth:`apply_memory_options`); with ``group_offload`` the transformer is loaded on the CPU.

        Loading leaves torch's global random state as it was (peft initialises the adapter layers
        randomly before their weights are copied in), so a training run that loads the restorer
        mid-way draws the same random numbers as one that loaded it earlier or resumed.
        """
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or default_dtype(device)
        roots = ensure_roots(roots, allow_download=allow_download, transformer_source=transformer_source)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            prompts = cached_prompt_embeddings(
                STAGE_PROMPTS,
                text_encoder_identity(roots),
                lambda: load_text_encoder(roots, device, dtype),
                cache_dir(),
                max_tokens=max_prompt_tokens,
            )
            backbone = load_backbone(
                roots,
                device,
                dtype,
                transformer_source,
                transformer_config,
                transformer_num_layers,
                transformer_device="cpu" if group_offload else None,
            )
            lora_files = {STAGE1_ADAPTER: roots.stage1_lora, STAGE2_ADAPTER: roots.stage2_lora}
            for adapter in adapters:
                load_lora_adapter(backbone.transformer, lora_files[adapter], adapter)
            restorer = cls(
                backbone.transformer,
                backbone.vae,
                prompts,
                roots,
                settings or RestorerSettings(),
                progress,
            )
        restorer.execution_device = device
        return restorer.apply_memory_options(vae_tiling, fp8_transformer_storage, group_offload)

    # ------------------------------------------------------------------ devices

    @property
    def device(self) -> torch.device:
        return self.execution_device

    @property
    def group_offloaded(self) -> bool:
        from diffusers.hooks.group_offloading import _is_group_offload_enabled

        return _is_group_offload_enabled(self.transformer)

    def to(self, device: str | torch.device) -> "ArtifactRestorer":
        """Move transformer and VAE to ``device`` (dtype unchanged); it becomes the execution device.

        A group-offloaded transformer stays where its offload hooks keep it (the CPU between blocks).
        """
        self.execution_device = torch.device(device)
        if not self.group_offloaded:
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
            frames: the artifact clip ``[T, H, W, 3]`` in ``[0, 1]``, ``T >= 2``, any size; ``T = 8n + 1``
                (89 as trained) is used as is, other lengths are resampled (see :mod:`artifactworld_ns.restorer.conform`).
            first_anchor, last_anchor: clean views ``[H, W, 3]`` for DBA (Eq. 1).
            opacity: optional render accumulation ``[T, H, W]`` or ``[T, H, W, 1]`` in ``[0, 1]``.

        Returns:
            frames ``[T, H, W, 3]`` and heatmap ``[T, H, W]`` at the input's size and length.

        The reference is the official ``T + 8``-frame layout: ``first_anchor``, the clip's frames
        ``1 .. T-2``, then ``last_anchor`` 9 times; the restored ``T + 8`` frames are trimmed to ``T``.
        """
        frames = check_video(frames, "frames")
        num_frames, height, width, _ = frames.shape
        first_anchor = check_image(first_anchor, "first_anchor", (height, width))
        last_anchor = check_image(last_anchor, "last_anchor", (height, width))
        opacity = check_opacity(opacity, (num_frames, height, width))

        plan = self._plan(num_frames, height, width)
        reference = build_reference_video(
            to_model(frames, plan), resize_image(first_anchor, plan), resize_image(last_anchor, plan)
        )
        opacity_model = None if opacity is None else to_model(opacity[..., None], plan)[..., 0]
        restored, heatmap = self._both_stages(reference, opacity_model)
        return RestorationResult(
            frames=from_model(trim_to_clip(restored, plan.frames), plan).clamp(0, 1),
            heatmap=from_model(video_to_mask(trim_to_clip(heatmap, plan.frames))[..., None], plan)[..., 0].clamp(0, 1),
        )

    def predict_heatmap(
        self, reference: Float[Tensor, "frames height width 3"]
    ) -> Float[Tensor, "frames height width 3"]:
        """Stage 1 only, as the official stage-1 pipeline: the decoded RGB heatmap video of a DBA reference.

        ``reference`` is the ``T + 8``-frame reference (what ``aw-prepare`` writes), ``[F, H, W, 3]`` in
        ``[0, 1]``; the result has its frame count and size. Its last 9 frames are *not* blacked out:
        that belongs to the hand-off to stage 2 (:func:`artifactworld_ns.restorer.dba.black_tail`).
        """
        reference = check_video(reference, "reference")
        plan = self._plan(*reference.shape[:3])
        with self._progress_bar() as progress:
            heatmap, _ = self._stage1(to_model(reference, plan), progress)
        return from_model(heatmap, plan).clamp(0, 1)

    def restore_reference(
        self,
        reference: Float[Tensor, "frames height width 3"],
        heatmap: Float[Tensor, "frames height width *channels"] | None = None,
        opacity: Float[Tensor, "frames height width"] | None = None,
    ) -> RestorationResult:
        """Both stages on a DBA reference video, or stage 2 only when ``heatmap`` is given.

        ``heatmap`` is taken exactly as the official stage 2 receives its noisemap video: ``[F, H, W, 3]``
        (or gray ``[F, H, W]``), with the black tail already applied. Outputs have the reference's
        frame count (``T + 8``; trim them with :func:`artifactworld_ns.restorer.dba.trim_to_clip`). A reference whose
        length is not ``8n + 1`` is resampled in time, which moves its tail anchor.
        """
        reference = check_video(reference, "reference")
        shape = tuple(reference.shape[:3])
        if heatmap is not None:
            heatmap = check_heatmap(heatmap, shape)
        opacity = check_opacity(opacity, shape)
        plan = self._plan(*shape)
        reference_model = to_model(reference, plan)
        opacity_model = None if opacity is None else to_model(opacity[..., None], plan)[..., 0]
        if heatmap is None:
            restored, heatmap_used = self._both_stages(reference_model, opacity_model)
        else:
            heatmap_used = to_model(mask_to_video(heatmap), plan)
            if opacity_model is not None:
                heatmap_used = raise_outside_anchors(heatmap_used, opacity_model)
            with self._progress_bar() as progress:
                restored = self._stage2(reference_model, heatmap_used, progress)
        return RestorationResult(
            frames=from_model(restored, plan).clamp(0, 1),
            heatmap=from_model(video_to_mask(heatmap_used)[..., None], plan)[..., 0].clamp(0, 1),
        )

    # ------------------------------------------------------------------ shapes and auxiliary latents

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int, int]:
        """``(1, C, F', h', w')`` of a model-size video (8x time after frame 0, 32x space)."""
        t, s = self.vae.temporal_compression_ratio, self.vae.spatial_compression_ratio
        return (1, self.vae.config.latent_channels, (frames - 1) // t + 1, height // s, width // s)

    def auxiliary_latents(
        self, frames: int, height: int, width: int, latent_shape: torch.Size
    ) -> tuple[Tensor, Tensor]:
        """Unscaled ``(z_full, z_null)``: the release's files when they fit this reference, else computed with the VAE."""
        key = (frames, height, width)
        if key not in self._aux_cache:
            shape = tuple(latent_shape)
            z_full = load_auxiliary_latent(self.roots, Z_FULL_FILE, shape)
            z_null = load_auxiliary_latent(self.roots, Z_NULL_FILE, shape)
            if z_full is None or z_null is None or tuple(z_full.shape) != shape or tuple(z_null.shape) != shape:
                if not self._aux_note_printed and not self.settings.label:  # expected on the tiny preset: not said
                    found = "are missing" if z_full is None or z_null is None else f"are {tuple(z_full.shape)}"
                    console().print(
                        f"{self.settings.label}The release's auxiliary latents {found}, not {shape} for a "
                        f"{frames}x{height}x{width} reference; computing z_full / z_null from their definition with the VAE.",
                        markup=False,
                        soft_wrap=True,
                    )
                    self._aux_note_printed = True
                z_full, z_null = auxiliary_latents(self.vae, frames, height, width)
            self._aux_cache[key] = (z_full.cpu(), z_null.cpu())
        return self._aux_cache[key]
