"""Backbone loading with the official release's conventions (DESIGN.md Sec. 4).

Three roots, each a *repository root* (loaders append the standard subfolders):

========================  ==============================================  ===========================
root                      contents used                                   hub repository
========================  ==============================================  ===========================
weights root              ``stage1_pred_headmap_lora.safetensors``,       ``buaadwxl/ArtifactWorld``
                          ``stage2_noisemap_blend_lora.safetensors``,     (``weights.tar``)
                          ``auxiliary_latents/z_full.pt``, ``z_null.pt``
LTX main root             ``tokenizer/``, ``text_encoder/``, ``vae/``     ``Lightricks/LTX-Video``
LTX 0.9.7-dev root        ``scheduler/``, ``transformer/``                ``Lightricks/LTX-Video-0.9.7-dev``
========================  ==============================================  ===========================

Roots come from explicit arguments, else ``ARTIFACTWORLD_WEIGHTS_ROOT``,
``ARTIFACTWORLD_LTX_MAIN_ROOT``, ``ARTIFACTWORLD_LTX_097_DEV_ROOT``, else folders
under the cache dir (``ARTIFACTWORLD_CACHE``, default ``~/.cache/artifactworld``).
A root that points at one of its own subfolders (``.../transformer``) is
corrected to the parent with a warning. Missing roots are downloaded only when
allowed (``snapshot_download`` with ``allow_patterns``; ``HF_HOME`` and
``HF_HUB_OFFLINE`` are honoured), otherwise a :class:`RestorerInputError` names
the exact command that fetches them.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from restorer.errors import RestorerInputError

WEIGHTS_ROOT_ENV = "ARTIFACTWORLD_WEIGHTS_ROOT"
LTX_MAIN_ROOT_ENV = "ARTIFACTWORLD_LTX_MAIN_ROOT"
LTX_097_DEV_ROOT_ENV = "ARTIFACTWORLD_LTX_097_DEV_ROOT"
CACHE_ENV = "ARTIFACTWORLD_CACHE"

WEIGHTS_REPO = "buaadwxl/ArtifactWorld"
LTX_MAIN_REPO = "Lightricks/LTX-Video"
LTX_097_DEV_REPO = "Lightricks/LTX-Video-0.9.7-dev"

STAGE1_LORA_FILE = "stage1_pred_headmap_lora.safetensors"
STAGE2_LORA_FILE = "stage2_noisemap_blend_lora.safetensors"
AUXILIARY_LATENTS_DIR = "auxiliary_latents"
Z_FULL_FILE = "z_full.pt"
Z_NULL_FILE = "z_null.pt"

MAIN_SUBFOLDERS = ("tokenizer", "text_encoder", "vae")
DEV_SUBFOLDERS = ("scheduler", "transformer")


def cache_dir() -> Path:
    """The restorer's cache directory (``$ARTIFACTWORLD_CACHE`` or ``~/.cache/artifactworld``)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "artifactworld").expanduser()


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA, float32 elsewhere."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


@dataclass(frozen=True)
class ReleaseRoots:
    """The three release roots (repository roots, not their subfolders)."""

    weights: Path
    ltx_main: Path
    ltx_097_dev: Path

    @property
    def stage1_lora(self) -> Path:
        return self.weights / STAGE1_LORA_FILE

    @property
    def stage2_lora(self) -> Path:
        return self.weights / STAGE2_LORA_FILE

    def auxiliary_latent(self, file_name: str) -> Path:
        return self.weights / AUXILIARY_LATENTS_DIR / file_name


def resolve_roots(
    weights_root: str | os.PathLike | None = None,
    ltx_main_root: str | os.PathLike | None = None,
    ltx_097_dev_root: str | os.PathLike | None = None,
) -> ReleaseRoots:
    """Pick each root from the argument, else its env var, else the cache default; fix subfolder roots."""
    base = cache_dir() / "weights"

    def pick(value, env: str, default: Path) -> Path:
        chosen = value if value not in (None, "") else os.environ.get(env) or default
        return Path(chosen).expanduser()

    weights = pick(weights_root, WEIGHTS_ROOT_ENV, base / "ArtifactWorld")
    main = pick(ltx_main_root, LTX_MAIN_ROOT_ENV, base / "LTX-Video")
    dev = pick(ltx_097_dev_root, LTX_097_DEV_ROOT_ENV, base / "LTX-Video-0.9.7-dev")
    return ReleaseRoots(
        weights=correct_subfolder_root(weights, (STAGE1_LORA_FILE,), (AUXILIARY_LATENTS_DIR, "weights"), "weights"),
        ltx_main=correct_subfolder_root(main, MAIN_SUBFOLDERS, MAIN_SUBFOLDERS, "LTX-Video"),
        ltx_097_dev=correct_subfolder_root(dev, DEV_SUBFOLDERS, DEV_SUBFOLDERS, "LTX-Video-0.9.7-dev"),
    )


def correct_subfolder_root(root: Path, markers: tuple[str, ...], subfolders: tuple[str, ...], what: str) -> Path:
    """Return the parent of ``root`` (with a warning) when ``root`` is one of the repository's subfolders.

    The release's loaders append ``transformer/``, ``vae/`` ... to each root, so a root
    that already ends in such a subfolder would double it. ``markers`` are the entries
    a correct root contains; the parent is used only when it has them and ``root`` does not.
    """
    if root.name in subfolders and not all((root / m).exists() for m in markers):
        parent = root.parent
        if any((parent / m).exists() for m in markers):
            warnings.warn(
                f"The {what} root {root} points at its '{root.name}' subfolder; using the repository root {parent} "
                "instead (loaders append the subfolder themselves).",
                stacklevel=3,
            )
            return parent
    # The released weights.tar may unpack into a 'weights/' folder inside the download dir.
    if what == "weights" and not (root / STAGE1_LORA_FILE).exists() and (root / "weights" / STAGE1_LORA_FILE).exists():
        return root / "weights"
    return root


def download_command(what: str, root: Path) -> str:
    """The exact shell command that fetches one root."""
    if what == "weights":
        return f"hf download {WEIGHTS_REPO} --local-dir {root} && tar -xf {root}/weights.tar -C {root}"
    if what == "ltx_main":
        return f'hf download {LTX_MAIN_REPO} --include "tokenizer/*" "text_encoder/*" "vae/*" --local-dir {root}'
    return f'hf download {LTX_097_DEV_REPO} --include "scheduler/*" "transformer/*" --local-dir {root}'


def _missing(roots: ReleaseRoots) -> dict[str, list[str]]:
    need = {
        "weights": [roots.stage1_lora, roots.stage2_lora],
        "ltx_main": [roots.ltx_main / s for s in MAIN_SUBFOLDERS],
        "ltx_097_dev": [roots.ltx_097_dev / s for s in DEV_SUBFOLDERS],
    }
    return {k: [str(p) for p in paths if not p.exists()] for k, paths in need.items() if any(not p.exists() for p in paths)}


def _root_of(roots: ReleaseRoots, what: str) -> Path:
    return {"weights": roots.weights, "ltx_main": roots.ltx_main, "ltx_097_dev": roots.ltx_097_dev}[what]


def _env_of(what: str) -> str:
    return {"weights": WEIGHTS_ROOT_ENV, "ltx_main": LTX_MAIN_ROOT_ENV, "ltx_097_dev": LTX_097_DEV_ROOT_ENV}[what]


def ensure_roots(roots: ReleaseRoots, allow_download: bool = False) -> ReleaseRoots:
    """Check that every root has what the restorer loads; download missing roots when allowed.

    Raises:
        RestorerInputError: a root lacks files and downloading is not allowed (or the hub is
            offline); the message gives the command that fixes it.
    """
    missing = _missing(roots)
    if not missing:
        return roots
    from huggingface_hub import constants as hub_constants

    offline = bool(hub_constants.HF_HUB_OFFLINE)
    for what, paths in missing.items():
        root = _root_of(roots, what)
        if not allow_download or offline:
            reason = "downloads are disabled (HF_HUB_OFFLINE is set)" if allow_download else "downloading is off"
            raise RestorerInputError(
                f"The ArtifactWorld {what} root {root} is missing {Path(paths[0]).name} and {reason}: "
                f"fetch it with `{download_command(what, root)}` or set {_env_of(what)} to an existing copy."
            )
        _download(what, root)
    roots = resolve_roots(roots.weights, roots.ltx_main, roots.ltx_097_dev)
    still = _missing(roots)
    if still:
        what = next(iter(still))
        raise RestorerInputError(
            f"After downloading, the {what} root {_root_of(roots, what)} still lacks {still[what][0]}; "
            f"try `{download_command(what, _root_of(roots, what))}` by hand."
        )
    return roots


def _download(what: str, root: Path) -> None:
    """Fetch only the files the restorer needs into ``root`` (progress bars from huggingface_hub)."""
    from huggingface_hub import snapshot_download

    root.mkdir(parents=True, exist_ok=True)
    if what == "weights":
        snapshot_download(WEIGHTS_REPO, local_dir=root, allow_patterns=["weights.tar"])
        with tarfile.open(root / "weights.tar") as archive:
            archive.extractall(root, filter="data")
    elif what == "ltx_main":
        snapshot_download(LTX_MAIN_REPO, local_dir=root, allow_patterns=[f"{s}/*" for s in MAIN_SUBFOLDERS])
    else:
        snapshot_download(LTX_097_DEV_REPO, local_dir=root, allow_patterns=[f"{s}/*" for s in DEV_SUBFOLDERS])


@dataclass
class Backbone:
    """The frozen parts shared by both stages."""

    transformer: torch.nn.Module
    vae: torch.nn.Module
    scheduler: object


def load_backbone(roots: ReleaseRoots, device: torch.device | str, dtype: torch.dtype) -> Backbone:
    """Load transformer + scheduler from the 0.9.7-dev root and the VAE from the LTX main root."""
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel

    transformer = LTXVideoTransformer3DModel.from_pretrained(roots.ltx_097_dev, subfolder="transformer", torch_dtype=dtype)
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(roots.ltx_097_dev, subfolder="scheduler")
    vae = AutoencoderKLLTXVideo.from_pretrained(roots.ltx_main, subfolder="vae", torch_dtype=dtype)
    for module in (transformer, vae):
        module.requires_grad_(False)
        module.eval()
        module.to(device)
    return Backbone(transformer=transformer, vae=vae, scheduler=scheduler)


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


def load_auxiliary_latent(roots: ReleaseRoots, file_name: str) -> torch.Tensor | None:
    """Load ``auxiliary_latents/<file_name>`` as a ``[1, C, F, h, w]`` float tensor, or None when absent."""
    path = roots.auxiliary_latent(file_name)
    if not path.exists():
        return None
    value = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(value, dict):
        tensors = [v for v in value.values() if isinstance(v, torch.Tensor)]
        if len(tensors) != 1:
            raise RestorerInputError(f"The auxiliary latent file {path} must hold one tensor, found {len(tensors)}.")
        value = tensors[0]
    if value.ndim == 4:
        value = value[None]
    if value.ndim != 5:
        raise RestorerInputError(f"The auxiliary latent in {path} must be [C, F, h, w] or [1, C, F, h, w], got {tuple(value.shape)}.")
    return value.float()


@contextlib.contextmanager
def quiet_hub_progress(enabled: bool = True) -> Iterator[None]:
    """Silence transformers/diffusers load/save progress bars (the tiny preset prints only labelled messages)."""
    if not enabled:
        yield
        return
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.enable_progress_bar()
        diffusers_logging.enable_progress_bar()
