"""Both methods are registered with nerfstudio (the restorer's import boundary is checked in tests/restorer)."""

from __future__ import annotations

from importlib.metadata import entry_points


def test_methods_are_registered_with_nerfstudio():
    registered = {ep.name: ep for ep in entry_points(group="nerfstudio.method_configs")}
    assert {"artifactworld", "artifactworld-tiny"} <= set(registered)
    full = registered["artifactworld"].load()
    tiny = registered["artifactworld-tiny"].load()
    assert full.config.method_name == "artifactworld"
    assert full.config.pipeline.restorer_preset == "full"
    assert tiny.config.method_name == "artifactworld-tiny"
    assert tiny.config.pipeline.restorer_preset == "tiny"
    assert tiny.config.machine.device_type == "cpu"
    assert "UNTRAINED" in tiny.description


def test_the_rounds_belong_to_the_pipeline_and_the_datamanager_only_serves_data():
    """Plan, render, restore and bank are the pipeline's options; the datamanager keeps only data options."""
    from dataclasses import fields

    from artifactworld_ns.datamanager import ArtifactWorldDataManager, ArtifactWorldDataManagerConfig
    from artifactworld_ns.method_configs.artifactworld import artifactworld_config
    from artifactworld_ns.pipeline import ArtifactWorldPipeline, ArtifactWorldPipelineConfig

    config = artifactworld_config().pipeline
    assert isinstance(config, ArtifactWorldPipelineConfig) and config._target is ArtifactWorldPipeline
    assert isinstance(config.datamanager, ArtifactWorldDataManagerConfig)
    round_options = {
        "restorer_preset",
        "restorer_steps",
        "restorer_profile",
        "restore_steps",
        "clips_per_round",
        "clip_frames",
        "trajectory",
    }
    assert round_options <= {f.name for f in fields(ArtifactWorldPipelineConfig)}
    assert not round_options & {f.name for f in fields(ArtifactWorldDataManagerConfig)}
    for name in ("run_round", "request_round", "show_bank_in_viewer"):
        assert hasattr(ArtifactWorldPipeline, name) and not hasattr(ArtifactWorldDataManager, name), name
