"""The drift check of ``gpu_acceptance.py``: the tiny release through ``ArtifactRestorer`` on the device, in bf16 on
CUDA, against our float32 CPU output and against the official parity fixture (``tests/restorer/data/official_parity.pt``,
the official pipeline's output on the same weights, float32 on a CPU).

Each run restores the fixture's inputs twice, as ``tests/restorer/test_official_parity.py`` does: stage 1 alone
(``predict_heatmap``: the decoded RGB heatmap) and stage 2 alone on the fixture's handed-off heatmap
(``restore_reference``: the restored frames). Runs:

* ``cpu_fp32``: float32 on the CPU, the parity test's run (the fixture to 1e-4);
* ``device``: the acceptance dtype on the device (bf16 on CUDA; float32 in the CPU smoke mode, where it is
  ``cpu_fp32`` itself);
* CUDA only: ``device_fp32`` (float32 on CUDA: its own generator and kernels), ``device_cpu_draws`` (bf16 on CUDA
  with the random numbers drawn on the CPU, as the fixture's were), ``device_fp8`` (bf16 with fp8 layerwise
  storage) and ``device_group_offload`` (bf16, block-level group offload on a CUDA stream).

A CUDA generator draws other numbers than a CPU generator with the same seed, so ``device`` against ``cpu_fp32`` or
the fixture is the size of a different noise draw plus bf16; ``device_cpu_draws`` against the fixture and
``device`` against ``device_fp32`` take the generator's device out and leave bf16: its arithmetic, and the VAE's
posterior sample, which is drawn in the VAE's dtype (on a CPU, ``randn`` in bf16 draws other numbers than in float32
for 16 values or more, not the same ones rounded). All runs share the prompt embeddings, computed once by the tiny
text encoder in float32 (the prompt cache).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "restorer" / "data" / "official_parity.pt"
OUTPUTS = ("stage1_heatmap", "stage2_restored")

COMPARISONS = {
    "cpu_fp32_vs_fixture": ("cpu_fp32", "fixture"),
    "device_vs_cpu_fp32": ("device", "cpu_fp32"),
    "device_vs_fixture": ("device", "fixture"),
    "device_fp32_vs_cpu_fp32": ("device_fp32", "cpu_fp32"),
    "device_vs_device_fp32": ("device", "device_fp32"),
    "device_cpu_draws_vs_fixture": ("device_cpu_draws", "fixture"),
    "device_fp8_vs_device": ("device_fp8", "device"),
    "device_group_offload_vs_device": ("device_group_offload", "device"),
}
"""Each reported error: ``(a, b)``, max and mean absolute difference of each output (values in [0, 1])."""
CUDA_ONLY_RUNS = ("device_fp32", "device_cpu_draws", "device_fp8", "device_group_offload")


def release_matches_fixture(root: Path, fixture: dict) -> dict:
    """Whether the tiny release under ``root`` has the fixture's weights: every tensor's fingerprint, with the
    parity test's tolerance (file bytes change between CPUs and thread counts in the last bits; see
    ``tiny.release_fingerprints``)."""
    from artifactworld_ns.restorer.tiny import fingerprint_mismatches, release_fingerprints

    mismatches = fingerprint_mismatches(release_fingerprints(root), fixture["tiny_release"]["tensors"])
    return {"weights_match": not mismatches, "differing_files": sorted({line.split(":")[0] for line in mismatches})}


def _restorer(roots, device: str, dtype: torch.dtype, seed: int, cpu_draws: bool = False, **options):
    from artifactworld_ns.restorer.pipeline import ArtifactRestorer, RestorerSettings

    settings = RestorerSettings(processing_max_side=None, processing_size=None, seed=seed, show_progress=False)
    restorer = ArtifactRestorer.from_roots(
        roots, settings=settings, device=device, dtype=dtype, transformer_config="tiny", **options
    )
    if cpu_draws:  # every random number drawn on the CPU (diffusers' ``randn_tensor`` moves them to the device)
        restorer.generator_device = torch.device("cpu")
    return restorer


def _outputs(restorer, fixture: dict) -> dict[str, torch.Tensor]:
    reference = fixture["reference_uint8"].float() / 255.0
    handed = fixture["stage2_heatmap_input_uint8"].float() / 255.0
    return {
        "stage1_heatmap": restorer.predict_heatmap(reference).float().cpu(),
        "stage2_restored": restorer.restore_reference(reference, heatmap=handed).frames.float().cpu(),
    }


def _errors(a: dict, b: dict) -> dict:
    out = {}
    for name in OUTPUTS:
        diff = (a[name] - b[name]).abs()
        out[name] = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean())}
    return out


def drift_check(device: str, device_dtype: torch.dtype, log=print) -> dict:
    """Run the tiny release on the CPU in float32 and on ``device`` in ``device_dtype`` (and the CUDA variants);
    return each comparison's errors (``None`` where a run does not apply to this device) and each run's seconds."""
    from artifactworld_ns.restorer.loading import quiet_hub_progress
    from artifactworld_ns.restorer.tiny import ensure_tiny_release

    fixture = torch.load(FIXTURE, weights_only=True)
    with quiet_hub_progress():
        roots = ensure_tiny_release()
    seed = fixture["seed"]
    plans = {"cpu_fp32": ("cpu", torch.float32, {})}
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda:
        plans["device"] = (device, device_dtype, {})
        plans["device_fp32"] = (device, torch.float32, {})
        plans["device_cpu_draws"] = (device, device_dtype, {"cpu_draws": True})
        plans["device_fp8"] = (device, device_dtype, {"fp8_transformer_storage": True})
        plans["device_group_offload"] = (device, device_dtype, {"group_offload": True})
    outputs: dict[str, dict] = {"fixture": {name: fixture[name] for name in OUTPUTS}}
    seconds = {}
    for name, (run_device, dtype, options) in plans.items():
        log(f"drift check: {name} ({run_device}, {str(dtype).removeprefix('torch.')})")
        start = time.perf_counter()
        with quiet_hub_progress():
            restorer = _restorer(roots, run_device, dtype, seed, **options)
        outputs[name] = _outputs(restorer, fixture)
        seconds[name] = time.perf_counter() - start
        del restorer
    if not on_cuda:  # the CPU smoke mode: the device run is the float32 CPU run
        outputs["device"], seconds["device"] = outputs["cpu_fp32"], seconds["cpu_fp32"]
    comparisons = {
        key: (_errors(outputs[a], outputs[b]) if a in outputs and b in outputs else None)
        for key, (a, b) in COMPARISONS.items()
    }
    finite = all(torch.isfinite(t).all() for run in outputs.values() for t in run.values())
    return {
        "device": device,
        "device_dtype": str(device_dtype).removeprefix("torch."),
        "release": release_matches_fixture(roots.weights.parent, fixture),
        "runs_seconds": {name: seconds.get(name) for name in ("cpu_fp32", "device", *CUDA_ONLY_RUNS)},
        "comparisons": comparisons,
        "finite": bool(finite),
    }
