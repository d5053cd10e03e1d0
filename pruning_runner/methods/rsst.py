"""RSST: groups chosen for removal are not cut at once. Through the next state their weights get an
L2 penalty ``lambda(t) * w`` added to the gradient (after backward, before the step), ``lambda``
growing over the WHOLE state from 0 to ``reg_max``; at the end of that state they are removed.

State ``k``'s evaluation already leaves the penalised groups out, so every state's accuracy is that
of the structure it reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pruning_runner.groups import GroupMasks, VitLayout, create_param_masks
from pruning_runner.methods._base import PruneDecision, Scorer, select_structure
from pruning_runner.schedule import penalty_lambda


@dataclass(frozen=True)
class RsstPruner:
    rate: float
    target: str
    minimum_heads: int
    ranking: str

    def after_state(self, state: int, alive: GroupMasks, penalized: GroupMasks, scorer: Scorer) -> PruneDecision:
        """Remove the groups penalised during ``state``; choose the ones to penalise through ``state + 1``."""
        alive = alive.without(penalized)
        scores = scorer(None)
        keep = select_structure(
            scores, alive, target=self.target, rate=self.rate, prunes=state + 1,
            minimum_heads=self.minimum_heads, ranking=self.ranking,
        )
        return PruneDecision(alive=alive, penalized=alive.without(keep))

    def finish(self, alive: GroupMasks, penalized: GroupMasks) -> PruneDecision:
        """After the last state: remove what was penalised through it."""
        alive = alive.without(penalized)
        return PruneDecision(alive=alive, penalized=alive.without(alive))


class GradientPenalty:
    """Adds ``lambda(t) * w`` to the gradients of the penalised groups' weights.

    ``t`` = global step within the state / total steps of the state.
    """

    def __init__(
        self,
        params: dict[str, torch.Tensor],
        penalized: GroupMasks,
        present: GroupMasks,
        layout: VitLayout,
        *,
        reg_max: float,
        schedule: str,
        exponent: float,
        total_steps: int,
    ):
        self.masks = create_param_masks(params, penalized, present, layout, skip_full=False)
        # only tensors that actually carry a penalised group
        self.masks = {k: v for k, v in self.masks.items() if bool(v.any())}
        self.params = params
        self.reg_max = reg_max
        self.schedule = schedule
        self.exponent = exponent
        self.total_steps = max(1, total_steps)

    @property
    def active(self) -> bool:
        return bool(self.masks) and self.reg_max > 0

    def lam(self, step: int) -> float:
        """lambda at global step ``step`` (0-based) of the state: tau = (step + 1) / total steps.

        Counted after the step, so the state's last step (``total_steps - 1``) gets exactly
        ``reg_max`` (design.md: lambda grows from 0 to reg_max over the state).
        """
        return penalty_lambda(
            (step + 1) / self.total_steps, reg_max=self.reg_max, schedule=self.schedule, exponent=self.exponent
        )

    @torch.no_grad()
    def add_to_grads_(self, step: int) -> float:
        lam = self.lam(step)
        for name, m in self.masks.items():
            p = self.params[name]
            if p.grad is not None:
                p.grad.addcmul_(p.detach(), m, value=lam)
        return lam
