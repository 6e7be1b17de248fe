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
