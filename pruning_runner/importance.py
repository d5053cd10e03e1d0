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

from pruning_runner.groups import (
    GroupMasks,
    VitLayout,
    block_param_names,
    block_tensors,
    reduce_heads,
    reduce_neurons,
)

Tensors = dict[str, "torch.Tensor | None"]


@dataclass(frozen=True, eq=False)
class GroupEvidence:
    """What a criterion may look at for one block, at the model's current positions."""

    weights: Tensors  # qkv_w, qkv_b, proj_w, fc1_w, fc1_b, fc2_w
    head_dim: int
    saliency: Tensors | None = None  # accumulated |w * dL/dw| (taylor)
    keep: Tensors | None = None  # float 0/1 unstructured keep mask (refill)


def _masked(ev: GroupEvidence, values: Tensors) -> Tensors:
    if ev.keep is None:
        return values
    return {k: (v * ev.keep[k] if v is not None else None) for k, v in values.items()}


def _map(values: Tensors, fn: Callable[[torch.Tensor], torch.Tensor]) -> Tensors:
    return {k: (fn(v.detach().float()) if v is not None else None) for k, v in values.items()}


class MagnitudeImportance:
    """L1 norm of each group's weights."""

    def __call__(self, ev: GroupEvidence) -> tuple[torch.Tensor, torch.Tensor]:
        elem = _map(_masked(ev, ev.weights), torch.abs)
        return reduce_heads(elem, ev.head_dim), reduce_neurons(elem)


class L2Importance:
    """L2 norm of each group's weights."""

    def __call__(self, ev: GroupEvidence) -> tuple[torch.Tensor, torch.Tensor]:
        elem = _map(_masked(ev, ev.weights), torch.square)
        return reduce_heads(elem, ev.head_dim).sqrt(), reduce_neurons(elem).sqrt()


class TaylorImportance:
    """First-order Taylor saliency: sum over the group of ``|w * dL/dw|`` (accumulated per batch)."""

    needs_saliency = True

    def __call__(self, ev: GroupEvidence) -> tuple[torch.Tensor, torch.Tensor]:
        if ev.saliency is None:
            raise ValueError("TaylorImportance needs saliency (accumulate_taylor_saliency first)")
        elem = _masked(ev, _map(ev.saliency, lambda t: t))
        return reduce_heads(elem, ev.head_dim), reduce_neurons(elem)


class RemainImportance:
    """Fraction of each group's weights surviving unstructured magnitude pruning."""

    needs_unstructured = True

    def __call__(self, ev: GroupEvidence) -> tuple[torch.Tensor, torch.Tensor]:
        if ev.keep is None:
            raise ValueError("RemainImportance needs an unstructured keep mask")
        ones = _map(ev.keep, torch.ones_like)
        kept = _map(ev.keep, lambda t: t)
        return (
            reduce_heads(kept, ev.head_dim) / reduce_heads(ones, ev.head_dim),
            reduce_neurons(kept) / reduce_neurons(ones),
        )


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


_HEAD_KINDS = ("qkv_w", "qkv_b", "proj_w")
_NEURON_KINDS = ("fc1_w", "fc1_b", "fc2_w")


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
    kinds = []
    if heads:
        kinds.append(_HEAD_KINDS)
    if neurons:
        kinds.append(_NEURON_KINDS)
    for kind_set in kinds:
        names = [block_param_names(b)[k] for b in range(layout.depth) for k in kind_set]
        names = [n for n in names if n in params]
        original = _original_numel(layout, kind_set, params)
        budget = int(round(density * original))
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


def _original_numel(layout: VitLayout, kind_set: tuple[str, ...], params: dict[str, torch.Tensor]) -> int:
    d, e = layout.head_dim, layout.embed_dim
    total = 0
    if kind_set == _HEAD_KINDS:
        per = 3 * d * e + e * d + (3 * d if block_param_names(0)["qkv_b"] in params else 0)
        total = per * layout.num_heads * layout.depth
    else:
        per = 2 * e + (1 if block_param_names(0)["fc1_b"] in params else 0)
        total = per * layout.mlp_hidden * layout.depth
    return total


def accumulate_taylor_saliency(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    autocast: Callable[[], object] | None = None,
) -> dict[str, torch.Tensor]:
    """Sum over batches of ``|w * dL/dw|`` for every group tensor, on the model as it is now.

    Gradients of the model are cleared afterwards; weights are not changed.
    """
    names = [n for n in params if ".attn.qkv." in n or ".attn.proj.weight" in n or ".mlp.fc" in n]
    names = [n for n in names if not n.endswith("fc2.bias")]
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
        names = block_param_names(b)
        ev = GroupEvidence(
            weights=block_tensors(params, b),
            head_dim=layout.head_dim,
            saliency={k: saliency.get(n) for k, n in names.items()} if saliency is not None else None,
            keep={k: keep.get(n) for k, n in names.items()} if keep is not None else None,
        )
        if ev.keep is not None and any(v is None for k, v in ev.keep.items() if ev.weights[k] is not None):
            ev = GroupEvidence(ev.weights, ev.head_dim, ev.saliency, _fill_keep(ev.weights, ev.keep))
        sh, sn = criterion(ev)
        heads[b, present.heads[b]] = sh.float().cpu()
        neurons[b, present.neurons[b]] = sn.float().cpu()
    return GroupMasks(heads, neurons)


def _fill_keep(weights: Tensors, keep: Tensors) -> Tensors:
    return {
        k: (keep[k] if keep.get(k) is not None else (torch.ones_like(w, dtype=torch.float32) if w is not None else None))
        for k, w in weights.items()
    }
