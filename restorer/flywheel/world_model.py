"""The Artifact World Model (paper Sec. 3.3): a third LoRA that turns a clean clip into a degraded one.

**Training** (``aw-train-lora --stage world-model --data PAIRS``, :mod:`artifactworld_ns.restorer.training`). The sequence is
``[z_clean, z_artifact_s]`` with per-token timesteps ``[0, s]``: the clean clip, in the ``T + 8`` layout of the
clean target (the clip, then its last frame 8 more times; for a clean clip that is exactly how stage 1 lays out
its DBA reference ``[A] + middle + [B] x 9``), is the conditioning; the degraded clip in the same layout
(``z_artifact``, stored by ``aw-make-pairs``) is the target. The prompt lists the pair's artifact types (from
the ``labels.jsonl`` of ``aw-simulate`` / ``aw-degrade``, carried into the pairs' ``meta.json``) in a shuffled
order (:mod:`.combinatorics`): each pair gets ``--prompt-orders`` orders drawn once from the seed and its type
set (T5-encoded once, through the prompt cache), and each step draws one of them. Pairs without labels are
refused. Every other item of the official recipe of stages 1 and 2 carries over (masked flow matching, the
shifted logit-normal timesteps, 20 % first-frame conditioning, AdamW 2e-4 with linear decay, rank = alpha = 128
on the same modules, bf16, batch 1); the paper gives no step count, so the default is stage 2's 12,010.

**Base.** LTX-Video 2B 0.9.8-distilled (the paper's choice), the single file
``ltxv-2b-0.9.8-distilled.safetensors`` of the LTX-Video root with the 2B configuration
(:data:`artifactworld_ns.restorer.configs.LTXV_2B_CONFIG`), loaded by diffusers' ``from_single_file``; ``--world-model-base 13b``
selects the restorer's 13B base instead. VAE and text encoder are the LTX-Video root's, as for the restorer.

**Sampling** (``aw-degrade``, :func:`degrade_clip`): as stage 1 samples its heatmap -- 8 Euler steps on LTX's
linear-quadratic sigmas from seeded noise, the clean clip's latent as context with the official context noise,
no guidance -- then the decode is trimmed back to ``T`` frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import RestorerInputError
from ..labels import ARTIFACT_TYPES
from ..prompts import PromptEmbedding
from .combinatorics import keyed_generator, shuffled, world_model_prompt

WORLD_MODEL_STAGE = "world-model"
WORLD_MODEL_ADAPTER = "world_model"
WORLD_MODEL_LORA_FILE = "world_model_lora.safetensors"
WORLD_MODEL_BASES = {"2b": "ltxv-2b", "13b": "ltxv-13b"}
"""``--world-model-base`` -> the transformer configuration (and single file, :func:`artifactworld_ns.restorer.loading.single_file_name`)."""
WORLD_MODEL_STEPS = 12010
"""Default optimizer steps: the paper gives none for the world model; stage 2's official count."""
DEFAULT_PROMPT_ORDERS = 8
"""Shuffled orders per type set that training draws from (ours)."""
WORLD_MODEL_RECIPE = "world-model"
"""The ``recipe`` of the label records ``aw-degrade`` writes."""


# ---------------------------------------------------------------------------------------------- training data


def check_world_model_pairs(dataset) -> None:
    """One sentence unless every pair has artifact types and the degraded clip's latent (before any model loads)."""
    from ..pairs import WORLD_MODEL_KEY, load_latents

    missing = [path.stem for index, path in enumerate(dataset.files) if not (dataset.label(index) or {}).get("types")]
    if missing:
        raise RestorerInputError(
            f"{len(missing)} of the {len(dataset)} pairs in {dataset.root} have no artifact labels (e.g. {missing[0]}), "
            "and the world model's prompt names each clip's types; build the pairs from aw-simulate or aw-degrade "
            "output (labels.jsonl beside gt/) or leave the unlabelled clips out."
        )
    if WORLD_MODEL_KEY not in load_latents(dataset.files[0]):
        raise RestorerInputError(
            f"The pairs in {dataset.root} hold no latent of the degraded clip ({WORLD_MODEL_KEY}), which the world "
            "model learns to generate; rebuild them with aw-make-pairs --overwrite."
        )


def prompt_orders(types: list[str], seed: int, orders: int) -> list[str]:
    """Up to ``orders`` distinct shuffled prompts of one type set (all ``k!`` when fewer), drawn from ``seed`` and
    the set, so pairs with the same types share their prompts."""
    types = [t for t in ARTIFACT_TYPES if t in types]  # the set, in a fixed order before shuffling
    generator = keyed_generator(seed, ",".join(types))
    wanted = min(orders, math.factorial(len(types)))
    found: list[str] = []
    while len(found) < wanted:
        prompt = world_model_prompt(shuffled(types, generator))
        if prompt not in found:
            found.append(prompt)
    return found


@dataclass
class WorldModelPrompts:
    """Each pair's shuffled prompts and their T5 embeddings; :meth:`draw` picks one per training step."""

    orders: list[list[str]]
    embeddings: dict[str, PromptEmbedding]

    def draw(self, index: int, generator: torch.Generator) -> PromptEmbedding:
        choices = self.orders[index]
        return self.embeddings[choices[int(torch.randint(len(choices), (1,), generator=generator))]]

    @property
    def prompts(self) -> list[str]:
        return sorted(self.embeddings)


def world_model_prompts(dataset, models, device, seed: int, orders: int = DEFAULT_PROMPT_ORDERS) -> WorldModelPrompts:
    """The pairs' prompts (:func:`prompt_orders`) T5-encoded through the on-disk cache (the encoder loads at most once)."""
    per_pair = [prompt_orders(dataset.label(i)["types"], seed, orders) for i in range(len(dataset))]
    return WorldModelPrompts(per_pair, encode_prompts(models, sorted({p for ps in per_pair for p in ps}), device))


def encode_prompts(models, prompts: list[str], device) -> dict[str, PromptEmbedding]:
    """``{prompt: embedding}`` through the restorer's prompt cache (:func:`artifactworld_ns.restorer.prompts.cached_prompt_embeddings`)."""
    from ..loading import load_text_encoder, text_encoder_identity
    from ..prompts import cached_prompt_embeddings
    from ..roots import cache_dir

    return cached_prompt_embeddings(
        {p: p for p in prompts},
        text_encoder_identity(models.roots),
        lambda: load_text_encoder(models.roots, device, torch.float32),
        cache_dir(),
        max_tokens=models.max_prompt_tokens,
    )


# ---------------------------------------------------------------------------------------------- sampling


@dataclass
class WorldModel:
    """The frozen base with the world-model adapter active, its VAE, and where they compute."""

    transformer: torch.nn.Module
    vae: torch.nn.Module
    models: object
    device: torch.device
    steps: int = 8
    frame_rate: float = 25.0

    def degrade(self, clean: Tensor, prompt: PromptEmbedding, seed: int, progress=None) -> Tensor:
        """:func:`degrade_clip` with this model."""
        return degrade_clip(self, clean, prompt, seed, progress)


def fetch_world_model_roots(config_name: str) -> None:
    """Download only what the world model needs from the LTX-Video repository: tokenizer, text encoder, VAE and the
    base's single file (``allow_patterns``; ``HF_HOME`` / ``HF_HUB_OFFLINE`` honoured by huggingface_hub)."""
    from huggingface_hub import constants, snapshot_download

    from ..loading import single_file_name
    from ..roots import LTX_MAIN_REPO, allow_patterns, resolve_roots

    root = resolve_roots().ltx_main
    if constants.HF_HUB_OFFLINE:
        raise RestorerInputError(
            f"The LTX-Video root {root} lacks files and HF_HUB_OFFLINE is set, so nothing is fetched."
        )
    root.mkdir(parents=True, exist_ok=True)
    snapshot_download(
        LTX_MAIN_REPO, local_dir=root, allow_patterns=allow_patterns("ltx_main", single_file_name(config_name))
    )


def load_world_model(models, adapter: Path, device: torch.device, dtype: torch.dtype, steps: int = 8) -> WorldModel:
    """The preset's base transformer (``models.transformer_config``) with ``adapter`` loaded and active, and the VAE."""
    from ..lora import load_lora_adapter, set_active_adapter
    from ..presets import load_training_transformer, load_vae

    transformer = load_training_transformer(models, device, dtype)
    load_lora_adapter(transformer, adapter, WORLD_MODEL_ADAPTER)
    set_active_adapter(transformer, WORLD_MODEL_ADAPTER)
    vae = load_vae(models, device)
    return WorldModel(transformer, vae, models, torch.device(device), steps, models.frame_rate)


@torch.no_grad()
def degrade_clip(
    model: WorldModel,
    clean: Float[Tensor, "frames height width 3"],
    prompt: PromptEmbedding,
    seed: int,
    progress=None,
    latent_only: bool = False,
) -> Float[Tensor, "frames height width 3"]:
    """Generate the degraded version of a model-size clean clip of ``T = 8n + 1`` frames (see module doc).

    Draws in the official stage order from one generator seeded with ``seed``: the target noise, the clean
    latent's posterior sample, then each step's context noise. ``latent_only``: return the sampled latent
    ``[1, C, F, h, w]`` (``T + 8`` frames' worth) instead of the decoded frames.
    """
    from ..heatmap import STAGE1_ROLES
    from ..latents import decode_latents, encode_video
    from ..pairs import build_target_video
    from ..sampler import (
        euler_sample,
        initial_noise,
        latent_video_coords,
        linear_quadratic_sigmas,
        pack_latents,
        unpack_latents,
    )

    frames = clean.shape[0]
    context = build_target_video(clean.float())
    device = model.device
    generator = torch.Generator(device).manual_seed(int(seed))
    channels = int(model.transformer.config.in_channels)
    f, h, w = (context.shape[0] - 1) // 8 + 1, context.shape[1] // 32, context.shape[2] // 32
    noise = initial_noise((1, channels, f, h, w), generator, device)
    z_clean = encode_video(model.vae, context, generator)
    clean_tokens = pack_latents(z_clean.float())
    tokens = euler_sample(
        model.transformer,
        prompt,
        roles=STAGE1_ROLES,
        context=lambda step, sigma: {"reference": clean_tokens},
        noise=noise,
        sigmas=linear_quadratic_sigmas(model.steps),
        segment_coords=latent_video_coords(f, h, w, frame_rate=model.frame_rate),
        generator=generator,
        stage="world model",
        progress=progress,
    )
    latent = unpack_latents(tokens.cpu(), f, h, w)
    if latent_only:
        return latent
    video = decode_latents(model.vae, latent)
    return video[:frames].cpu()
