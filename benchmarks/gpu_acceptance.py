"""GPU acceptance: the full-size restorer measured on a GPU, profile by profile, beside what was predicted.

    python benchmarks/gpu_acceptance.py --out gpu_acceptance.json [--budget-seconds 300]   # on a GPU
    python benchmarks/gpu_acceptance.py --device cpu --depth 1 --out smoke.json            # CPU smoke mode

Restorer only: no nerfstudio, no hub, no real weights. What runs (benchmarks/README.md has the command for a GPU
machine without network):

1. **Drift check** (``gpu_acceptance_drift.py``): the tiny release in bf16 on CUDA against our float32 CPU output and
   the official parity fixture.
2. **Build**, directly on the device with random weights (diffusers' own initialisation under ``torch.device``,
   then bf16): the exact 13B transformer (``configs.LTXV_13B_CONFIG``, ``--depth`` of its 48 blocks) and the
   0.9.7/0.9.8 VAE; both rank-128 adapters, saved as release files and loaded by the project's LoRA loader
   (``lora.load_lora_adapter``); the release's auxiliary latent files for the official reference; the two prompts
   through the prompt cache with a stand-in text encoder (a 1-layer T5 whose output has T5-XXL's width, 4096).
3. **Per memory profile** (80gb, 40gb, 24gb, in that order: each adds options to the last), through
   ``ArtifactRestorer`` itself: ``apply_memory_options`` (timed), a 1-step warm-up restore, then one timed
   ``restore`` of an 89-frame 544 x 960 clip (its DBA reference is the official 97 x 544 x 960; 8 steps per
   stage), then ``offload()`` and ``to(device)`` (timed). Recorded per stage (stage 1, stage 2) and phase
   (transformer steps, VAE encode, VAE decode): seconds (CUDA events) and peak ``max_memory_allocated`` /
   ``max_memory_reserved`` (and the device's used memory: reserved + the CUDA context), each beside the
   prediction of ``restorer/memory_profiles.py`` (bytes) and ``full_scale.py``'s model (seconds) and their ratio
   (``gpu_acceptance_predict.py``).
4. Writes one JSON and one markdown table (``--out`` and the same name with ``.md``), atomically, after every
   profile, so a run stopped by its time limit still leaves what it measured.

``--budget-seconds`` bounds the whole run: before each profile the remaining ones are planned from their predicted
time (scaled by what the last profile measured against its prediction), and the slowest are dropped first.

``--device cpu`` is the CPU smoke mode: the same code path at reduced width (the tiny LTX-shaped transformer and
VAE, ``--depth`` blocks) on a 17 x 32 x 64 reference; the CPU fills what it can measure (seconds), GPU-only
figures (memory, ratios) are null. The test suite runs it, so the script cannot rot before a GPU comes.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import math
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

from bench_common import ensure_restorer_importable, moving_pattern

PROFILE_ORDER = ("80gb", "40gb", "24gb")
"""Each profile adds memory options to the one before (VAE tiling, then group offload), so one restorer serves all."""
OFFICIAL_REFERENCE = (97, 544, 960)
SMOKE_REFERENCE = (17, 32, 64)
SCHEMA = "gpu-acceptance-v1"
REQUIRED_MODULES = {
    "torch": "torch",
    "diffusers": "diffusers",
    "transformers": "transformers",
    "peft": "peft",
    "accelerate": "accelerate",
    "safetensors": "safetensors",
    "jaxtyping": "jaxtyping",
    "rich": "rich",
    "ffmpeg": "ffmpeg-python",
    "past": "future",
    "PIL": "pillow",
    "requests": "requests",
    "numpy": "numpy",
    "tokenizers": "tokenizers",
}
"""Import name -> distribution of what the acceptance path imports (scripts/gpu_acceptance_wheels.sh carries the
ones a bare PyTorch image lacks)."""
WARMUP_SHARE = 0.35
"""Assumed: the 1-step warm-up (and the auxiliary latents' first load) as a share of a profile's timed restore."""
FIRST_ESTIMATE_FACTOR = 2.0
"""Assumed before anything is measured: a profile takes twice its predicted seconds (the budget plan)."""
GROUP_OFFLOAD_SETUP_GBPS = 2.0
"""Assumed for the plan: moving the transformer to pinned CPU memory when group offload is turned on."""


# ----------------------------------------------------------------------------- arguments


def parse_size(text: str) -> tuple[int, int, int]:
    """``FRAMESxHEIGHTxWIDTH`` of a DBA reference: ``8n + 1`` frames (n >= 2), sides multiples of 32."""
    try:
        frames, height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"error: --reference {text!r} is not FRAMESxHEIGHTxWIDTH, e.g. 97x544x960.") from None
    if frames < 17 or (frames - 1) % 8 or height % 32 or width % 32 or min(height, width) < 32:
        raise SystemExit(
            f"error: --reference {text} must have 8n+1 frames (at least 17: a 9-frame clip plus its 8-frame "
            "anchor tail) and sides that are multiples of 32, e.g. 97x544x960."
        )
    return frames, height, width


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_acceptance.json"), help="JSON file; the table is .md")
    parser.add_argument("--device", default=None, help="cuda (default when there is one) or cpu (the smoke mode)")
    parser.add_argument("--depth", type=int, default=None, help="transformer blocks (default: 48 on a GPU, 1 on a CPU)")
    parser.add_argument(
        "--width", choices=("full", "reduced"), default=None, help="the 13B width, or the tiny one (CPU default)"
    )
    parser.add_argument(
        "--reference", type=parse_size, default=None, help="DBA reference FRAMESxHxW (default 97x544x960; CPU 17x32x64)"
    )
    parser.add_argument("--steps", type=int, default=8, help="Euler steps of each stage (official: 8)")
    parser.add_argument(
        "--profiles", default=",".join(PROFILE_ORDER), help="comma-separated memory profiles (80gb,40gb,24gb)"
    )
    parser.add_argument(
        "--budget-seconds", type=float, default=None, help="bound on the whole run; drops the slowest profiles first"
    )
    parser.add_argument("--skip-drift", action="store_true", help="skip the bf16 drift check on the tiny release")
    args = parser.parse_args(argv)
    return args


def check_args(args: argparse.Namespace) -> None:
    """Every input checked before anything is built (one sentence each)."""
    import torch

    from artifactworld_ns.restorer.memory_profiles import PROFILES

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise SystemExit(f"error: --device {args.device!r} is not a torch device; use cuda or cpu.") from None
    if device.type not in ("cuda", "cpu"):
        raise SystemExit(f"error: --device {args.device!r} is neither cuda nor cpu.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "error: --device cuda was asked for but torch sees no CUDA GPU; use --device cpu for the smoke mode."
        )
    smoke = device.type == "cpu"
    args.depth = args.depth if args.depth is not None else (1 if smoke else 48)
    args.width = args.width or ("reduced" if smoke else "full")
    args.reference = args.reference or (SMOKE_REFERENCE if smoke else OFFICIAL_REFERENCE)
    if not 1 <= args.depth <= 48:
        raise SystemExit(f"error: --depth {args.depth} must be between 1 and the 13B model's 48 blocks.")
    if args.steps < 1:
        raise SystemExit(f"error: --steps {args.steps} must be at least 1.")
    names = [p.strip() for p in args.profiles.split(",") if p.strip()]
    unknown = [p for p in names if p not in PROFILES]
    if unknown or not names:
        raise SystemExit(
            f"error: --profiles {args.profiles!r} names no known profile; choose from {', '.join(PROFILE_ORDER)}."
        )
    args.profile_names = [p for p in PROFILE_ORDER if p in names]
    if args.budget_seconds is not None and args.budget_seconds <= 0:
        raise SystemExit(f"error: --budget-seconds {args.budget_seconds} must be positive.")
    if args.out.suffix != ".json":
        raise SystemExit(f"error: --out {args.out} must end in .json (the markdown table goes beside it as .md).")


def missing_modules() -> list[str]:
    """Distributions whose import name is not found (checked without importing them)."""
    return [dist for module, dist in REQUIRED_MODULES.items() if importlib.util.find_spec(module) is None]


# ----------------------------------------------------------------------------- timing and memory of one restore


class Clock:
    """Durations of code that queues GPU work: CUDA events on a GPU (read after one synchronize), wall time on a CPU."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.spans: dict[tuple[str, str], list] = {}

    def start(self):
        import torch

        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def stop(self, key: tuple[str, str], started) -> None:
        import torch

        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.spans.setdefault(key, []).append((started, end))
        else:
            self.spans.setdefault(key, []).append(time.perf_counter() - started)

    def seconds(self, key: tuple[str, str]) -> float:
        spans = self.spans.get(key, [])
        if self.cuda:
            return sum(start.elapsed_time(end) for start, end in spans) / 1000.0
        return float(sum(spans))


class Probe:
    """Seconds and peak GPU memory of each stage of one ``restore`` and of its phases (transformer calls, VAE encode,
    VAE decode), through wrappers on the restorer's own ``_stage1`` / ``_stage2`` / ``_encode`` / ``_decode`` and
    forward hooks on its transformer. Memory is attributed to the phase that was running: at each phase boundary
    the allocator's peak is read and reset (host-side bookkeeping, no synchronisation)."""

    def __init__(self, restorer, cuda: bool) -> None:
        self.restorer = restorer
        self.cuda = cuda
        self.clock = Clock(cuda)
        self.stage, self.phase = "outside", "other"
        self.peaks: dict[str, dict[str, dict[str, int]]] = {}
        self.context: dict[str, int] = {}
        self.calls: dict[tuple[str, str], int] = {}
        self._handles: list = []

    def _mark(self, stage: str, phase: str) -> None:
        if self.cuda:
            import torch

            slot = self.peaks.setdefault(self.stage, {}).setdefault(self.phase, {"allocated": 0, "reserved": 0})
            slot["allocated"] = max(slot["allocated"], torch.cuda.max_memory_allocated())
            slot["reserved"] = max(slot["reserved"], torch.cuda.max_memory_reserved())
            torch.cuda.reset_peak_memory_stats()
        self.stage, self.phase = stage, phase

    def _record_context(self) -> None:
        if self.cuda:
            import torch

            free, total = torch.cuda.mem_get_info()
            used = total - free
            self.context[self.stage] = max(self.context.get(self.stage, 0), used - torch.cuda.memory_reserved())

    def _enter_phase(self, phase: str):
        self._mark(self.stage, phase)
        self.calls[(self.stage, phase)] = self.calls.get((self.stage, phase), 0) + 1
        return self.clock.start()

    def _exit_phase(self, phase: str, started) -> None:
        self.clock.stop((self.stage, phase), started)
        self._mark(self.stage, "other")

    def install(self) -> "Probe":
        restorer = self.restorer
        for name, stage in (("_stage1", "stage1"), ("_stage2", "stage2")):
            setattr(restorer, name, self._stage_wrapper(getattr(restorer, name), stage))
        for name, phase in (("_encode", "vae_encode"), ("_decode", "vae_decode")):
            setattr(restorer, name, self._phase_wrapper(getattr(restorer, name), phase))
        tokens: list = []
        self._handles = [
            restorer.transformer.register_forward_pre_hook(lambda *_: tokens.append(self._enter_phase("transformer"))),
            restorer.transformer.register_forward_hook(lambda *_: self._exit_phase("transformer", tokens.pop())),
        ]
        return self

    def remove(self) -> None:
        for name in ("_stage1", "_stage2", "_encode", "_decode"):
            self.restorer.__dict__.pop(name, None)
        for handle in self._handles:
            handle.remove()

    def _stage_wrapper(self, original, stage: str):
        def wrapped(*args, **kwargs):
            self._mark(stage, "other")
            started = self.clock.start()
            try:
                return original(*args, **kwargs)
            finally:
                self.clock.stop((stage, "total"), started)
                self._record_context()
                self._mark("outside", "other")

        return wrapped

    def _phase_wrapper(self, original, phase: str):
        def wrapped(*args, **kwargs):
            started = self._enter_phase(phase)
            try:
                return original(*args, **kwargs)
            finally:
                self._exit_phase(phase, started)

        return wrapped

    def finish(self) -> None:
        """Close the last phase and wait for the GPU (so every event has its time)."""
        self._mark("outside", "other")
        if self.cuda:
            import torch

            torch.cuda.synchronize()


# ----------------------------------------------------------------------------- figures beside predictions


def figure(measured, predicted, comparable: bool) -> dict:
    """``{measured, predicted, ratio}``: the ratio only where the run is the predicted configuration."""
    ok = comparable and measured is not None and predicted not in (None, 0)
    return {"measured": measured, "predicted": predicted, "ratio": measured / predicted if ok else None}


def stage_figures(probe: Probe, stage: str, predicted: dict, comparable: bool) -> dict:
    """One stage's seconds and peaks, each beside its prediction; per phase, seconds and the allocated peak.

    Reserved memory only grows inside a stage (the allocator keeps what an earlier phase cached for the next), so
    the reserved and device peaks are the stage's; per phase the allocated peak is that phase's own."""
    cuda = probe.cuda
    stage_peaks = probe.peaks.get(stage, {})
    phases = {}
    for phase in ("transformer", "vae_encode", "vae_decode"):
        peak = stage_peaks.get(phase, {}).get("allocated") if cuda else None
        phases[phase] = {
            "calls": probe.calls.get((stage, phase), 0),
            "seconds": figure(probe.clock.seconds((stage, phase)), predicted["seconds"][phase], comparable),
            "peak_allocated_bytes": figure(peak, predicted["memory"][phase]["allocated"], comparable),
        }
    allocated = max((p["allocated"] for p in stage_peaks.values()), default=None) if cuda else None
    reserved = max((p["reserved"] for p in stage_peaks.values()), default=None) if cuda else None
    context = probe.context.get(stage) if cuda else None
    device = reserved + context if reserved is not None and context is not None else None
    return {
        "seconds": figure(probe.clock.seconds((stage, "total")), predicted["stage_seconds"], comparable),
        "peak_allocated_bytes": figure(allocated, predicted["peak"]["allocated"], comparable),
        "peak_reserved_bytes": figure(reserved, predicted["peak"]["reserved"], comparable),
        "peak_device_bytes": figure(device, predicted["peak"]["device"], comparable),
        "context_bytes": context,
        "phases": phases,
    }


# ----------------------------------------------------------------------------- the restorer, built on the device


def model_configs(width: str, depth: int) -> tuple[dict, dict]:
    """(transformer, VAE) configurations: the release's (13B width), or the tiny LTX-shaped ones (smoke mode)."""
    from artifactworld_ns.restorer.configs import (
        LTXV_13B_CONFIG,
        LTXV_VAE_CONFIG,
        TINY_TRANSFORMER_CONFIG,
        TINY_VAE_CONFIG,
    )

    if width == "full":
        return {**LTXV_13B_CONFIG, "num_layers": depth}, dict(LTXV_VAE_CONFIG)
    return {**LTXV_13B_CONFIG, **TINY_TRANSFORMER_CONFIG, "num_layers": depth}, dict(TINY_VAE_CONFIG)


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def build_restorer(args: argparse.Namespace, folder: Path, log):
    """The restorer on the device with random bf16 weights (module doc, item 2); returns it and the build figures."""
    import torch
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
    from safetensors.torch import save_file

    from artifactworld_ns.restorer.aatf import STAGE2_ADAPTER, official_blend_table
    from artifactworld_ns.restorer.configs import OFFICIAL_LORA_RANK
    from artifactworld_ns.restorer.heatmap import STAGE1_ADAPTER
    from artifactworld_ns.restorer.lora import load_lora_adapter
    from artifactworld_ns.restorer.pipeline import ArtifactRestorer, RestorerSettings
    from artifactworld_ns.restorer.prompts import MAX_PROMPT_TOKENS, STAGE_PROMPTS, cached_prompt_embeddings
    from artifactworld_ns.restorer.tiny import (
        build_tiny_text_encoder,
        build_tiny_tokenizer,
        random_lora_state_dict,
        save_auxiliary_latents,
        tiny_roots,
    )

    device, dtype = torch.device(args.device), torch.bfloat16
    transformer_config, vae_config = model_configs(args.width, args.depth)
    roots = tiny_roots(folder / "release")
    figures: dict = {}

    def timed(key: str, make):
        start = time.perf_counter()
        value = make()
        sync(device)
        figures[key] = time.perf_counter() - start
        return value

    def on_device(cls, config):
        torch.manual_seed(0)
        with torch.device(device):
            module = cls(**config)  # diffusers' own initialisation, float32, on the device
        module = module.to(dtype).eval().requires_grad_(False)
        free_memory()
        return module

    log(f"building the {args.width}-width transformer ({args.depth} blocks) and the VAE on {device}, random bf16")
    vae = timed("vae_build_seconds", lambda: on_device(AutoencoderKLLTXVideo, vae_config))
    transformer = timed("transformer_build_seconds", lambda: on_device(LTXVideoTransformer3DModel, transformer_config))

    def stand_in_text_encoder():
        """A 1-layer T5 whose output has the transformer's caption width (4096 = T5-XXL's at the 13B width)."""
        tokenizer = build_tiny_tokenizer()
        return tokenizer, build_tiny_text_encoder(len(tokenizer), transformer_config["caption_channels"]).to(device)

    prompts = timed(
        "prompts_seconds",
        lambda: cached_prompt_embeddings(
            STAGE_PROMPTS,
            f"gpu-acceptance stand-in T5, width {transformer_config['caption_channels']}",
            stand_in_text_encoder,
            folder / "cache",
            max_tokens=MAX_PROMPT_TOKENS,
        ),
    )
    log(
        f"both rank-{OFFICIAL_LORA_RANK} adapters: drawn on {device}, saved as release files, loaded by lora.load_lora_adapter"
    )
    roots.weights.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    files = {STAGE1_ADAPTER: roots.stage1_lora, STAGE2_ADAPTER: roots.stage2_lora}
    # both files first, as the release has them: once an adapter is in, peft wraps the target layers
    for path, key_format, seed in ((roots.stage1_lora, "diffusers", 1), (roots.stage2_lora, "comfyui", 2)):
        state = random_lora_state_dict(transformer, key_format, seed=seed, rank=OFFICIAL_LORA_RANK, device=device)
        save_file({k: v.to(dtype).cpu().contiguous() for k, v in state.items()}, str(path))
        del state
        free_memory()
    loaded = time.perf_counter()
    for adapter, path in files.items():
        load_lora_adapter(transformer, path, adapter)
    sync(device)
    figures["adapter_load_seconds"] = time.perf_counter() - loaded
    figures["adapters_seconds"] = time.perf_counter() - start
    timed("auxiliary_latents_seconds", lambda: save_auxiliary_latents(roots, vae, args.reference))
    free_memory()
    settings = RestorerSettings(
        num_inference_steps=args.steps,
        heatmap_steps=args.steps,
        schedule=official_blend_table(args.steps),
        processing_size=None,  # the clip is already at the model size (no resize, so no torchvision)
        processing_max_side=None,
        seed=42,
        label="[gpu acceptance: random weights] ",
        show_progress=False,
    )
    restorer = ArtifactRestorer(transformer, vae, prompts, roots, settings)
    restorer.execution_device = device
    figures["parameters"] = {
        "transformer": sum(p.numel() for n, p in transformer.named_parameters() if "lora_" not in n),
        "lora": sum(p.numel() for n, p in transformer.named_parameters() if "lora_" in n),
        "vae": sum(p.numel() for p in vae.parameters()),
    }
    figures["weights_on_device_bytes"] = torch.cuda.memory_allocated() if device.type == "cuda" else None
    return restorer, figures


# ----------------------------------------------------------------------------- one profile


@contextlib.contextmanager
def steps_of(restorer, steps: int):
    """Temporarily run both stages with ``steps`` Euler steps (the warm-up)."""
    from artifactworld_ns.restorer.aatf import official_blend_table

    saved = restorer.settings
    restorer.settings = replace(
        saved, num_inference_steps=steps, heatmap_steps=steps, schedule=official_blend_table(steps)
    )
    try:
        yield
    finally:
        restorer.settings = saved


def switch_profile(restorer, profile) -> None:
    """Turn on what ``profile`` adds to the options the restorer already has (the real ``apply_memory_options``)."""
    if restorer.group_offloaded and not profile.group_offload:
        raise RuntimeError(f"profile {profile.name} needs group offload off, but it is on: run the profiles in order")
    if restorer.vae.use_tiling and not profile.vae_tiling:
        restorer.vae.disable_tiling()
    restorer.apply_memory_options(
        vae_tiling=profile.vae_tiling and not restorer.vae.use_tiling,
        fp8_transformer_storage=profile.fp8_transformer_storage,
        group_offload=profile.group_offload and not restorer.group_offloaded,
    )


def run_profile(restorer, name: str, clip: tuple, predicted: dict, comparable: bool, log) -> dict:
    """Apply the profile, warm up, time one restore stage by stage, then offload and reload."""
    import torch

    from artifactworld_ns.restorer.memory_profiles import get_profile

    profile = get_profile(name)
    device = restorer.execution_device
    cuda = device.type == "cuda"
    started = time.perf_counter()
    log(f"{name}: applying {profile.options()}")
    switch_profile(restorer, profile)
    sync(device)
    apply_seconds = time.perf_counter() - started
    free_memory()
    log(f"{name}: warm-up restore (1 step per stage)")
    with steps_of(restorer, 1):
        restorer.restore(*clip)
    sync(device)
    free_memory()
    weights = torch.cuda.memory_allocated() if cuda else None
    log(f"{name}: timed restore ({restorer.settings.heatmap_steps} + {restorer.settings.num_inference_steps} steps)")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    probe = Probe(restorer, cuda).install()
    wall = time.perf_counter()
    try:
        result = restorer.restore(*clip)
        probe.finish()
    finally:
        probe.remove()
    restore_seconds = time.perf_counter() - wall
    finite = bool(torch.isfinite(result.frames).all() and torch.isfinite(result.heatmap).all())
    del result
    free_memory()
    log(f"{name}: offload() and to({device})")
    moved = time.perf_counter()
    restorer.offload()
    sync(device)
    offload_seconds = time.perf_counter() - moved
    after_offload = torch.cuda.memory_allocated() if cuda else None
    moved = time.perf_counter()
    restorer.to(device)
    sync(device)
    reload_seconds = time.perf_counter() - moved
    return {
        "status": "measured",
        "options": profile.options(),
        "options_in_effect": {
            "group_offload": restorer.group_offloaded,
            "vae_tiling": bool(restorer.vae.use_tiling),
            "fp8_transformer_storage": any(p.dtype == torch.float8_e4m3fn for p in restorer.transformer.parameters()),
        },
        "apply_seconds": apply_seconds,
        "weights_on_device_bytes": figure(weights, predicted["moved_bytes"], comparable),
        "restore_seconds": figure(restore_seconds, predicted["restore_seconds"], comparable),
        "stages": {s: stage_figures(probe, s, predicted["stages"][s], comparable) for s in ("stage1", "stage2")},
        "offload_seconds": figure(offload_seconds, predicted["offload_seconds"], comparable),
        "reload_seconds": figure(reload_seconds, predicted["reload_seconds"], comparable),
        "allocated_after_offload_bytes": after_offload,
        "finite": finite,
        "wall_seconds": time.perf_counter() - started,
    }


# ----------------------------------------------------------------------------- the budget


def plan_profiles(names: list[str], estimates: dict[str, float], remaining: float) -> tuple[list[str], list[str]]:
    """The profiles to run (in order) within ``remaining`` seconds: the slowest estimate is dropped first."""
    keep = list(names)
    dropped = []
    while keep and sum(estimates[n] for n in keep) > remaining:
        slowest = max(keep, key=lambda n: estimates[n])
        keep.remove(slowest)
        dropped.append(slowest)
    return keep, dropped


def predicted_cost(predicted: dict, profile_name: str, transformer_bytes: int) -> float:
    """Seconds a profile is predicted to take: warm-up + timed restore + offload and reload (+ group offload setup)."""
    from artifactworld_ns.restorer.memory_profiles import get_profile

    setup = transformer_bytes / (GROUP_OFFLOAD_SETUP_GBPS * 1e9) if get_profile(profile_name).group_offload else 0.0
    return (
        predicted["restore_seconds"] * (1 + WARMUP_SHARE)
        + predicted["offload_seconds"]
        + predicted["reload_seconds"]
        + setup
    )


# ----------------------------------------------------------------------------- main


def environment(device: str) -> dict:
    import diffusers
    import peft
    import torch
    import transformers

    cuda = torch.device(device).type == "cuda"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "device": device,
        "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
        "gpu_total_bytes": torch.cuda.get_device_properties(torch.device(device)).total_memory if cuda else None,
        "torch_threads": torch.get_num_threads(),
    }


def all_finite(value) -> bool:
    """No NaN or infinity anywhere in the result (None is fine: a figure this device does not measure)."""
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(all_finite(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return True


def write_outputs(result: dict, out: Path) -> None:
    from gpu_acceptance_report import markdown

    from artifactworld_ns.restorer.atomic import atomic_path

    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result, indent=1, default=str))
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(markdown(result))


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    missing = missing_modules()
    if missing:
        print(
            f"error: these packages are missing: {', '.join(missing)}; on a machine with pip run "
            "scripts/gpu_acceptance_wheels.sh and install its wheels as benchmarks/README.md shows.",
            file=sys.stderr,
        )
        return 2
    ensure_restorer_importable()
    check_args(args)
    with quiet_libraries():
        return run(args, argv, started)


@contextlib.contextmanager
def quiet_libraries():
    """Random-weight builds make diffusers and peft warn about casting and stacked adapters: expected here
    (restored on exit, so the test suite's other tests see the libraries as they were)."""
    import warnings

    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            yield
    finally:
        diffusers_logging.set_verbosity(level)


def run(args: argparse.Namespace, argv: list[str] | None, started: float) -> int:
    """The drift check, the build and the profiles (module doc); returns the exit status."""
    import torch
    from gpu_acceptance_drift import drift_check
    from gpu_acceptance_predict import gpu_spec, profile_predictions
    from rich.console import Console

    from artifactworld_ns.restorer.memory_profiles import RELEASE_FIGURES

    console = Console(stderr=True)

    def log(message: str) -> None:
        console.log(message, markup=False)

    deadline = started + args.budget_seconds if args.budget_seconds else math.inf
    cuda = torch.device(args.device).type == "cuda"
    env = environment(args.device)
    gpu_name, gpu, recognised = gpu_spec(env["device_name"] if cuda else None)
    comparable = cuda and args.width == "full" and tuple(args.reference) == OFFICIAL_REFERENCE
    predictions = {p: profile_predictions(p, args.depth, args.steps, gpu) for p in args.profile_names}
    transformer_bytes = RELEASE_FIGURES.transformer_other_bf16 + args.depth * (
        RELEASE_FIGURES.transformer_block_bf16 + RELEASE_FIGURES.lora_block
    )
    result: dict = {
        "schema": SCHEMA,
        "mode": "gpu" if cuda else "cpu-smoke",
        "command": ["benchmarks/gpu_acceptance.py", *(argv if argv is not None else sys.argv[1:])],
        "environment": env,
        "config": {
            "width": args.width,
            "depth": args.depth,
            "reference": list(args.reference),
            "clip_frames": args.reference[0] - 8,
            "steps": args.steps,
            "lora_rank": 128,
            "text_width": model_configs(args.width, args.depth)[0]["caption_channels"],
            "dtype": "bfloat16",
            "profiles": args.profile_names,
            "budget_seconds": args.budget_seconds,
        },
        "prediction_basis": {
            "memory": f"restorer/memory_profiles.py RELEASE_FIGURES at {args.depth} of 48 blocks",
            "seconds": f"benchmarks/full_scale.py model on {gpu_name}"
            + ("" if recognised else " (GPU not recognised)"),
            "gpu": gpu,
            "comparable": comparable,
            "note": None
            if comparable
            else "ratios are left out: this run is not the predicted configuration (13B width, 97x544x960, CUDA)",
        },
        "drift": None,
        "build": None,
        "profiles": {},
        "dropped_profiles": [],
        "errors": [],
        "wall_seconds": None,
    }

    def fail(where: str, err: BaseException) -> None:
        line = f"{where}: {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        result["errors"].append(line)
        log(f"FAILED {line}")
        traceback.print_exc(limit=-6, file=sys.stderr)

    def save() -> None:
        result["wall_seconds"] = time.perf_counter() - started
        write_outputs(result, args.out)

    if not args.skip_drift:
        try:
            drift = drift_check(args.device, torch.bfloat16 if cuda else torch.float32, log=log)
            result["drift"] = drift
        except Exception as err:  # noqa: BLE001 -- reported, and the profiles still run
            fail("drift check", err)
        free_memory()
        save()

    def drop(names: list[str], estimates: dict[str, float]) -> None:
        left = max(0.0, deadline - time.perf_counter())
        for name in names:
            reason = f"--budget-seconds: estimated {estimates[name]:.0f} s, {left:.0f} s left"
            result["profiles"][name] = {"status": "dropped", "reason": reason}
            result["dropped_profiles"].append(name)
            log(f"{name}: dropped ({reason})")

    first_estimates = {
        p: FIRST_ESTIMATE_FACTOR * predicted_cost(predictions[p], p, transformer_bytes) for p in args.profile_names
    }
    if not plan_profiles(args.profile_names, first_estimates, deadline - time.perf_counter())[0]:
        drop(args.profile_names, first_estimates)  # not even the fastest fits: nothing to build for
    with tempfile.TemporaryDirectory(prefix="aw-gpu-acceptance-") as folder:
        restorer = None
        if not result["dropped_profiles"]:
            try:
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                restorer, build = build_restorer(args, Path(folder), log)
                build["predicted_disk_load_seconds"] = (transformer_bytes + RELEASE_FIGURES.vae) / 2e9
                result["build"] = build
            except Exception as err:  # noqa: BLE001
                fail("build", err)
            save()
        if restorer is not None:
            frames, height, width = args.reference
            video = moving_pattern(frames - 8, height, width)
            clip = (video, video[0], video[-1])
            factor = FIRST_ESTIMATE_FACTOR
            pending = list(args.profile_names)
            while pending:
                # re-planned before each profile, with the last measured profile's time against its prediction
                estimates = {p: factor * predicted_cost(predictions[p], p, transformer_bytes) for p in pending}
                keep, _ = plan_profiles(pending, estimates, deadline - time.perf_counter())
                if not keep:
                    drop(pending, estimates)
                    break
                name = keep[0]
                pending.remove(name)
                try:
                    measured = run_profile(restorer, name, clip, predictions[name], comparable, log)
                    result["profiles"][name] = measured
                    factor = measured["wall_seconds"] / max(
                        predicted_cost(predictions[name], name, transformer_bytes), 1e-9
                    )
                    if not measured["finite"]:
                        result["errors"].append(f"{name}: the restored frames or heatmap are not finite")
                except Exception as err:  # noqa: BLE001 -- the next profile still runs
                    fail(f"profile {name}", err)
                    result["profiles"][name] = {"status": "failed", "error": result["errors"][-1]}
                    free_memory()
                save()
            del restorer
    if result["drift"] is not None and not result["drift"]["finite"]:
        result["errors"].append("drift check: an output is not finite")
    if not all_finite(result):
        result["errors"].append("a measured figure is NaN or infinite")
    save()
    from gpu_acceptance_report import markdown

    print(markdown(result))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')} in {result['wall_seconds']:.0f} s")
    if result["errors"]:
        print(f"error: {len(result['errors'])} part(s) failed: " + "; ".join(result["errors"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
