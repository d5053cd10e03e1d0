"""Refill: after a state's training, unstructured global magnitude pruning at the target density;
groups ranked by the criterion (on the surviving weights); kept groups are refilled completely,
the rest dropped at once. The loop then rewinds the survivors.
"""

from __future__ import annotations

from dataclasses import dataclass

from pruning_runner.groups import GroupMasks
from pruning_runner.methods._base import PruneDecision, Scorer, select_structure


@dataclass(frozen=True)
class RefillPruner:
    rate: float  # fraction of remaining groups removed per prune
    target: str  # head | mlp | both
    minimum_heads: int  # heads never fewer per block
    ranking: str  # layer | global

    def after_state(self, state: int, alive: GroupMasks, penalized: GroupMasks, scorer: Scorer) -> PruneDecision:
        """Structure for state ``state + 1``; ``scorer`` scores the trained model."""
        density = (1.0 - self.rate) ** (state + 1)
        scores = scorer(density)
        keep = select_structure(
            scores, alive, target=self.target, rate=self.rate, prunes=state + 1,
            minimum_heads=self.minimum_heads, ranking=self.ranking,
        )
        return PruneDecision(alive=keep, penalized=GroupMasks(keep.heads & False, keep.neurons & False))

    def finish(self, alive: GroupMasks, penalized: GroupMasks) -> PruneDecision:
        """After the last state: nothing pending."""
        return PruneDecision(alive=alive, penalized=penalized)
