"""Group importance criteria. Each criterion is a class whose ``__call__`` scores the heads and the
MLP neurons of one block from its :class:`GroupEvidence`.

- :class:`MagnitudeImportance`: L1 norm of the group's weights.
- :class:`L2Importance`: L2 norm of the group's weights.
- :class:`TaylorImportance`: sum over the group of ``|w * dL/dw|``, accumulated over a few batches
  on the trained model (before any rewind).
- :class:`RemainImportance`: fraction of the group's weights that survive unstructured global
  magnitude pruning at the target density (Refill's original criterion).

When Refill passes an unstructured keep mask, magnitude/l2/taylor look at the surviving weights only.

Example:
    >>> crit = create_importance("l2")
    >>> type(crit).__name__
    'L2Importance'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from pruning_runner.groups import GroupMasks, VitLayout, block_tensors, reduce_groups

Tensors = dict[str, "torch.Tensor | None"]


@dataclass(frozen=True, eq=False)
class GroupEvidence:
    """What a criterion may look at for one block, at the model's current positions."""

    weights: Tensors  # slot name (relative to the block, e.g. attn.qkv.weight) -> tensor
    layout: VitLayout  # which slots carry heads and which neurons
    heads: int  # heads the block holds now
    neurons: int  # neurons the block holds now
    saliency: Tensors | None = None  # accumulated |w * dL/dw| (taylor)
    keep: Tensors | None = None  # float 0/1 unstructured keep mask (refill)

    def reduce(self, elem: Tensors) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum an element-wise quantity over each head and each neuron -> (``[heads]``, ``[neurons]``)."""
        return (reduce_groups(elem, self.layout, "head", self.heads),
                reduce_groups(elem, self.layout, "neuron", self.neurons))


def _masked(ev: GroupEvidence, values: Tensors) -> Tensors:
    if ev.keep is None:
        return values
    return {k: (v * ev.keep[k] if v is not None else None) for k, v in values.items()}


def _map(values: Tensors, fn: Callable[[torch.Tensor], torch.Tensor]) -> Tensors:
    return {k: (fn(v.detach().float()) if v is not None else None) for k, v in values.items()}


class MagnitudeImportance:
    """L1 norm of each group's weights."""

    def __call__(self, ev: GroupEvidence) -> tuple[torch.Tensor, torch.Tensor]:
        return ev.reduce(_map(_masked(ev, ev.weights), torch.abs))


class L2Importance:
    """L2 norm of each group's weights."""

    def __call__(self, ev: GroupEvidence) -> tuple[torch.Tensor, torch.Tensor]:
        h, n = ev.reduce(_map(_masked(ev, ev.weights), torch.square))
        return h.sqrt(), n.sqrt()


class TaylorImportance:
    """First-order Taylor saliency: sum over the group of ``|w * dL/dw|`` (accumulated per batch)."""

    needs_saliency = True

    def __call__(self, ev: GroupEvidence) -> tuple[torch.Tensor, torch.Tensor]:
        if ev.saliency is None:
            raise ValueError("TaylorImportance needs saliency (accumulate_taylor_saliency first)")
        return ev.reduce(_masked(ev, _map(ev.saliency, lambda t: t)))


class RemainImportance:
    """Fraction of each group's weights surviving unstructured magnitude pruning."""

    needs_unstructured = True

    def __call__(self, ev: GroupEvidence) -> tuple[torch.Tensor, torch.Tensor]:
        if ev.keep is None:
            raise ValueError("RemainImportance needs an unstructured keep mask")
        kept_h, kept_n = ev.reduce(_map(ev.keep, lambda t: t))
        all_h, all_n = ev.reduce(_map(ev.keep, torch.ones_like))
        return kept_h / all_h, kept_n / all_n


_CRITERIA = {
    "magnitude": MagnitudeImportance,
    "l2": L2Importance,
    "taylor": TaylorImportance,
    "remain": RemainImportance,
}


def create_importance(name: str):
    """Criterion instance by name (magnitude, l2, taylor, remain)."""
    try:
        return _CRITERIA[name]()
    except KeyError:
        raise ValueError(f"unknown criterion {name!r}; choose one of: {', '.join(_CRITERIA)}") from None


@torch.no_grad()
def unstructured_keep_masks(
    params: dict[str, torch.Tensor],
    layout: VitLayout,
    density: float,
    *,
    heads: bool,
    neurons: bool,
) -> dict[str, torch.Tensor]:
    """Global unstructured magnitude pruning over the group-carrying tensors at ``density``.

    One global threshold per group kind (heads' tensors, neurons' tensors). The element budget is
    ``round(density * numel of the ORIGINAL tensors)``, so groups already removed from a compacted
    model count as pruned zeros. Returns name -> float 0/1 mask for every group tensor.
    """
    out: dict[str, torch.Tensor] = {}
    kinds = [k for k, on in (("head", heads), ("neuron", neurons)) if on]
    for kind in kinds:
        names = [n for b in range(layout.depth) for n in layout.param_names(b, kind) if n in params]
        if not names:
            continue
        count = layout.num_heads if kind == "head" else layout.mlp_hidden
        per_group = layout.head_numel if kind == "head" else layout.neuron_numel
        budget = int(round(density * per_group * count * layout.depth))
        values = torch.cat([params[n].detach().abs().float().reshape(-1) for n in names])
        if budget >= values.numel():
            thr = None
        elif budget <= 0:
            thr = float("inf")
        else:
            thr = torch.topk(values, budget, sorted=True).values[-1]
        for n in names:
            t = params[n].detach().abs().float()
            out[n] = torch.ones_like(t) if thr is None else (t >= thr).float()
    return out


def accumulate_taylor_saliency(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    layout: VitLayout,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    autocast: Callable[[], object] | None = None,
) -> dict[str, torch.Tensor]:
    """Sum over batches of ``|w * dL/dw|`` for every group tensor, on the model as it is now.

    Gradients of the model are cleared afterwards; weights are not changed.
    """
    names = [n for b in range(layout.depth) for n in layout.param_names(b) if n in params]
    sal = {n: torch.zeros_like(params[n], dtype=torch.float32) for n in names}
    was_training = model.training
    model.eval()  # no dropout / drop-path while measuring
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        if autocast is not None:
            with autocast():
                loss = loss_fn(model(x), y)
        else:
            loss = loss_fn(model(x), y)
        loss.backward()
        with torch.no_grad():
            for n in names:
                g = params[n].grad
                if g is not None:
                    sal[n].add_((params[n].detach().float() * g.float()).abs_())
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return sal


@torch.no_grad()
def score_groups(
    criterion,
    params: dict[str, torch.Tensor],
    layout: VitLayout,
    present: GroupMasks,
    *,
    saliency: dict[str, torch.Tensor] | None = None,
    keep: dict[str, torch.Tensor] | None = None,
) -> GroupMasks:
    """Scores of every group in ORIGINAL index space (``GroupMasks``-shaped float tensors).

    Groups not present in the (compacted) model score ``-inf``.
    """
    heads = torch.full((layout.depth, layout.num_heads), float("-inf"))
    neurons = torch.full((layout.depth, layout.mlp_hidden), float("-inf"))
    for b in range(layout.depth):
        nh, nn_ = int(present.heads[b].sum()), int(present.neurons[b].sum())
        weights = block_tensors(params, layout, b)

        keep_b = _block_part(keep, b, weights)
        if keep_b is not None and any(v is None for k, v in keep_b.items() if weights[k] is not None):
            keep_b = _fill_keep(weights, keep_b)
        ev = GroupEvidence(weights, layout, nh, nn_, saliency=_block_part(saliency, b, weights), keep=keep_b)
        sh, sn = criterion(ev)
        heads[b, present.heads[b]] = sh.float().cpu()
        neurons[b, present.neurons[b]] = sn.float().cpu()
    return GroupMasks(heads, neurons)


def _block_part(source: dict[str, torch.Tensor] | None, b: int, weights: Tensors) -> Tensors | None:
    """Block ``b``'s entries of a full-name dict, by slot name."""
    if source is None:
        return None
    return {k: source.get(f"blocks.{b}.{k}") for k in weights}


def _fill_keep(weights: Tensors, keep: Tensors) -> Tensors:
    return {
        k: (keep[k] if keep.get(k) is not None else (torch.ones_like(w, dtype=torch.float32) if w is not None else None))
        for k, w in weights.items()
    }
