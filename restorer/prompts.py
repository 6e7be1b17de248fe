"""Fixed per-stage prompts and their on-disk T5 embedding cache.

Each stage uses the official prompt of the release's configs (``configs/stage1_infer.yaml``:
``predict artifact map``; ``configs/stage2_infer.yaml``: ``remove artifact``), tokenized to 256
tokens with padding and its attention mask, as the official pipeline does (``max_sequence_length``
256). There is no guidance, so the negative prompt is never encoded. Each embedding is cached
under ``<cache>/prompt_embeddings/`` keyed by (text encoder identity, prompt, token length): the
tokenizer and text encoder are loaded only when an embedding is missing, used for every missing
prompt at once, and freed right after. Embeddings cached for other prompts or lengths have other
keys and are never reused.
"""

from __future__ import annotations

import gc
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from .atomic import atomic_path

STAGE1_PROMPT = "predict artifact map"
STAGE2_PROMPT = "remove artifact"
STAGE_PROMPTS = {"stage1": STAGE1_PROMPT, "stage2": STAGE2_PROMPT}
MAX_PROMPT_TOKENS = 256


@dataclass
class PromptEmbedding:
    """T5 hidden states and their attention mask for one prompt."""

    embeds: Float[Tensor, "1 tokens dim"]
    mask: Tensor  # [1, tokens], 1 for real tokens

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "PromptEmbedding":
        return PromptEmbedding(self.embeds.to(device=device, dtype=dtype or self.embeds.dtype), self.mask.to(device))


def cache_key(encoder_identity: str, prompt: str, max_tokens: int) -> str:
    digest = hashlib.sha256(f"{encoder_identity}\0{prompt}\0{max_tokens}".encode()).hexdigest()
    return digest[:32]


def cached_prompt_embeddings(
    prompts: dict[str, str],
    encoder_identity: str,
    load_encoder: Callable[[], tuple[object, torch.nn.Module]],
    cache_root: Path,
    max_tokens: int = MAX_PROMPT_TOKENS,
) -> dict[str, PromptEmbedding]:
    """Return ``{name: PromptEmbedding}``, encoding (and caching) only the prompts not yet on disk.

    ``load_encoder`` returns ``(tokenizer, text_encoder)``; it is called at most once, and
    the encoder is dropped as soon as the missing prompts are encoded.
    """
    folder = cache_root / "prompt_embeddings"
    files = {name: folder / f"{cache_key(encoder_identity, text, max_tokens)}.pt" for name, text in prompts.items()}
    result: dict[str, PromptEmbedding] = {}
    for name, path in files.items():
        if path.exists():
            data = torch.load(path, map_location="cpu", weights_only=True)
            result[name] = PromptEmbedding(data["embeds"], data["mask"])
    missing = [name for name in prompts if name not in result]
    if missing:
        tokenizer, text_encoder = load_encoder()
        device = next(text_encoder.parameters()).device
        folder.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            for name in missing:
                tokens = tokenizer(
                    prompts[name], padding="max_length", max_length=max_tokens, truncation=True, return_tensors="pt"
                )
                mask = tokens["attention_mask"].to(device)
                embeds = text_encoder(tokens["input_ids"].to(device), attention_mask=mask)[0]
                result[name] = PromptEmbedding(embeds.float().cpu(), mask.cpu())
                with atomic_path(files[name]) as tmp:
                    torch.save({"embeds": result[name].embeds, "mask": result[name].mask, "prompt": prompts[name]}, tmp)
        del tokenizer, text_encoder
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return result
