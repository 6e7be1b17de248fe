"""Parity with the official ArtifactWorld inference pipeline.

``data/official_parity.pt`` holds numbers produced by running the *official* pipeline
(``fyting/ArtifactWorld`` at commit 9250e92, ``stages/stage2/src/ltxv_trainer/ltxv_pipeline.py``)
outside this repository on the tiny random release, with ``scripts/make_parity_fixture.py``: the
inputs (8-bit), the seed, the tiny release's tensor fingerprints, and both stages' outputs in float32.
``ArtifactRestorer`` must reproduce them on the same weights, fp32 on the CPU, to 1e-4.

The release is identified by its tensors, compared with a tolerance, not by file hashes: the random weights and
the auxiliary latents (which come out of the VAE's convolutions) differ in their last bits between CPU models and
thread counts, and the comparison must hold on any x86-64 CPU at any thread count.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from restorer_fixtures import aw_cache  # noqa: F401

from artifactworld_ns.restorer.dba import black_tail
from artifactworld_ns.restorer.latents import quantize_8bit
from artifactworld_ns.restorer.pipeline import ArtifactRestorer, RestorerSettings, hand_off_heatmap
from artifactworld_ns.restorer.tiny import (
    TINY_RELEASE_SEED,
    TINY_RELEASE_VERSION,
    fingerprint_mismatches,
    release_fingerprints,
    save_tiny_release,
)

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
        mismatches = fingerprint_mismatches(release_fingerprints(root), fixture["tiny_release"]["tensors"])
        assert not mismatches, "tiny weights differ from the fixture's: regenerate it\n" + "\n".join(mismatches[:10])
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


def test_the_release_guard_tolerates_cpu_noise_and_catches_other_weights(tmp_path, fixture):
    """The fixture's guard: last-bit drift (another CPU, another thread count) passes; other weights do not."""
    recorded = fixture["tiny_release"]["tensors"]
    drifted = {
        file: {
            name: {**entry, "fingerprint": [v * (1 + 1e-7) for v in entry["fingerprint"]]}
            for name, entry in tensors.items()
        }
        for file, tensors in recorded.items()
    }
    assert fingerprint_mismatches(drifted, recorded) == []
    save_tiny_release(tmp_path, seed=TINY_RELEASE_SEED + 1)
    other = release_fingerprints(tmp_path)
    assert len(fingerprint_mismatches(other, recorded)) > 100
