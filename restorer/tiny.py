"""Random-weight stand-ins for the released model, in the release's layout (UNTRAINED).

:func:`save_tiny_release` writes three roots exactly like the real release so the
real loading code is exercised end to end; :func:`save_random_release` does the same for any
:class:`RandomReleaseSpec`, e.g. the real 13B width at reduced depth (:func:`full_width_spec`),
which the tests and ``benchmarks/full_scale.py`` run on a CPU::

    <root>/weights/stage1_pred_headmap_lora.safetensors    (diffusers keys: transformer.*.lora_A/B)
    <root>/weights/stage2_noisemap_blend_lora.safetensors  (ComfyUI keys: diffusion_model.*.lora_A/B)
    <root>/weights/auxiliary_latents/z_full.pt             (official dict: packed 'latents' + sizes)
    <root>/weights/auxiliary_latents/z_null.pt             (official tensor [C, F, h, w])
    <root>/LTX-Video/{tokenizer,text_encoder,vae}/
    <root>/LTX-Video/ltxv-13b-0.9.8-distilled.safetensors  (single file, original LTX key names)
    <root>/LTX-Video-0.9.7-dev/transformer/                 (the transformer_source="0.9.7-dev" option)
    <root>/LTX-Video-0.9.7-dev/scheduler/                   (read by the official scripts' loader only: the parity fixture)

Models: an LTX-architecture transformer (2 layers, 2 heads x 8 dims), an LTX VAE
that keeps 8x temporal / 32x spatial compression with 8 channels everywhere, a
1-layer T5 encoder (d_model 16) and a word-level tokenizer built from the
stage prompts. The LoRAs target the official modules (to_q, to_k, to_v, to_out.0,
ff.net.0.proj, ff.net.2) at rank = alpha = 4. All random with a fixed seed; built
offline in about a second.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .atomic import atomic_folder
from .configs import (
    LTXV_13B_CONFIG,
    LTXV_VAE_CONFIG,
    OFFICIAL_LORA_RANK,
    OFFICIAL_LORA_TARGETS,
    TINY_AUX_REFERENCE,
    TINY_LORA_RANK,
    TINY_TEXT_DIM,
    TINY_TRANSFORMER_CONFIG,
    TINY_VAE_CONFIG,
)
from .flywheel.combinatorics import TOKENIZER_TEXT
from .latents import auxiliary_latents
from .loading import quiet_hub_progress
from .prompts import STAGE_PROMPTS
from .roots import AUXILIARY_LATENTS_DIR, TRANSFORMER_SINGLE_FILE, Z_FULL_FILE, Z_NULL_FILE, ReleaseRoots, cache_dir
from .sampler import pack_latents
from .untrained import UNTRAINED_LABEL

TINY_RELEASE_VERSION = "tiny-release-v2"
TINY_RELEASE_SEED = 0
SINGLE_FILE_KEY_NAMES = {
    "proj_in": "patchify_proj",
    "time_embed": "adaln_single",
    "norm_q": "q_norm",
    "norm_k": "k_norm",
}
"""diffusers -> original LTX key names (the inverse of diffusers' LTX single-file conversion)."""


def tiny_roots(root: Path) -> ReleaseRoots:
    return ReleaseRoots(weights=root / "weights", ltx_main=root / "LTX-Video", ltx_097_dev=root / "LTX-Video-0.9.7-dev")


def build_tiny_tokenizer():
    """A word-level T5-style tokenizer (pad 0, eos 1, unk 2) over the stage prompts' words, then the world model's
    (appended, so the stage prompts keep their ids)."""
    import re

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for prompt in (*STAGE_PROMPTS.values(), *TOKENIZER_TEXT):
        for word in re.findall(r"\w+|[^\w\s]", prompt.lower()):
            vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=256
    )


def build_tiny_text_encoder(vocab_size: int, d_model: int = TINY_TEXT_DIM):
    """A 1-layer T5 encoder; ``d_model`` is the caption width the transformer expects (4096 for the 13B)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=max(64, vocab_size),
        d_model=d_model,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config).eval()


def build_tiny_vae(config: dict | None = None):
    from diffusers import AutoencoderKLLTXVideo

    return AutoencoderKLLTXVideo(**(config or TINY_VAE_CONFIG)).eval()


def build_tiny_transformer(config: dict | None = None):
    from diffusers import LTXVideoTransformer3DModel

    return LTXVideoTransformer3DModel(**(config or TINY_TRANSFORMER_CONFIG)).eval()


@dataclass(frozen=True)
class RandomReleaseSpec:
    """What a random-weight release is made of (all UNTRAINED)."""

    transformer_config: dict = field(default_factory=lambda: dict(TINY_TRANSFORMER_CONFIG))
    vae_config: dict = field(default_factory=lambda: dict(TINY_VAE_CONFIG))
    lora_rank: int = TINY_LORA_RANK
    aux_reference: tuple[int, int, int] = TINY_AUX_REFERENCE
    """Reference size (frames, height, width) the auxiliary latents are made for."""
    dtype: torch.dtype = torch.float32
    """Storage dtype of the transformer and VAE files."""


def full_width_spec(num_layers: int = 1, aux_reference: tuple[int, int, int] = (17, 64, 96)) -> RandomReleaseSpec:
    """The released model's real architecture -- the 13B transformer's width (only ``num_layers`` of its 48
    blocks), the LTX 0.9.7/0.9.8 VAE, rank-128 LoRAs on the official targets -- with random bf16 weights."""
    return RandomReleaseSpec(
        transformer_config={**LTXV_13B_CONFIG, "num_layers": num_layers},
        vae_config=dict(LTXV_VAE_CONFIG),
        lora_rank=OFFICIAL_LORA_RANK,
        aux_reference=aux_reference,
        dtype=torch.bfloat16,
    )


def original_format_state_dict(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The transformer's weights under the original LTX checkpoint names (``model.diffusion_model.*``),
    as in ``ltxv-13b-0.9.8-distilled.safetensors``, so diffusers' ``from_single_file`` path is exercised."""
    state = {}
    for key, tensor in transformer.state_dict().items():
        for new, old in SINGLE_FILE_KEY_NAMES.items():
            key = key.replace(new, old)
        state[f"model.diffusion_model.{key}"] = tensor.contiguous()
    return state


def build_tiny_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)


def random_lora_state_dict(
    transformer: torch.nn.Module,
    key_format: str = "diffusers",
    seed: int = 0,
    rank: int = TINY_LORA_RANK,
    targets: tuple[str, ...] = OFFICIAL_LORA_TARGETS,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Random LoRA weights (both A and B non-zero, so the adapter changes outputs) for every block's targets.

    ``key_format``: ``"diffusers"`` (``transformer.`` prefix) or ``"comfyui"`` (``diffusion_model.`` prefix).
    Entries are 0.3 x N(0, 1) at the tiny width; wider layers (rank or fan-in above 64) are scaled by
    ``1 / sqrt(fan-in)`` so that the update stays the size of the layer's output. ``device``: where they are
    drawn (its own generator; a GPU draws the 13B's 1.3 B adapter weights in a moment, a CPU takes a minute).
    """
    prefix = {"diffusers": "transformer.", "comfyui": "diffusion_model."}[key_format]
    generator = torch.Generator(device).manual_seed(seed)
    state = {}
    for name, module in transformer.named_modules():
        if (
            isinstance(module, torch.nn.Linear)
            and name.startswith("transformer_blocks.")
            and any(name == t or name.endswith(f".{t}") for t in targets)
        ):
            a_scale = 0.3 if module.in_features <= 64 else module.in_features**-0.5
            b_scale = 0.3 if rank <= 64 else 0.3 * rank**-0.5
            state[f"{prefix}{name}.lora_A.weight"] = (
                torch.randn(rank, module.in_features, generator=generator, device=device) * a_scale
            )
            state[f"{prefix}{name}.lora_B.weight"] = (
                torch.randn(module.out_features, rank, generator=generator, device=device) * b_scale
            )
    return state


def save_tiny_release(root: str | os.PathLike, seed: int = TINY_RELEASE_SEED) -> ReleaseRoots:
    """Write the tiny untrained release (three roots, the release's folder layout) under ``root``."""
    return save_random_release(root, RandomReleaseSpec(), seed)


def save_random_release(
    root: str | os.PathLike, spec: RandomReleaseSpec, seed: int = TINY_RELEASE_SEED
) -> ReleaseRoots:
    """Write an untrained release of ``spec`` (three roots, the release's folder layout) under ``root``.

    Seeds its own draws and leaves torch's global random state as it was.
    """
    with quiet_hub_progress(), torch.random.fork_rng(devices=[]), torch.no_grad():
        return _save_random_release(Path(root), spec, seed)


def _save_random_release(root: Path, spec: RandomReleaseSpec, seed: int) -> ReleaseRoots:
    from safetensors.torch import save_file

    roots = tiny_roots(root)
    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    tokenizer.save_pretrained(roots.ltx_main / "tokenizer")
    text_dim = spec.transformer_config.get("caption_channels", TINY_TEXT_DIM)
    build_tiny_text_encoder(len(tokenizer), text_dim).save_pretrained(roots.ltx_main / "text_encoder")
    vae = build_tiny_vae(spec.vae_config).to(spec.dtype)
    vae.save_pretrained(roots.ltx_main / "vae")
    transformer = build_tiny_transformer(spec.transformer_config).to(spec.dtype)
    transformer.save_pretrained(roots.ltx_097_dev / "transformer")
    save_file(original_format_state_dict(transformer), str(roots.ltx_main / TRANSFORMER_SINGLE_FILE))
    build_tiny_scheduler().save_pretrained(roots.ltx_097_dev / "scheduler")

    roots.weights.mkdir(parents=True, exist_ok=True)
    for path, key_format, offset in ((roots.stage1_lora, "diffusers", 1), (roots.stage2_lora, "comfyui", 2)):
        lora = random_lora_state_dict(transformer, key_format, seed=seed + offset, rank=spec.lora_rank)
        save_file({k: v.to(spec.dtype) for k, v in lora.items()}, str(path))
    save_auxiliary_latents(roots, vae, spec.aux_reference)
    return roots


def save_auxiliary_latents(roots: ReleaseRoots, vae: torch.nn.Module, reference: tuple[int, int, int]) -> None:
    """``z_full`` / ``z_null`` for a ``(frames, height, width)`` reference, computed with ``vae`` and saved in two of
    the official formats: ``z_full.pt`` a dict with packed ``latents`` and their sizes, ``z_null.pt`` a
    ``[C, F, h, w]`` tensor (both float32 on the CPU)."""
    if next(vae.parameters()).device.type == "cpu":
        vae = vae.float()  # no fast half-precision conv3d on most CPUs (see loading.vae_dtype); saved as float32 anyway
    z_full, z_null = (z.float().cpu() for z in auxiliary_latents(vae, *reference))
    (roots.weights / AUXILIARY_LATENTS_DIR).mkdir(parents=True, exist_ok=True)
    _, _, frames, height, width = z_full.shape
    torch.save(
        {"latents": pack_latents(z_full)[0], "num_frames": frames, "height": height, "width": width},
        roots.auxiliary_latent(Z_FULL_FILE),
    )
    torch.save(z_null[0], roots.auxiliary_latent(Z_NULL_FILE))


def ensure_tiny_release(base: Path | None = None, seed: int = TINY_RELEASE_SEED) -> ReleaseRoots:
    """Build the tiny release under ``<cache>/<TINY_RELEASE_VERSION>-seed<seed>`` on first use; return its roots."""
    base = base or cache_dir()
    root = base / f"{TINY_RELEASE_VERSION}-seed{seed}"
    marker = root / "COMPLETE"
    if not marker.exists():
        with atomic_folder(root) as staging:
            save_tiny_release(staging, seed=seed)
            (staging / "COMPLETE").write_text(f"{TINY_RELEASE_VERSION} {UNTRAINED_LABEL}\n")
    return tiny_roots(root)


FINGERPRINT_RTOL = 1e-5
"""How far a release's tensors may drift from a recorded fingerprint: far above float32 convolution noise
(CPU kernels and thread counts change the auxiliary latents' last bits), far below any change of weights or seed."""


def _weight_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor in one weight file (safetensors, or a ``.pt`` holding a tensor or a dict of tensors and sizes)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, torch.Tensor):
        return {"": data}
    return {key: value for key, value in data.items() if isinstance(value, torch.Tensor)}


def tensor_fingerprint(tensor: torch.Tensor) -> list[float]:
    """``[sum, sum of squares, projection on a fixed random +-1 vector]`` of a tensor, in float64."""
    flat = tensor.detach().reshape(-1).to(torch.float64)
    signs = torch.randint(0, 2, flat.shape, generator=torch.Generator().manual_seed(0), dtype=torch.int8) * 2 - 1
    return [flat.sum().item(), flat.square().sum().item(), (flat * signs).sum().item()]


def release_fingerprints(root: str | os.PathLike) -> dict[str, dict]:
    """What identifies a release under ``root`` numerically: per weight file and tensor, its shape and fingerprint.

    Used instead of file hashes, whose bytes change with the CPU model and thread count (the auxiliary latents come
    out of the VAE's convolutions); :func:`fingerprint_mismatches` compares two of these with a tolerance.
    """
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".pt"))
    return {
        str(path.relative_to(root)): {
            name: {"shape": list(tensor.shape), "dtype": str(tensor.dtype), "fingerprint": tensor_fingerprint(tensor)}
            for name, tensor in sorted(_weight_tensors(path).items())
        }
        for path in files
    }


def fingerprint_mismatches(
    actual: dict[str, dict], expected: dict[str, dict], rtol: float = FINGERPRINT_RTOL
) -> list[str]:
    """The tensors of ``actual`` that differ from ``expected`` (missing, reshaped, or past ``rtol``), one line each.

    Each fingerprint entry is compared with a tolerance of ``rtol`` times the tensor's scale
    (``sqrt(numel * sum of squares)``, which bounds the sum and the projection).
    """
    problems = []
    for file in sorted(set(actual) | set(expected)):
        got, want = actual.get(file, {}), expected.get(file, {})
        for name in sorted(set(got) | set(want)):
            where = f"{file}:{name}" if name else file
            if name not in got or name not in want:
                problems.append(f"{where}: only in the {'fixture' if name in want else 'release'}")
                continue
            if (got[name]["shape"], got[name]["dtype"]) != (want[name]["shape"], want[name]["dtype"]):
                problems.append(
                    f"{where}: {got[name]['shape']} {got[name]['dtype']} != {want[name]['shape']} {want[name]['dtype']}"
                )
                continue
            numel = max(1, int(torch.tensor(want[name]["shape"]).prod().item()))
            scale = (numel * abs(want[name]["fingerprint"][1])) ** 0.5 + 1e-30
            error = max(abs(a - b) for a, b in zip(got[name]["fingerprint"], want[name]["fingerprint"]))
            if error > rtol * scale:
                problems.append(f"{where}: fingerprint off by {error / scale:.2e} of its scale (tolerance {rtol:.0e})")
    return problems
