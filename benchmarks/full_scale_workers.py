"""The measuring half of ``full_scale.py``: real-width transformer blocks and the VAE, each run in a
fresh process (``python benchmarks/full_scale_workers.py WORKER JSON-ARGS`` prints one JSON line), with
the process-peak, live-tensor-bytes and FLOP instruments they are measured by."""

from __future__ import annotations

import json
import math
import re
import sys
import tempfile
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only

OFFICIAL_CLIP = (97, 544, 960)
"""The official reference clip (frames, height, width): 13 x 17 x 30 = 6,630 latent tokens per segment."""
STEPS_PER_STAGE = 8


# ----------------------------------------------------------------------------- process memory


def _proc_status(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


class ProcessPeak:
    """Peak resident memory of this process above its level at entry (Linux: VmHWM reset via clear_refs)."""

    def __enter__(self) -> "ProcessPeak":
        self.base = _proc_status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        return self

    def __exit__(self, *exc) -> None:
        self.peak = _proc_status("VmHWM") - self.base


def _flop_counter():
    """torch's FlopCounterMode, taught the CPU flash-attention op it does not know (same formula as CUDA's)."""
    from torch.utils import flop_counter

    def cpu_flash_attention(query, key, value, *args, out_shape=None, **kwargs):
        return flop_counter.sdpa_flop_count(query, key, value)

    return flop_counter.FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash_attention}
    )


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of live tensor storages created inside the block (what a GPU's caching allocator holds,
    before fragmentation), on any device including ``meta``.

    Hand-written: torch's ``MemTracker`` refuses modules that run more than once per pass, which the
    VAE's tiled encode/decode do. Storages of ``modules``' parameters and buffers are never counted.
    """

    def __init__(self, *modules: torch.nn.Module) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._sizes: dict[int, int] = {}
        self._weights = {t.untyped_storage()._cdata for m in modules for t in (*m.parameters(), *m.buffers())}

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._weights or key in self._sizes:
            return
        self._sizes[key] = storage.nbytes()
        self.live += self._sizes[key]
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, self._track, out)
        return out


# ----------------------------------------------------------------------------- 2. real-width blocks


def _random_prompt(generator):
    from artifactworld_ns.restorer.prompts import MAX_PROMPT_TOKENS, PromptEmbedding

    embeds = torch.randn(1, MAX_PROMPT_TOKENS, 4096, generator=generator)
    mask = torch.zeros(1, MAX_PROMPT_TOKENS, dtype=torch.long)
    mask[:, :4] = 1
    return PromptEmbedding(embeds, mask)


def block_worker(stage: int, depth: int) -> dict:
    """One denoising step of ``stage`` on ``depth`` real-width bf16 blocks with both adapters (fresh process)."""
    from safetensors.torch import save_file

    from artifactworld_ns.restorer.aatf import STAGE2_ADAPTER, official_blend_table, sample_restored_latent
    from artifactworld_ns.restorer.configs import OFFICIAL_LORA_RANK
    from artifactworld_ns.restorer.heatmap import STAGE1_ADAPTER, sample_heatmap_latent
    from artifactworld_ns.restorer.lora import load_lora_adapter, set_active_adapter
    from artifactworld_ns.restorer.sampler import initial_noise, latent_video_coords, linear_quadratic_sigmas
    from artifactworld_ns.restorer.tiny import build_tiny_transformer, full_width_spec, random_lora_state_dict

    torch.manual_seed(0)
    spec = full_width_spec(num_layers=depth)
    transformer = build_tiny_transformer(spec.transformer_config).to(torch.bfloat16)
    states = {
        a: random_lora_state_dict(transformer, seed=i, rank=OFFICIAL_LORA_RANK)
        for i, a in enumerate((STAGE1_ADAPTER, STAGE2_ADAPTER))
    }
    with tempfile.TemporaryDirectory() as folder:
        for adapter, state in states.items():
            path = Path(folder) / f"{adapter}.safetensors"
            save_file({k: v.to(torch.bfloat16) for k, v in state.items()}, str(path))
            load_lora_adapter(transformer, path, adapter)
    set_active_adapter(transformer, STAGE1_ADAPTER if stage == 1 else STAGE2_ADAPTER)

    generator = torch.Generator().manual_seed(42)
    frames, height, width = OFFICIAL_CLIP
    latent = (1, 128, (frames - 1) // 8 + 1, height // 32, width // 32)
    noise = initial_noise(latent, generator, torch.device("cpu"))
    z_ref = torch.randn(latent, generator=generator)
    coords = latent_video_coords(*latent[2:])
    sigmas = linear_quadratic_sigmas(STEPS_PER_STAGE)[:2]  # the first of the 8 steps
    prompt = _random_prompt(generator)
    if stage == 1:

        def run():
            return sample_heatmap_latent(transformer, prompt, z_ref, noise, sigmas, coords, generator)
    else:
        z_hm, z_full, z_null = (torch.randn(latent, generator=generator) for _ in range(3))

        def run():
            return sample_restored_latent(
                transformer,
                prompt,
                z_ref,
                z_hm,
                z_full,
                z_null,
                official_blend_table(1),
                noise,
                sigmas,
                coords,
                generator,
            )

    tracker = LiveTensorBytes(transformer)
    with _flop_counter() as flops, tracker, ProcessPeak() as process:
        start = time.perf_counter()
        out = run()
        seconds = time.perf_counter() - start
    assert torch.isfinite(out).all(), "the real-width step produced non-finite values"
    return {
        "stage": stage,
        "depth": depth,
        "tokens": (2 if stage == 1 else 3) * math.prod(latent[2:]),
        "seconds": seconds,
        "process_peak_bytes": process.peak,
        "tensor_peak_bytes": tracker.peak,
        "flops": flops.get_total_flops(),
    }


# ----------------------------------------------------------------------------- 3. VAE


def vae_worker(device: str, frames: int, tiled: bool) -> dict:
    """Encode then decode a ``frames`` x 544 x 960 clip with the real VAE architecture (random bf16 weights)."""
    from diffusers import AutoencoderKLLTXVideo

    from artifactworld_ns.restorer.configs import LTXV_VAE_CONFIG
    from artifactworld_ns.restorer.latents import decode_latents, encode_video

    torch.manual_seed(0)
    with torch.device(device):
        vae = AutoencoderKLLTXVideo(**LTXV_VAE_CONFIG)
    vae = vae.to(torch.bfloat16).eval().requires_grad_(False)
    if tiled:
        vae.enable_tiling()
    _, height, width = OFFICIAL_CLIP
    video = torch.rand(frames, height, width, 3, device=device)
    result = {"device": device, "frames": frames, "tiled": tiled}
    latents = None
    for phase in ("encode", "decode"):
        tracker = LiveTensorBytes(vae)
        with _flop_counter() as flops, tracker, ProcessPeak() as process, torch.no_grad():
            start = time.perf_counter()
            if phase == "encode":
                latents = encode_video(vae, video, torch.Generator().manual_seed(42))
            else:
                decode_latents(vae, latents)
            seconds = time.perf_counter() - start
        result[phase] = {"flops": flops.get_total_flops(), "tensor_peak_bytes": tracker.peak}
        if device != "meta":
            result[phase].update(seconds=seconds, process_peak_bytes=process.peak)
    return result


WORKERS = {"block": block_worker, "vae": vae_worker}


def run_in_fresh_process(worker: str, **kwargs) -> dict:
    """One worker's figures, measured in a fresh Python process (so its memory peaks are its own)."""
    import subprocess

    command = [sys.executable, __file__, worker, json.dumps(kwargs)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{worker} {kwargs} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def quiet_libraries() -> None:
    """Random-weight builds make diffusers and peft warn about casting and stacked adapters: expected here."""
    import warnings

    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message="Already found a `peft_config`")


if __name__ == "__main__":
    quiet_libraries()
    print(json.dumps(WORKERS[sys.argv[1]](**json.loads(sys.argv[2]))))
