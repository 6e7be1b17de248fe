"""The release roots: where each lives, the doubled-subfolder fix, and what is missing or downloaded.

The default path needs two: the ArtifactWorld weights root and the LTX-Video root. The third, the LTX-Video
0.9.7-dev root, is read only for its sharded transformer, the ``transformer_source="0.9.7-dev"`` option.

Each root is a *repository root* (loaders append the standard subfolders); see :mod:`artifactworld_ns.restorer.loading`
for what is loaded from them. Roots come from explicit arguments, else ``ARTIFACTWORLD_WEIGHTS_ROOT``,
``ARTIFACTWORLD_LTX_MAIN_ROOT``, ``ARTIFACTWORLD_LTX_097_DEV_ROOT``, else folders under the cache dir
(``ARTIFACTWORLD_CACHE``, default ``~/.cache/artifactworld``). Missing roots are downloaded only when
allowed (``snapshot_download`` with ``allow_patterns``; ``HF_HOME`` and ``HF_HUB_OFFLINE`` are honoured),
otherwise a :class:`RestorerInputError` names the exact command that fetches them.
"""

from __future__ import annotations

import os
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import RestorerInputError

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

TRANSFORMER_SINGLE_FILE = "ltxv-13b-0.9.8-distilled.safetensors"
TRANSFORMER_2B_SINGLE_FILE = "ltxv-2b-0.9.8-distilled.safetensors"
"""The LTX-Video 2B 0.9.8-distilled single file (same repository root): the Artifact World Model's base (paper Sec. 3.3)."""
TRANSFORMER_SOURCES = ("0.9.8-distilled", "0.9.7-dev")
"""``0.9.8-distilled``: the official single file in the LTX-Video root; ``0.9.7-dev``: the sharded
``transformer/`` of the 0.9.7-dev root (the release README's earlier option)."""

MAIN_SUBFOLDERS = ("tokenizer", "text_encoder", "vae")
DEV_SUBFOLDERS = ("scheduler", "transformer")
"""Subfolders of the 0.9.7-dev repository a root may wrongly point at (only ``transformer/`` is read)."""


def cache_dir() -> Path:
    """The restorer's cache directory (``$ARTIFACTWORLD_CACHE`` or ``~/.cache/artifactworld``)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "artifactworld").expanduser()


@dataclass(frozen=True)
class ReleaseRoots:
    """The release roots (repository roots, not their subfolders); ``ltx_097_dev`` is read only for the
    ``0.9.7-dev`` transformer option."""

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


def download_command(what: str, root: Path, single_file: str | None = None) -> str:
    """The exact shell command that fetches one root (``single_file``: the LTX-Video root's transformer file to
    fetch instead of the 13B, e.g. the world model's 2B)."""
    if what == "weights":
        return f"hf download {WEIGHTS_REPO} --local-dir {root} && tar -xf {root}/weights.tar -C {root}"
    if what == "ltx_main":
        return (
            f'hf download {LTX_MAIN_REPO} --include "tokenizer/*" "text_encoder/*" "vae/*" '
            f"{single_file or TRANSFORMER_SINGLE_FILE} --local-dir {root}"
        )
    return f'hf download {LTX_097_DEV_REPO} --include "transformer/*" --local-dir {root}'


def allow_patterns(what: str, single_file: str | None = None) -> list[str]:
    """Only the files the restorer needs from each repository (the LTX-Video repo holds many checkpoints);
    ``single_file`` replaces the 13B transformer file (the world model's 2B)."""
    if what == "weights":
        return ["weights.tar"]
    if what == "ltx_main":
        return [f"{s}/*" for s in MAIN_SUBFOLDERS] + [single_file or TRANSFORMER_SINGLE_FILE]
    return ["transformer/*"]


def check_transformer_source(source: str) -> str:
    if source not in TRANSFORMER_SOURCES:
        raise RestorerInputError(
            f"Unknown transformer source {source!r}; choose one of {', '.join(TRANSFORMER_SOURCES)}."
        )
    return source


def _missing(roots: ReleaseRoots, transformer_source: str) -> dict[str, list[str]]:
    """What each root still lacks; the 0.9.7-dev root is needed only for its sharded transformer (the option)."""
    need = {
        "weights": [roots.stage1_lora, roots.stage2_lora],
        "ltx_main": [roots.ltx_main / s for s in MAIN_SUBFOLDERS],
    }
    if transformer_source == "0.9.8-distilled":
        need["ltx_main"].append(roots.ltx_main / TRANSFORMER_SINGLE_FILE)
    else:
        need["ltx_097_dev_transformer"] = [roots.ltx_097_dev / "transformer"]
    return {
        k: [str(p) for p in paths if not p.exists()] for k, paths in need.items() if any(not p.exists() for p in paths)
    }


def _root_of(roots: ReleaseRoots, what: str) -> Path:
    return {"weights": roots.weights, "ltx_main": roots.ltx_main}.get(what, roots.ltx_097_dev)


def _env_of(what: str) -> str:
    return {"weights": WEIGHTS_ROOT_ENV, "ltx_main": LTX_MAIN_ROOT_ENV}.get(what, LTX_097_DEV_ROOT_ENV)


def _missing_message(roots: ReleaseRoots, what: str, paths: list[str], reason: str) -> str:
    root = _root_of(roots, what)
    name = Path(paths[0]).name
    if name == TRANSFORMER_SINGLE_FILE and (roots.ltx_097_dev / "transformer").exists():
        return (
            f"The LTX-Video root {root} has no {TRANSFORMER_SINGLE_FILE} (the official base transformer) and {reason}: "
            f"fetch it with `{download_command(what, root)}`, or use the 0.9.7-dev transformer that "
            f'{roots.ltx_097_dev / "transformer"} already holds with `transformer_source="0.9.7-dev"` '
            "(--transformer-source 0.9.7-dev; the released adapters were trained on 0.9.8-distilled)."
        )
    return (
        f"The ArtifactWorld {what.replace('_transformer', '')} root {root} is missing {name} and {reason}: "
        f"fetch it with `{download_command(what, root)}` or set {_env_of(what)} to an existing copy."
    )


def ensure_roots(
    roots: ReleaseRoots, allow_download: bool = False, transformer_source: str = "0.9.8-distilled"
) -> ReleaseRoots:
    """Check that every root has what the restorer loads; download missing files when allowed.

    Raises:
        RestorerInputError: a root lacks files and downloading is not allowed (or the hub is
            offline); the message gives the command that fixes it.
    """
    check_transformer_source(transformer_source)
    missing = _missing(roots, transformer_source)
    if not missing:
        return roots
    from huggingface_hub import constants as hub_constants

    offline = bool(hub_constants.HF_HUB_OFFLINE)
    for what, paths in missing.items():
        if not allow_download or offline:
            reason = "downloads are disabled (HF_HUB_OFFLINE is set)" if allow_download else "downloading is off"
            raise RestorerInputError(_missing_message(roots, what, paths, reason))
        _download(what, _root_of(roots, what))
    roots = resolve_roots(roots.weights, roots.ltx_main, roots.ltx_097_dev)
    still = _missing(roots, transformer_source)
    if still:
        what = next(iter(still))
        raise RestorerInputError(
            f"After downloading, the root {_root_of(roots, what)} still lacks {still[what][0]}; "
            f"try `{download_command(what, _root_of(roots, what))}` by hand."
        )
    return roots


def _download(what: str, root: Path) -> None:
    """Fetch only the files the restorer needs into ``root`` (progress bars from huggingface_hub)."""
    from huggingface_hub import snapshot_download

    root.mkdir(parents=True, exist_ok=True)
    repo = {"weights": WEIGHTS_REPO, "ltx_main": LTX_MAIN_REPO}.get(what, LTX_097_DEV_REPO)
    snapshot_download(repo, local_dir=root, allow_patterns=allow_patterns(what))
    if what == "weights":
        with tarfile.open(root / "weights.tar") as archive:
            archive.extractall(root, filter="data")
