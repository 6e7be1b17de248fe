"""Stage 1 and stage 2 as named components composed by ArtifactRestorer (tiny release, CPU)."""

import dataclasses

import pytest
import torch
from restorer_fixtures import aw_cache, load_tiny, tiny_roots  # noqa: F401

from artifactworld_ns.restorer.aatf import hand_off_heatmap
from artifactworld_ns.restorer.conform import from_model, to_model
from artifactworld_ns.restorer.dba import build_reference_video
from artifactworld_ns.restorer.heatmap import HeatmapPredictor
from artifactworld_ns.restorer.pipeline import ArtifactRestorer
from artifactworld_ns.restorer.restoration_stage import RestorationStage
from artifactworld_ns.restorer.stages import StageBackbone


@pytest.fixture(scope="module")
def restorer(tiny_roots, tmp_path_factory):  # noqa: F811
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARTIFACTWORLD_CACHE", str(tmp_path_factory.getbasetemp() / "aw-cache"))
        return load_tiny(tiny_roots)


def test_the_restorer_composes_its_stages_and_inherits_no_mixin():
    assert ArtifactRestorer.__mro__ == (ArtifactRestorer, object)
    names = [f.name for f in dataclasses.fields(StageBackbone)]
    assert names == ["transformer", "vae", "prompts", "settings", "execution_device", "generator_device"]


def test_the_components_chained_by_hand_equal_restore_reference(restorer):
    g = torch.Generator().manual_seed(3)
    frames = torch.rand(9, 32, 64, 3, generator=g)
    reference = build_reference_video(frames, frames[0], frames[-1])
    expected = restorer.restore_reference(reference)

    plan = restorer._plan(*reference.shape[:3])
    model_reference = to_model(reference, plan)
    backbone = StageBackbone(
        restorer.transformer, restorer.vae, restorer.prompts, restorer.settings, restorer.execution_device
    )
    heatmap, z_ref = HeatmapPredictor(backbone).predict(model_reference)
    handed = hand_off_heatmap(heatmap, None)
    restored = RestorationStage(backbone, restorer.auxiliary_latents).restore(model_reference, handed, z_ref=z_ref)
    assert torch.equal(from_model(restored, plan).clamp(0, 1), expected.frames)


def test_the_backbone_is_built_for_each_call_from_the_current_settings(restorer):
    first = restorer.stage_backbone()
    old = restorer.settings
    restorer.settings = dataclasses.replace(old, heatmap_steps=1)
    try:
        assert restorer.stage_backbone().settings.heatmap_steps == 1
        seen = []
        restorer.heatmap_predictor().predict(
            torch.rand(9, 32, 32, 3, generator=torch.Generator().manual_seed(0)),
            lambda stage, done, total: seen.append(total),
        )
        assert seen == [1]
    finally:
        restorer.settings = old
    assert first.settings is old
