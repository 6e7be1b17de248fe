"""benchmarks/gpu_acceptance.py before a GPU comes: its CPU smoke mode runs the same code path at reduced width and
must fill every field the GPU run fills (GPU-only figures null, the rest finite); the time budget drops the slowest
profiles first; missing packages and bad sizes stop with one sentence."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from restorer_fixtures import aw_cache  # noqa: F401

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu_acceptance  # noqa: E402

PROFILES = ("80gb", "40gb", "24gb")
STEPS = 2
FIGURE_KEYS = {"measured", "predicted", "ratio"}
SECONDS = "seconds"
MEMORY = ("peak_allocated_bytes", "peak_reserved_bytes", "peak_device_bytes")
DRIFT_CPU = ("cpu_fp32_vs_fixture", "device_vs_cpu_fp32", "device_vs_fixture")
DRIFT_CUDA_ONLY = (
    "device_fp32_vs_cpu_fp32",
    "device_vs_device_fp32",
    "device_cpu_draws_vs_fixture",
    "device_fp8_vs_device",
    "device_group_offload_vs_device",
)


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_figure(fig: dict, cpu_measures: bool, where: str) -> None:
    """A measured figure beside its prediction: the CPU fills seconds, never GPU memory, never a ratio."""
    assert set(fig) == FIGURE_KEYS, where
    assert finite(fig["predicted"]) and fig["predicted"] > 0, where
    assert fig["ratio"] is None, f"{where}: a CPU run is not the predicted configuration"
    if cpu_measures:
        assert finite(fig["measured"]) and fig["measured"] >= 0, where
    else:
        assert fig["measured"] is None, f"{where} is GPU-only"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-acceptance") / "smoke.json"
    with pytest.MonkeyPatch.context() as mp:
        # the session's restorer cache (aw_cache's folder): the tiny release is built once for every test
        mp.setenv("ARTIFACTWORLD_CACHE", str(tmp_path_factory.getbasetemp() / "aw-cache"))
        status = gpu_acceptance.main(["--device", "cpu", "--depth", "1", "--steps", str(STEPS), "--out", str(out)])
    return status, json.loads(out.read_text()), out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_cpu_smoke_fills_every_field_the_gpu_run_fills(smoke):
    status, result, table = smoke
    assert status == 0 and result["errors"] == []
    assert result["schema"] == gpu_acceptance.SCHEMA and result["mode"] == "cpu-smoke"
    assert result["config"]["reference"] == list(gpu_acceptance.SMOKE_REFERENCE)
    assert result["environment"]["gpu_total_bytes"] is None and not result["prediction_basis"]["comparable"]
    build = result["build"]
    for key in (
        "vae_build_seconds",
        "transformer_build_seconds",
        "prompts_seconds",
        "adapter_load_seconds",
        "adapters_seconds",
        "auxiliary_latents_seconds",
        "predicted_disk_load_seconds",
    ):
        assert finite(build[key]), key
    assert build["weights_on_device_bytes"] is None
    assert build["parameters"]["lora"] > 0, "both rank-128 adapters were loaded"

    assert result["dropped_profiles"] == [] and list(result["profiles"]) == list(PROFILES)
    for name in PROFILES:
        p = result["profiles"][name]
        assert p["status"] == "measured" and p["finite"] is True
        assert p["options_in_effect"] == p["options"], f"{name}: the restorer runs with the profile's options"
        assert finite(p["apply_seconds"]) and finite(p["wall_seconds"])
        assert p["allocated_after_offload_bytes"] is None
        for key in ("restore_seconds", "offload_seconds", "reload_seconds"):
            check_figure(p[key], True, f"{name} {key}")
        check_figure(p["weights_on_device_bytes"], False, f"{name} weights_on_device_bytes")
        for stage in ("stage1", "stage2"):
            s = p["stages"][stage]
            check_figure(s[SECONDS], True, f"{name} {stage} seconds")
            for key in MEMORY:
                check_figure(s[key], False, f"{name} {stage} {key}")
            assert s["context_bytes"] is None
            calls = {"transformer": STEPS, "vae_encode": 1, "vae_decode": 1}  # stage 2 reuses stage 1's z_ref
            for phase, count in calls.items():
                ph = s["phases"][phase]
                assert ph["calls"] == count, f"{name} {stage} {phase}"
                check_figure(ph[SECONDS], True, f"{name} {stage} {phase} seconds")
                assert 0 < ph[SECONDS]["measured"] <= s[SECONDS]["measured"]
                check_figure(ph["peak_allocated_bytes"], False, f"{name} {stage} {phase} peak_allocated_bytes")
        assert f"| {name} | stage1 |" in table and f"| {name} | measured |" in table

    drift = result["drift"]
    assert drift["finite"] and drift["release"]["weights_match"]
    for key in DRIFT_CPU:
        for output in ("stage1_heatmap", "stage2_restored"):
            errors = drift["comparisons"][key][output]
            assert finite(errors["max_abs"]) and finite(errors["mean_abs"]), key
    # the float32 CPU run is the parity test's: the official pipeline's numbers to 1e-4
    assert drift["comparisons"]["cpu_fp32_vs_fixture"]["stage2_restored"]["max_abs"] <= 1e-4
    assert drift["comparisons"]["device_vs_cpu_fp32"]["stage1_heatmap"]["max_abs"] == 0.0
    for key in DRIFT_CUDA_ONLY:
        assert key in drift["comparisons"] and drift["comparisons"][key] is None, key
    assert set(drift["runs_seconds"]) == {
        "cpu_fp32",
        "device",
        "device_fp32",
        "device_cpu_draws",
        "device_fp8",
        "device_group_offload",
    }
    assert "## Drift" in table and "device_cpu_draws_vs_fixture" in table


def test_the_budget_drops_the_slowest_profiles_first():
    estimates = {"80gb": 60.0, "40gb": 70.0, "24gb": 100.0}
    assert gpu_acceptance.plan_profiles(list(PROFILES), estimates, 300.0) == (list(PROFILES), [])
    assert gpu_acceptance.plan_profiles(list(PROFILES), estimates, 150.0) == (["80gb", "40gb"], ["24gb"])
    assert gpu_acceptance.plan_profiles(list(PROFILES), estimates, 100.0) == (["80gb"], ["24gb", "40gb"])
    assert gpu_acceptance.plan_profiles(list(PROFILES), estimates, 10.0) == ([], ["24gb", "40gb", "80gb"])


def test_a_budget_too_small_for_any_profile_builds_nothing(tmp_path):
    out = tmp_path / "none.json"
    status = gpu_acceptance.main(["--device", "cpu", "--skip-drift", "--budget-seconds", "0.001", "--out", str(out)])
    result = json.loads(out.read_text())
    assert status == 0 and result["build"] is None and result["drift"] is None
    assert result["dropped_profiles"] == list(PROFILES)
    assert all(p["status"] == "dropped" and "--budget-seconds" in p["reason"] for p in result["profiles"].values())


def test_missing_packages_stop_with_one_sentence(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(gpu_acceptance.REQUIRED_MODULES, "no_such_module_xyz", "no-such-package")
    assert gpu_acceptance.main(["--device", "cpu", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no-such-package" in err and "gpu_acceptance_wheels.sh" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--reference", "96x544x960"], "8n+1 frames"),
        (["--reference", "97x540x960"], "multiples of 32"),
        (["--profiles", "16gb"], "no known profile"),
        (["--depth", "49"], "48 blocks"),
        (["--out", "table.md"], "must end in .json"),
    ],
)
def test_bad_options_stop_with_one_sentence(argv, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        gpu_acceptance.main(["--device", "cpu", *argv])
    assert words in str(stop.value) or words in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "nothing is written for bad options"
