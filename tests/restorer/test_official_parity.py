"""Parity with the official ArtifactWorld inference pipeline (DESIGN.md Sec. 3a).

``data/official_parity.pt`` holds numbers produced by running the *official* pipeline
(``fyting/ArtifactWorld`` at commit 9250e92, ``stages/stage2/src/ltxv_trainer/ltxv_pipeline.py``)
outside this repository on the tiny random release, with ``scripts/make_parity_fixture.py``: the
inputs (8-bit), the seed, the tiny release's file hashes, and both stages' outputs in float32.
``ArtifactRestorer`` must reproduce them on the same weights, fp32 on the CPU, to 1e-4.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from restorer_fixtures import aw_cache  # noqa: F401

from artifactworld_ns.restorer.dba import black_tail
from artifactworld_ns.restorer.latents import quantize_8bit
from artifactworld_ns.restorer.pipeline import ArtifactRestorer, RestorerSettings, hand_off_heatmap
from artifactworld_ns.restorer.tiny import TINY_RELEASE_SEED, TINY_RELEASE_VERSION, save_tiny_release

FIXTURE = Path(__file__).parent / "data" / "official_parity.pt"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def restorer(fixture, tmp_path_factory):
    root = tmp_path_factory.mktemp("parity-release")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARTIFACTWORLD_CACHE", str(tmp_path_factory.mktemp("parity-cache")))
        assert fixture["tiny_release"]["version"] == TINY_RELEASE_VERSION, (
            "tiny release changed: regenerate the parity fixture"
        )
        roots = save_tiny_release(root, seed=TINY_RELEASE_SEED)
        hashes = {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".safetensors", ".pt")
        }
        assert hashes == fixture["tiny_release"]["files"], "tiny weights differ from the fixture's: regenerate it"
        settings = RestorerSettings(
            processing_max_side=None, processing_size=None, seed=fixture["seed"], show_progress=False
        )
        yield ArtifactRestorer.from_roots(roots, settings=settings, device="cpu", transformer_config="tiny")


def test_stage1_matches_the_official_pipeline(fixture, restorer):
    reference = fixture["reference_uint8"].float() / 255.0
    heatmap = restorer.predict_heatmap(reference)
    expected = fixture["stage1_heatmap"]
    assert heatmap.shape == expected.shape == (17, 32, 64, 3)
    assert (heatmap - expected).abs().max() <= TOLERANCE


def test_stage2_matches_the_official_pipeline(fixture, restorer):
    reference = fixture["reference_uint8"].float() / 255.0
    result = restorer.restore_reference(reference, heatmap=fixture["stage2_heatmap_input_uint8"].float() / 255.0)
    expected = fixture["stage2_restored"]
    assert result.frames.shape == expected.shape
    assert (result.frames - expected).abs().max() <= TOLERANCE


def test_both_stages_chain_like_the_official_scripts(fixture, restorer):
    reference = fixture["reference_uint8"].float() / 255.0
    # the hand-off is exactly what the official stage-1 script writes for stage 2
    handed = hand_off_heatmap(fixture["stage1_heatmap"])
    assert torch.equal((handed * 255).round().to(torch.uint8), fixture["stage2_heatmap_input_uint8"])
    assert torch.equal(handed, black_tail(quantize_8bit(fixture["stage1_heatmap"])))
    result = restorer.restore_reference(reference)
    assert (result.frames - fixture["stage2_restored"]).abs().max() <= TOLERANCE


def test_a_different_seed_does_not_match(fixture, restorer):
    """The comparison can fail: one changed convention (here the seed) moves the output far past 1e-4."""
    reference = fixture["reference_uint8"].float() / 255.0
    restorer.settings.seed = fixture["seed"] + 1
    try:
        heatmap = restorer.predict_heatmap(reference)
    finally:
        restorer.settings.seed = fixture["seed"]
    assert (heatmap - fixture["stage1_heatmap"]).abs().max() > 100 * TOLERANCE
