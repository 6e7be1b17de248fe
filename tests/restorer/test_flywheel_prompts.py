"""Combinatorial prompting of the Artifact World Model (paper Sec. 3.3): 1 to 9 types, shuffled, reproducible."""

from __future__ import annotations

from collections import Counter

import pytest

from artifactworld_ns.restorer.flywheel.combinatorics import (
    PROMPT_PREFIX,
    fixed_combination,
    plan_combinations,
    prompt_types,
    world_model_prompt,
)
from artifactworld_ns.restorer.flywheel.world_model import prompt_orders
from artifactworld_ns.restorer.labels import ARTIFACT_TYPES, LabelError


def test_combinations_cover_every_count_from_1_to_9_with_distinct_types():
    combos = [c for key in range(40) for c in plan_combinations(0, f"video{key}", 10)]
    counts = Counter(len(c) for c in combos)
    assert set(counts) == set(range(1, 10))  # every count 1..9 occurs in 400 draws
    assert max(counts.values()) < 3 * min(counts.values())  # roughly uniform over the counts
    for combo in combos:
        assert len(set(combo)) == len(combo) and set(combo) <= set(ARTIFACT_TYPES)


def test_order_is_shuffled_not_canonical():
    combos = [c for key in range(20) for c in plan_combinations(1, f"v{key}", 5) if len(c) >= 3]
    canonical = [c for c in combos if c == [t for t in ARTIFACT_TYPES if t in c]]
    assert len(canonical) < len(combos) / 3
    firsts = Counter(c[0] for c in combos)
    assert len(firsts) >= 6  # which type comes first varies


def test_reproducible_by_seed_and_key_and_different_otherwise():
    assert plan_combinations(7, "garden", 6) == plan_combinations(7, "garden", 6)
    assert plan_combinations(7, "garden", 6) != plan_combinations(8, "garden", 6)
    assert plan_combinations(7, "garden", 6) != plan_combinations(7, "kitchen", 6)
    assert plan_combinations(7, "garden", 3) == plan_combinations(7, "garden", 6)[:3]  # a longer plan extends it


def test_fixed_combination_keeps_the_set_and_shuffles_its_order():
    orders = {tuple(fixed_combination("floater, Crack ,color-outliers, Needles", 0, f"k{i}")) for i in range(30)}
    assert all(set(o) == {"Floaters", "Cracks", "Color Outliers", "Needles"} for o in orders)
    assert len(orders) > 5
    with pytest.raises(LabelError, match="Unknown artifact type 'Sparkles'"):
        fixed_combination("Floaters,Sparkles", 0, "k")


def test_prompt_round_trip_and_orders_per_type_set():
    prompt = world_model_prompt(["Needles", "Color Outliers", "Floaters"])
    assert prompt == PROMPT_PREFIX + "Needles, Color Outliers, Floaters"
    assert prompt_types(prompt) == ["Needles", "Color Outliers", "Floaters"]
    two = prompt_orders(["Floaters", "Needles"], 0, 8)
    assert sorted(two) == sorted(
        [world_model_prompt(["Floaters", "Needles"]), world_model_prompt(["Needles", "Floaters"])]
    )
    many = prompt_orders(list(ARTIFACT_TYPES), 0, 8)
    assert len(set(many)) == 8 and many == prompt_orders(list(reversed(ARTIFACT_TYPES)), 0, 8)  # keyed by the set
