"""Combinatorial prompting of the Artifact World Model (paper Sec. 3.3): 1 to 9 artifact types, shuffled.

The paper guides the world model with prompts built by "randomly sampling 1 to 9 artifact categories and
shuffling them". A prompt here is :data:`PROMPT_PREFIX` followed by the types in the drawn order, e.g.
``"add artifacts: Needles, Floaters"`` (the wording is ours: the paper gives none). Every draw comes from a
``torch.Generator`` seeded from a run seed and a key (a video's or pair's name, :func:`keyed_generator`), so a
plan is the same in every shard and every rerun.
"""

from __future__ import annotations

import zlib
from typing import Sequence

import torch

from ..labels import ARTIFACT_TYPES, parse_artifact_types

PROMPT_PREFIX = "add artifacts: "
"""What every world-model prompt starts with (ours)."""
MAX_TYPES = len(ARTIFACT_TYPES)


def keyed_generator(seed: int, key: str) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and ``key`` (stable across processes and runs)."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(key.encode())) % 2**63)


def shuffled(types: Sequence[str], generator: torch.Generator) -> list[str]:
    """``types`` (canonical names) in an order drawn from ``generator``."""
    order = torch.randperm(len(types), generator=generator).tolist()
    return [types[i] for i in order]


def draw_combination(generator: torch.Generator) -> list[str]:
    """A count ``k`` uniform in 1..9, then ``k`` distinct types, in shuffled order."""
    count = int(torch.randint(1, MAX_TYPES + 1, (1,), generator=generator))
    return shuffled(list(ARTIFACT_TYPES), generator)[:count]


def plan_combinations(seed: int, key: str, count: int) -> list[list[str]]:
    """``count`` random combinations (each 1 to 9 types, shuffled) for one video, reproducible by ``seed``."""
    generator = keyed_generator(seed, key)
    return [draw_combination(generator) for _ in range(count)]


def fixed_combination(names: str | Sequence[str], seed: int, key: str) -> list[str]:
    """``--artifacts "Floaters,Needles"``: the named types (any spelling :func:`parse_artifact_types` takes) in a
    shuffled order drawn from ``seed`` and ``key``."""
    return shuffled(parse_artifact_types(names), keyed_generator(seed, key))


def world_model_prompt(types: Sequence[str]) -> str:
    """The prompt of an ordered list of types: ``"add artifacts: Needles, Floaters"``."""
    if not types:
        raise ValueError("A world-model prompt names at least one artifact type.")
    return PROMPT_PREFIX + ", ".join(types)


def prompt_types(prompt: str) -> list[str]:
    """The types of a prompt, in its order (the inverse of :func:`world_model_prompt`)."""
    body = prompt[len(PROMPT_PREFIX) :] if prompt.startswith(PROMPT_PREFIX) else prompt
    return [parse_artifact_types(part)[0] for part in body.split(",") if part.strip()]


TOKENIZER_TEXT = (PROMPT_PREFIX + ", ".join(ARTIFACT_TYPES),)
"""Every word a world-model prompt uses (the tiny preset's word-level tokenizer learns them)."""
