"""The sparse-view protocol: deterministic, spread-out training views and one-sentence errors."""

from __future__ import annotations

import math

import pytest
import torch

from artifactworld_ns.view_selection import (
    ViewSelectionError,
    even_indices,
    num_train_views_for_ratio,
    select_train_views,
)


def ring_positions(n: int, radius: float = 3.0, height: float = 0.7) -> torch.Tensor:
    angles = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
    return torch.stack(
        [radius * torch.cos(angles), radius * torch.sin(angles), torch.full_like(angles, height)], -1
    ).float()


def assert_partition(train: torch.Tensor, evals: torch.Tensor, n: int) -> None:
    assert train.dtype == torch.long and evals.dtype == torch.long
    assert torch.equal(train, train.sort().values) and torch.equal(evals, evals.sort().values)
    assert torch.equal(torch.cat([train, evals]).sort().values, torch.arange(n))


@pytest.mark.parametrize("method", ["farthest", "even"])
def test_selection_is_deterministic_and_partitions_the_views(method):
    positions = torch.randn(50, 3, generator=torch.Generator().manual_seed(3))
    first = select_train_views(positions, ratio=0.1, method=method)
    second = select_train_views(positions.clone(), ratio=0.1, method=method)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert first[0].numel() == 5 and first[1].numel() == 45
    assert_partition(*first, 50)


def test_farthest_on_a_ring_picks_views_90_degrees_apart():
    # All cameras tie as nearest to the centroid, so camera 0 starts; then the opposite one (18),
    # then the two quarter points (9 before 27 on the tie).
    train, evals = select_train_views(ring_positions(36), count=4, method="farthest")
    assert train.tolist() == [0, 9, 18, 27]
    assert_partition(train, evals, 36)


def test_farthest_on_a_line_starts_at_the_centre_and_takes_the_ends():
    positions = torch.zeros(10, 3)
    positions[:, 0] = torch.arange(10.0)
    # centroid 4.5: 4 and 5 tie, 4 wins; farthest from 4 is 9; then 0 (distance 4 from 4).
    train, _ = select_train_views(positions, count=3, method="farthest")
    assert train.tolist() == [0, 4, 9]


def test_even_takes_segment_centres_in_capture_order():
    assert even_indices(10, 3).tolist() == [1, 5, 8]  # floor(10/6), floor(30/6), floor(50/6)
    assert even_indices(36, 4).tolist() == [4, 13, 22, 31]  # floor(36/8 * (1, 3, 5, 7))
    train, evals = select_train_views(ring_positions(50), ratio=0.1, method="even")
    assert train.tolist() == [5, 15, 25, 35, 45]
    assert_partition(train, evals, 50)


@pytest.mark.parametrize(
    "ratio, n, expected",
    [(0.1, 50, 5), (0.05, 50, 3), (0.15, 50, 8), (0.15, 10, 2), (0.29, 50, 15), (0.25, 10, 3), (0.24, 10, 2)],
)
def test_ratio_rounds_halves_up(ratio, n, expected):
    # 0.05 * 50 = 2.5 -> 3; 0.15 * 50 = 7.5 -> 8; 0.29 * 50 = 14.5 (14.4999... in floats) -> 15; 0.25 * 10 = 2.5 -> 3.
    assert num_train_views_for_ratio(ratio, n) == expected
    train, evals = select_train_views(ring_positions(n), ratio=ratio)
    assert train.numel() == expected and evals.numel() == n - expected


def test_count_is_exact():
    train, evals = select_train_views(ring_positions(50), count=3)
    assert train.numel() == 3 and evals.numel() == 47


def one_sentence(message: str) -> bool:
    return message.endswith(".") and message.count(". ") == 0 and "\n" not in message


def test_too_small_ratio_names_the_numbers_and_the_smallest_ratio():
    with pytest.raises(ViewSelectionError) as info:
        select_train_views(ring_positions(50), ratio=0.01)
    message = str(info.value)
    assert message == (
        "--pipeline.datamanager.train-view-ratio 0.01 keeps 1 of 50 views for training; the sparse-view protocol "
        "needs at least 2, so raise the ratio to at least 0.04."
    )
    assert one_sentence(message)
    # the suggested ratio really works
    assert select_train_views(ring_positions(50), ratio=0.04)[0].numel() == 2


def test_error_quotes_the_callers_flag_name():
    with pytest.raises(ViewSelectionError, match=r"^--ratio 0.02 keeps 0 of 20 views .* at least 0.1\.$"):
        select_train_views(ring_positions(20), ratio=0.02, ratio_flag="--ratio")


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        (dict(ratio=0.1, count=3), ["exactly one of", "both were given"]),
        (dict(), ["exactly one of", "neither was given"]),
        (dict(ratio=0.0), ["0.0 is outside (0, 1]"]),
        (dict(ratio=1.5), ["1.5 is outside (0, 1]"]),
        (dict(ratio=1.0), ["keeps 50 of 50", "leaves 0 for evaluation", "at most 0.98"]),
        (dict(count=1), ["num-train-views 1 keeps 1 of 50", "at least 2"]),
        (dict(count=50), ["num-train-views 50 keeps 50 of 50", "leaves 0 for evaluation", "at most 49"]),
        (dict(count=60), ["num-train-views 60 keeps 60 of 50", "at most 49"]),
        (dict(count=3, method="random"), ["'random' is unknown"]),
    ],
)
def test_bad_arguments_raise_one_sentence(kwargs, fragments):
    with pytest.raises(ViewSelectionError) as info:
        select_train_views(ring_positions(50), **kwargs)
    message = str(info.value)
    assert one_sentence(message), message
    for fragment in fragments:
        assert fragment in message, message


def test_the_suggested_upper_ratio_leaves_an_eval_view():
    train, evals = select_train_views(ring_positions(50), ratio=0.98)
    assert train.numel() == 49 and evals.numel() == 1


def test_tiny_capture_and_bad_positions():
    with pytest.raises(ViewSelectionError, match="has 2 views; .* at least 3"):
        select_train_views(ring_positions(2), count=2)
    with pytest.raises(ViewSelectionError, match=r"shape \[n, 3\]"):
        select_train_views(torch.zeros(5, 2), count=2)
    bad = ring_positions(5)
    bad[1, 0] = float("nan")
    with pytest.raises(ViewSelectionError, match="NaN"):
        select_train_views(bad, count=2)
    assert isinstance(ViewSelectionError("x"), ValueError)
