"""Shared pieces of the pruning methods."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pruning_runner.groups import GroupMasks
from pruning_runner.ranking import select_kept

# scorer(density) -> scores in original index space; density is the unstructured keep fraction
# (None: score the weights as they are).
Scorer = Callable[["float | None"], GroupMasks]


@dataclass(frozen=True, eq=False)
class PruneDecision:
    """Structure for the next state."""

    alive: GroupMasks  # groups still in the model
    penalized: GroupMasks  # alive groups penalised through the next state and removed at its end (RSST)


def select_structure(
    scores: GroupMasks,
    alive: GroupMasks,
    *,
    target: str,
    rate: float,
    prunes: int,
    minimum_heads: int,
    ranking: str,
) -> GroupMasks:
    """Groups kept after ``prunes`` prunes: the target kinds follow the schedule, the others stay."""
    heads = alive.heads
    neurons = alive.neurons
    if target in ("head", "both"):
        heads = select_kept(scores.heads, alive.heads, rate=rate, prunes=prunes, minimum=minimum_heads, ranking=ranking)
    if target in ("mlp", "both"):
        neurons = select_kept(scores.neurons, alive.neurons, rate=rate, prunes=prunes, minimum=1, ranking=ranking)
    return GroupMasks(heads, neurons)
