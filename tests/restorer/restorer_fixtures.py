"""Shared fixtures for the restorer tests (imported by the test modules; tiny models only, CPU, offline)."""

from __future__ import annotations

import pytest

from artifactworld_ns.restorer.pipeline import ArtifactRestorer, RestorerSettings
from artifactworld_ns.restorer.tiny import save_tiny_release


@pytest.fixture(autouse=True)
def aw_cache(tmp_path_factory, monkeypatch):
    """Point the restorer cache (prompt embeddings, tiny release) at a per-session temp dir."""
    cache = tmp_path_factory.getbasetemp() / "aw-cache"
    monkeypatch.setenv("ARTIFACTWORLD_CACHE", str(cache))
    for var in ("ARTIFACTWORLD_WEIGHTS_ROOT", "ARTIFACTWORLD_LTX_MAIN_ROOT", "ARTIFACTWORLD_LTX_097_DEV_ROOT"):
        monkeypatch.delenv(var, raising=False)
    return cache


@pytest.fixture(scope="session")
def tiny_roots(tmp_path_factory):
    """The tiny untrained release saved once per session in the release's folder layout."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARTIFACTWORLD_CACHE", str(tmp_path_factory.getbasetemp() / "aw-cache"))
        return save_tiny_release(tmp_path_factory.mktemp("tiny-release"))


def load_tiny(roots, **kwargs) -> ArtifactRestorer:
    """Load the tiny release through the real loader, at a small processing size for speed."""
    settings = RestorerSettings(
        processing_max_side=kwargs.pop("processing_max_side", 128), show_progress=False, label="[tiny: UNTRAINED] "
    )
    kwargs.setdefault("transformer_config", "tiny")
    return ArtifactRestorer.from_roots(roots, settings=settings, device="cpu", **kwargs)
