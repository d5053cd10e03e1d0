"""Choose which groups to keep from their scores, following the sparsity schedule exactly.

- ``layer``: every block keeps ``kept_count(n_block, r, k, minimum)`` of its groups.
- ``global``: the model keeps ``kept_count(depth * n_block, r, k, depth * minimum)`` groups; each
  block first reserves its ``minimum`` best, the rest are filled by scores normalised per block
  (divided by the mean score of the block's alive groups) across all blocks.

Ties are broken by position (lower block, then lower index wins), so the choice is deterministic.

Example:
    >>> import torch
    >>> s = torch.tensor([[3.0, 1.0, 2.0, 0.0]]); alive = torch.ones(1, 4, dtype=torch.bool)
    >>> select_kept(s, alive, rate=0.5, prunes=1, minimum=1, ranking="layer").tolist()
    [[True, False, True, False]]
"""

from __future__ import annotations

import torch

from pruning_runner.schedule import kept_count


def expected_kept(depth: int, per_block: int, *, rate: float, prunes: int, minimum: int, ranking: str) -> int:
    """Total groups a model keeps after ``prunes`` prunes (what :func:`select_kept` guarantees)."""
    minimum = min(minimum, per_block)
    if ranking == "layer":
        return depth * kept_count(per_block, rate, prunes, minimum=minimum)
    return kept_count(depth * per_block, rate, prunes, minimum=depth * minimum)


def _top(scores: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the ``k`` best candidates (stable: earlier index wins ties)."""
    out = torch.zeros_like(candidates)
    if k <= 0:
        return out
    s = torch.where(candidates, scores.double(), torch.tensor(float("-inf"), dtype=torch.float64))
    order = torch.sort(s, descending=True, stable=True).indices[:k]
    out[order] = True
    return out & candidates


def select_kept(
    scores: torch.Tensor,
    alive: torch.Tensor,
    *,
    rate: float,
    prunes: int,
    minimum: int,
    ranking: str,
) -> torch.Tensor:
    """Groups to keep: a subset of ``alive`` of the exact scheduled size.

    Args:
        scores: ``[depth, n]`` float, higher = more important (non-alive entries ignored).
        alive: ``[depth, n]`` bool, groups still in the model.
        rate: fraction of the remaining groups removed per prune.
        prunes: prunes done after this selection (state index the kept set is for).
        minimum: never fewer groups per block.
        ranking: "layer" or "global".

    Raises:
        ValueError: the schedule asks to keep more groups than are alive (schedule not monotone).
    """
    depth, n = alive.shape
    scores = torch.nan_to_num(scores.double(), nan=0.0, neginf=float("-inf"))
    minimum = min(minimum, n)
    if ranking == "layer":
        k = kept_count(n, rate, prunes, minimum=minimum)
        keep = torch.zeros_like(alive)
        for b in range(depth):
            if k > int(alive[b].sum()):
                raise ValueError(f"block {b}: schedule keeps {k} groups but only {int(alive[b].sum())} are alive")
            keep[b] = _top(scores[b], alive[b], k)
        return keep
    if ranking != "global":
        raise ValueError(f"unknown ranking {ranking!r}")
    total = kept_count(depth * n, rate, prunes, minimum=depth * minimum)
    if total > int(alive.sum()):
        raise ValueError(f"schedule keeps {total} groups but only {int(alive.sum())} are alive")
    keep = torch.zeros_like(alive)
    norm = torch.zeros_like(scores)
    for b in range(depth):
        keep[b] = _top(scores[b], alive[b], minimum)
        vals = scores[b][alive[b]]
        mean = float(vals.clamp_min(0).mean()) if vals.numel() else 0.0
        norm[b] = scores[b] / mean if mean > 0 else scores[b]
    rest = total - int(keep.sum())
    flat = _top(norm.reshape(-1), (alive & ~keep).reshape(-1), rest)
    return keep | flat.reshape(depth, n)
