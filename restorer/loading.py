"""Backbone loading with the official release's conventions.

Each root is a *repository root* (loaders append the standard subfolders):

========================  ==============================================  ===========================
root                      contents used                                   hub repository
========================  ==============================================  ===========================
weights root              ``stage1_pred_headmap_lora.safetensors``,       ``buaadwxl/ArtifactWorld``
                          ``stage2_noisemap_blend_lora.safetensors``,     (``weights.tar``)
                          ``auxiliary_latents/z_full.pt``, ``z_null.pt``
LTX main root             ``tokenizer/``, ``text_encoder/``, ``vae/``,    ``Lightricks/LTX-Video``
                          ``ltxv-13b-0.9.8-distilled.safetensors``
LTX 0.9.7-dev root        ``transformer/``, only for the ``0.9.7-dev``    ``Lightricks/LTX-Video-0.9.7-dev``
(optional)                transformer source
========================  ==============================================  ===========================

The base transformer is the official one (``model_source: LTXV_13B_098_DISTILL`` in the release's
configs): the single file ``ltxv-13b-0.9.8-distilled.safetensors`` in the LTX-Video root, loaded with
diffusers' ``from_single_file`` and the 13B configuration (:data:`artifactworld_ns.restorer.configs.LTXV_13B_CONFIG`).
The 0.9.7-dev sharded transformer, which the release README also names, is the ``transformer_source="0.9.7-dev"``
option. No scheduler is loaded: the sampler steps on its own sigmas
(:func:`artifactworld_ns.restorer.sampler.linear_quadratic_sigmas`, equal to the official ones), so the
official scripts' scheduler configuration (from the 0.9.7-dev root) is not needed.

Where the roots are, the subfolder fix and what is missing or downloaded: :mod:`artifactworld_ns.restorer.roots`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from .configs import TRANSFORMER_CONFIGS
from .errors import RestorerInputError
from .roots import (
    LTX_MAIN_REPO,
    TRANSFORMER_2B_SINGLE_FILE,
    TRANSFORMER_SINGLE_FILE,
    ReleaseRoots,
    check_transformer_source,
)


class _EmptyFloat32ListFilter(logging.Filter):
    """Drops diffusers' "modules in X that should be kept in float32: []" notice, which ``to(dtype)`` logs even when
    the list is empty (nothing is kept in float32, so nothing is inconsistent); any non-empty list still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


def quiet_empty_float32_notice() -> None:
    """Install :class:`_EmptyFloat32ListFilter` on the diffusers logger that emits it (once)."""
    logger = logging.getLogger("diffusers.models.modeling_utils")
    if not any(isinstance(f, _EmptyFloat32ListFilter) for f in logger.filters):
        logger.addFilter(_EmptyFloat32ListFilter())


quiet_empty_float32_notice()  # every model this module (and tiny.py, through it) builds or loads is cast with to()

SINGLE_FILES = {"ltxv-13b": TRANSFORMER_SINGLE_FILE, "ltxv-2b": TRANSFORMER_2B_SINGLE_FILE}
"""The single file in the LTX-Video root that each named configuration loads (``tiny``: the tiny release's file)."""


def single_file_name(config_name: str) -> str:
    """The LTX-Video root's single transformer file of a named configuration."""
    return SINGLE_FILES.get(config_name, TRANSFORMER_SINGLE_FILE)


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA, float32 elsewhere."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


@dataclass
class Backbone:
    """The frozen parts shared by both stages."""

    transformer: torch.nn.Module
    vae: torch.nn.Module


def transformer_config(name: str) -> dict:
    """A named transformer configuration of :data:`artifactworld_ns.restorer.configs.TRANSFORMER_CONFIGS`
    (``ltxv-13b``: the release's, ``ltxv-2b``: the world model's, ``tiny``); one sentence if unknown."""
    if name not in TRANSFORMER_CONFIGS:
        raise RestorerInputError(
            f"Unknown transformer configuration {name!r}; choose one of {', '.join(TRANSFORMER_CONFIGS)}."
        )
    return TRANSFORMER_CONFIGS[name]


def load_transformer(
    roots: ReleaseRoots,
    dtype: torch.dtype,
    source: str = "0.9.8-distilled",
    config_name: str = "ltxv-13b",
    num_layers: int | None = None,
) -> torch.nn.Module:
    """The base transformer: the 0.9.8-distilled single file of the named configuration (13B, or 2B for the world
    model: :func:`single_file_name`), or the 0.9.7-dev shards.

    ``num_layers`` overrides the configuration's depth (full-width checks at reduced depth, e.g. 1 of 48 blocks).
    """
    from diffusers import LTXVideoTransformer3DModel

    check_transformer_source(source)
    if source == "0.9.7-dev" and config_name != "ltxv-13b":
        raise RestorerInputError(f"The 0.9.7-dev shards are the 13B transformer only, not {config_name}.")
    if source == "0.9.7-dev":
        return LTXVideoTransformer3DModel.from_pretrained(roots.ltx_097_dev, subfolder="transformer", torch_dtype=dtype)
    path = roots.ltx_main / single_file_name(config_name)
    with tempfile.TemporaryDirectory() as folder:
        config_dir = Path(folder) / "transformer"
        config_dir.mkdir()
        config = {"_class_name": "LTXVideoTransformer3DModel", **transformer_config(config_name)}
        if num_layers is not None:
            config["num_layers"] = num_layers
        (config_dir / "config.json").write_text(json.dumps(config))
        try:
            return LTXVideoTransformer3DModel.from_single_file(
                str(path), config=folder, subfolder="transformer", torch_dtype=dtype, local_files_only=True
            )
        except (ValueError, RuntimeError, KeyError) as err:
            raise RestorerInputError(
                f"The transformer file {path} does not fit the {config_name} configuration "
                f"({str(err).splitlines()[0].split(' If you want')[0].replace('  ', ' ')}); it must be {path.name} from {LTX_MAIN_REPO}."
            ) from None


def load_backbone(
    roots: ReleaseRoots,
    device: torch.device | str,
    dtype: torch.dtype,
    transformer_source: str = "0.9.8-distilled",
    transformer_config_name: str = "ltxv-13b",
    transformer_num_layers: int | None = None,
    transformer_device: torch.device | str | None = None,
) -> Backbone:
    """Load the transformer (see :func:`load_transformer`) and the LTX-Video VAE.

    Both go to ``device``; the transformer to ``transformer_device`` when given (the CPU, for group offloading).
    """
    from diffusers import AutoencoderKLLTXVideo

    transformer = load_transformer(roots, dtype, transformer_source, transformer_config_name, transformer_num_layers)
    vae = AutoencoderKLLTXVideo.from_pretrained(roots.ltx_main, subfolder="vae", torch_dtype=vae_dtype(dtype, device))
    for module, target in ((transformer, transformer_device or device), (vae, device)):
        module.requires_grad_(False)
        module.eval()
        module.to(target)
    return Backbone(transformer=transformer, vae=vae)


def vae_dtype(dtype: torch.dtype, device: torch.device | str) -> torch.dtype:
    """The VAE's dtype: ``dtype``, except float32 on the CPU.

    Half-precision 3-D convolutions have no fast CPU kernel on processors without native bf16 (AVX512-BF16 / AMX):
    one 128-channel ``Conv3d`` measured 49.6 s in bf16 against 0.45 s in float32 on an AVX2 CPU. The latents it
    hands over are float32 either way (:func:`latents.encode_video`); on CUDA the VAE keeps ``dtype`` (official).
    """
    return torch.float32 if torch.device(device).type == "cpu" else dtype


def load_text_encoder(roots: ReleaseRoots, device: torch.device | str, dtype: torch.dtype):
    """Load the T5 tokenizer and encoder from the LTX main root (used once per prompt, then freed)."""
    from transformers import AutoTokenizer, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(roots.ltx_main, subfolder="tokenizer")
    text_encoder = T5EncoderModel.from_pretrained(roots.ltx_main, subfolder="text_encoder", torch_dtype=dtype)
    text_encoder.requires_grad_(False)
    return tokenizer, text_encoder.to(device).eval()


def text_encoder_identity(roots: ReleaseRoots) -> str:
    """A string that changes when the text encoder or tokenizer changes (for the embedding cache key)."""
    parts = []
    for sub in ("text_encoder", "tokenizer"):
        folder = (roots.ltx_main / sub).resolve()
        parts.append(str(folder))
        for f in sorted(folder.glob("*")):
            if f.is_file():
                parts.append(f"{f.name}:{f.stat().st_size}")
                if f.suffix == ".json" and f.stat().st_size < 1_000_000:
                    parts.append(f.read_text(errors="replace"))
    return "\n".join(parts)


def load_auxiliary_latent(
    roots: ReleaseRoots, file_name: str, latent_shape: tuple[int, ...] | None = None
) -> torch.Tensor | None:
    """Load ``auxiliary_latents/<file_name>`` as an unscaled ``[1, C, F, h, w]`` float tensor, or None when absent.

    Every format the official pipeline reads (``ltxv_pipeline.py``, auxiliary latent loading): a
    tensor ``[C, F, h, w]`` or ``[B, C, F, h, w]``; a dict holding packed ``latents`` ``[tokens, C]``
    (unpacked with its ``num_frames`` / ``height`` / ``width``, or with ``latent_shape`` when those
    are absent and the token count fits); a dict holding ``latents_unpacked``.

    Raises:
        RestorerInputError: the file holds none of these (one sentence naming the file).
    """
    path = roots.auxiliary_latent(file_name)
    if not path.exists():
        return None
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- any unreadable file gets the same one sentence
        raise RestorerInputError(
            f"The auxiliary latent file {path} could not be read as a torch file ({type(err).__name__})."
        ) from None
    latent = _auxiliary_tensor(value, latent_shape)
    if latent is None:
        raise RestorerInputError(
            f"The auxiliary latent file {path} is not an official z-file: expected a [C, F, h, w] or [1, C, F, h, w] "
            "tensor, or a dict with packed 'latents' (with num_frames, height, width) or 'latents_unpacked'."
        )
    return latent.float()


def _auxiliary_tensor(value, latent_shape: tuple[int, ...] | None) -> torch.Tensor | None:
    from .sampler import unpack_latents

    if isinstance(value, torch.Tensor):
        if value.ndim == 4:
            return value[None]
        return value if value.ndim == 5 and value.shape[0] == 1 else None
    if not isinstance(value, dict):
        return None
    packed = value.get("latents")
    if isinstance(packed, torch.Tensor) and packed.ndim in (2, 3):
        packed = packed if packed.ndim == 3 else packed[None]
        dims = [value.get(k) for k in ("num_frames", "height", "width")]
        if all(isinstance(d, int) for d in dims) and dims[0] * dims[1] * dims[2] == packed.shape[1]:
            return unpack_latents(packed[:1], *dims)
        if (
            latent_shape is not None
            and packed.shape[1] == math.prod(latent_shape[2:])
            and packed.shape[2] == latent_shape[1]
        ):
            return unpack_latents(packed[:1], *latent_shape[2:])
    unpacked = value.get("latents_unpacked")
    return _auxiliary_tensor(unpacked, latent_shape) if isinstance(unpacked, torch.Tensor) else None


@contextlib.contextmanager
def quiet_hub_progress(enabled: bool = True) -> Iterator[None]:
    """Silence transformers/diffusers load/save progress bars (the tiny preset prints only labelled messages).

    Nests (the tiny preset builds its release inside it): on exit each library's bars are as they were.
    """
    if not enabled:
        yield
        return
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = [lib for lib in (transformers_logging, diffusers_logging) if lib.is_progress_bar_enabled()]
    for lib in libraries:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib in libraries:
            lib.enable_progress_bar()
