"""The sparse-view protocol: which captured images train the model and which are held out.

ArtifactWorld (paper Sec. 5) and its peers evaluate sparse-view reconstruction by training on a small
ratio (5/10/15 %) or an exact count (e.g. 3) of a capture's images and evaluating on the rest. The
choice here is deterministic (no random numbers) and spread over the capture, so two runs with the
same arguments train on the same views.

Two methods:

- ``"even"`` (default, the paper's protocol as GSFixer's: views sampled uniformly over the capture):
  see below.
- ``"farthest"``: farthest-point sampling on the camera positions. It starts from the
  camera nearest the centroid of all camera positions, then repeatedly adds the camera whose
  distance to the nearest already chosen camera is largest. Ties (within a relative ``1e-6`` of the
  scene size) go to the lowest index, so the result does not depend on float32 noise.
- ``"even"``: evenly along the capture order. With ``n`` views and ``k`` to keep, view ``i`` of the
  selection is the one at the centre of the ``i``-th of ``k`` equal segments of the capture:
  ``floor((2 i + 1) n / (2 k))``, computed in exact integer arithmetic. This is
  ``np.linspace(0, n, k, endpoint=False) + n / (2 k)`` rounded down; unlike a linspace over
  ``[0, n - 1]`` it does not take both ends of an orbit, which are neighbours on a closed path.

Number of training views: ``count`` is used as given; a ``ratio`` keeps ``round(ratio * n)`` views,
rounding halves up (``floor(ratio * n + 0.5)``, after rounding the product to 9 decimals so that
e.g. ``0.29 * 50`` counts as 14.5 and keeps 15). The protocol needs at least 2 training views and at
least 1 evaluation view, so ``2 <= k <= n - 1``; anything else raises :class:`ViewSelectionError`.
"""

from __future__ import annotations

import math
from typing import Literal, Optional, Tuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from artifactworld_ns.restorer import ArtifactWorldError

MIN_TRAIN_VIEWS = 2
"""Fewest training views the sparse-view protocol accepts."""
MIN_EVAL_VIEWS = 1
"""Fewest held-out views: without one there is nothing to evaluate on."""
TIE_TOLERANCE = 1e-6
"""Relative tolerance (of the scene size) under which two distances count as a tie."""

SelectionMethod = Literal["farthest", "even"]


class ViewSelectionError(ArtifactWorldError, ValueError):
    """Bad arguments for the sparse-view protocol; the message is one sentence for the user."""


def _fmt(value: float) -> str:
    return f"{value:g}"


def num_train_views_for_ratio(ratio: float, num_views: int) -> int:
    """Training views a ratio keeps of ``num_views``: ``round(ratio * n)`` with halves rounded up."""
    return int(math.floor(round(ratio * num_views, 9) + 0.5))


def _smallest_ratio_keeping(k: int, num_views: int) -> float:
    """Smallest ratio with two decimals that keeps at least ``k`` views (used in error messages)."""
    ratio = math.ceil(round(k / num_views * 100, 9)) / 100
    while num_train_views_for_ratio(ratio, num_views) < k:  # pragma: no cover - rounding safety net
        ratio += 0.01
    return round(ratio, 2)


def _largest_ratio_keeping(k: int, num_views: int) -> float:
    """Largest ratio with two decimals that keeps at most ``k`` views (used in error messages)."""
    ratio = math.floor(round(k / num_views * 100, 9)) / 100
    while ratio > 0.01 and num_train_views_for_ratio(ratio, num_views) > k:  # pragma: no cover - rounding safety net
        ratio -= 0.01
    return round(ratio, 2)


def resolve_num_train_views(
    num_views: int,
    *,
    ratio: Optional[float] = None,
    count: Optional[int] = None,
    ratio_flag: str = "--pipeline.datamanager.train-view-ratio",
    count_flag: str = "--pipeline.datamanager.num-train-views",
) -> int:
    """Number of training views for exactly one of ``ratio`` / ``count``, validated.

    ``ratio_flag`` / ``count_flag`` are the option names the messages quote, so a caller can name
    its own command-line options.

    Raises:
        ViewSelectionError: both or neither of ratio/count given, ratio outside (0, 1], or the result
            keeps fewer than 2 training views or fewer than 1 evaluation view.
    """
    if (ratio is None) == (count is None):
        given = "both were given" if ratio is not None else "neither was given"
        raise ViewSelectionError(
            f"Give exactly one of {ratio_flag} and {count_flag} to pick the training views; {given}."
        )
    if num_views < MIN_TRAIN_VIEWS + MIN_EVAL_VIEWS:
        raise ViewSelectionError(
            f"The capture has {num_views} views; the sparse-view protocol needs at least "
            f"{MIN_TRAIN_VIEWS + MIN_EVAL_VIEWS} ({MIN_TRAIN_VIEWS} for training and {MIN_EVAL_VIEWS} for evaluation)."
        )
    max_train = num_views - MIN_EVAL_VIEWS
    if ratio is not None:
        if (
            isinstance(ratio, bool)
            or not isinstance(ratio, (int, float))
            or not math.isfinite(ratio)
            or not 0 < ratio <= 1
        ):
            raise ViewSelectionError(
                f"{ratio_flag} {ratio} is outside (0, 1]; use a fraction such as 0.1 for 10% of the views."
            )
        k = num_train_views_for_ratio(float(ratio), num_views)
        if k < MIN_TRAIN_VIEWS:
            raise ViewSelectionError(
                f"{ratio_flag} {_fmt(ratio)} keeps {k} of {num_views} views for training; the sparse-view protocol "
                f"needs at least {MIN_TRAIN_VIEWS}, so raise the ratio to at least {_fmt(_smallest_ratio_keeping(MIN_TRAIN_VIEWS, num_views))}."
            )
        if k > max_train:
            raise ViewSelectionError(
                f"{ratio_flag} {_fmt(ratio)} keeps {k} of {num_views} views for training and leaves {num_views - k} for "
                f"evaluation; the sparse-view protocol needs at least {MIN_EVAL_VIEWS}, so lower the ratio to at most "
                f"{_fmt(_largest_ratio_keeping(max_train, num_views))}."
            )
        return k
    assert count is not None
    if isinstance(count, bool) or not isinstance(count, int):
        raise ViewSelectionError(f"{count_flag} {count!r} is not a whole number of views.")
    if count < MIN_TRAIN_VIEWS:
        raise ViewSelectionError(
            f"{count_flag} {count} keeps {count} of {num_views} views for training; the sparse-view protocol needs "
            f"at least {MIN_TRAIN_VIEWS}, so raise the count to at least {MIN_TRAIN_VIEWS}."
        )
    if count > max_train:
        raise ViewSelectionError(
            f"{count_flag} {count} keeps {count} of {num_views} views for training and leaves "
            f"{max(num_views - count, 0)} for evaluation; the sparse-view protocol needs at least {MIN_EVAL_VIEWS}, "
            f"so lower the count to at most {max_train}."
        )
    return count


def _argmax_lowest_index(values: Tensor, tolerance: float) -> int:
    """Index of the maximum; values within ``tolerance`` of it tie and the lowest index wins."""
    best = values.max()
    return int(torch.nonzero(values >= best - tolerance)[0, 0])


def farthest_point_indices(positions: Float[Tensor, "n 3"], k: int) -> Int[Tensor, " k"]:
    """Farthest-point sampling of ``k`` of ``positions``, starting from the one nearest their centroid.

    Returned in selection order (not sorted). Deterministic: ties go to the lowest index.
    """
    pos = positions.detach().to(torch.float64).cpu()
    n = pos.shape[0]
    scale = float((pos - pos.mean(0)).norm(dim=-1).max()) if n else 0.0
    tolerance = TIE_TOLERANCE * max(scale, 1e-12)
    to_centroid = (pos - pos.mean(0)).norm(dim=-1)
    chosen = [_argmax_lowest_index(-to_centroid, tolerance)]
    nearest = (pos - pos[chosen[0]]).norm(dim=-1)
    for _ in range(k - 1):
        candidates = nearest.clone()
        candidates[chosen] = -1.0
        nxt = _argmax_lowest_index(candidates, tolerance)
        chosen.append(nxt)
        nearest = torch.minimum(nearest, (pos - pos[nxt]).norm(dim=-1))
    return torch.tensor(chosen, dtype=torch.long)


def even_indices(num_views: int, k: int) -> Int[Tensor, " k"]:
    """``k`` indices evenly along ``range(num_views)``: the centres ``floor((2i+1) n / (2k))`` of k equal segments."""
    return torch.tensor([((2 * i + 1) * num_views) // (2 * k) for i in range(k)], dtype=torch.long)


def select_train_views(
    camera_positions: Float[Tensor, "n 3"],
    *,
    ratio: Optional[float] = None,
    count: Optional[int] = None,
    method: SelectionMethod = "even",
    ratio_flag: str = "--pipeline.datamanager.train-view-ratio",
    count_flag: str = "--pipeline.datamanager.num-train-views",
) -> Tuple[Int[Tensor, " k"], Int[Tensor, " m"]]:
    """Split a capture into training and evaluation views (the sparse-view protocol, see module doc).

    Args:
        camera_positions: camera centres in capture order (e.g. ``camera_to_worlds[:, :3, 3]``).
        ratio: fraction of the views to train on, in (0, 1]; exactly one of ratio/count.
        count: exact number of views to train on; exactly one of ratio/count.
        method: ``"even"`` (evenly along capture order, the paper's protocol) or ``"farthest"`` (farthest-point sampling).
        ratio_flag, count_flag: option names quoted in error messages.

    Returns:
        ``(train_indices, eval_indices)``: sorted, disjoint LongTensors that together cover ``range(n)``.

    Raises:
        ViewSelectionError: see :func:`resolve_num_train_views`, or an unknown method / bad positions.
    """
    if camera_positions.ndim != 2 or camera_positions.shape[-1] != 3:
        raise ViewSelectionError(f"Camera positions must have shape [n, 3], got {list(camera_positions.shape)}.")
    if not torch.isfinite(camera_positions).all():
        raise ViewSelectionError("Camera positions contain NaN or infinite values, so no views can be selected.")
    n = camera_positions.shape[0]
    k = resolve_num_train_views(n, ratio=ratio, count=count, ratio_flag=ratio_flag, count_flag=count_flag)
    if method == "farthest":
        picked = farthest_point_indices(camera_positions, k)
    elif method == "even":
        picked = even_indices(n, k)
    else:
        raise ViewSelectionError(f"View selection method {method!r} is unknown; use 'farthest' or 'even'.")
    is_train = torch.zeros(n, dtype=torch.bool)
    is_train[picked] = True
    return torch.nonzero(is_train).flatten(), torch.nonzero(~is_train).flatten()
