"""One import package with checked boundaries: the restorer imports no nerfstudio, and nothing installs
top-level packages called ``restorer`` or ``method_configs``. (The import-linter contracts of pyproject.toml
run in ``make test`` through scripts/lint.sh.)"""

import subprocess
import sys

import pytest

PROBE = """
import importlib.util, sys
import artifactworld_ns.restorer
from artifactworld_ns.restorer.pipeline import ArtifactRestorer
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("nerfstudio", "gsplat", "viser"))
assert not loaded, loaded
assert "artifactworld_ns.method_configs" not in sys.modules
for generic in ("restorer", "method_configs"):
    assert importlib.util.find_spec(generic) is None, generic
print("ok")
"""


def test_the_restorer_imports_without_nerfstudio_and_no_generic_top_level_names(tmp_path):
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_method_configs_live_inside_the_package():
    from importlib.metadata import entry_points

    targets = {
        ep.value.split(":")[0]
        for ep in entry_points(group="nerfstudio.method_configs")
        if ep.name.startswith("artifactworld")
    }
    assert targets == {"artifactworld_ns.method_configs.artifactworld"}


LIGHT_PROBE = """
import sys
import {module}
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("diffusers", "transformers", "peft"))
assert not heavy, heavy[:5]
print("ok")
"""


@pytest.mark.parametrize(
    "module",
    [
        "artifactworld_ns.restorer",
        "artifactworld_ns.bank",
        "artifactworld_ns.datamanager",
        "artifactworld_ns.render_io",
        "artifactworld_ns.restorer.pipeline",
    ],
)
def test_the_light_layer_and_the_glue_load_no_diffusers_transformers_or_peft(module, tmp_path):
    """The restorer's light layer (errors, atomic writes, video IO, progress) is what the glue imports at module
    level; the model's libraries load only when a restorer is built (``python -X importtime`` shows the same)."""
    done = subprocess.run(
        [sys.executable, "-c", LIGHT_PROBE.format(module=module)], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
