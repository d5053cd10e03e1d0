"""Pruning methods. Each ``<Name>Pruner`` decides, at the end of a state, which groups stay alive
and (RSST) which groups are penalised through the next state.

Example:
    >>> from pruning_runner.methods import create_pruner
"""

from __future__ import annotations

from pruning_runner.methods._base import PruneDecision, Scorer, select_structure
from pruning_runner.methods.refill import RefillPruner
from pruning_runner.methods.rsst import RsstPruner

__all__ = ["PruneDecision", "RefillPruner", "RsstPruner", "Scorer", "create_pruner", "select_structure"]


def create_pruner(method: str, *, rate: float, target: str, minimum_heads: int, ranking: str):
    """Pruner for ``method`` ("refill" or "rsst")."""
    cls = {"refill": RefillPruner, "rsst": RsstPruner}.get(method)
    if cls is None:
        raise ValueError(f"unknown method {method!r}; choose refill or rsst")
    return cls(rate=rate, target=target, minimum_heads=minimum_heads, ranking=ranking)
