"""Prunable groups of a timm ViT and their masks.

Head ``h`` of block ``b``: its rows of q, k and v in ``blocks.b.attn.qkv`` (weight viewed
``[3, H, d, dim]``, and bias) plus its columns of ``blocks.b.attn.proj.weight``.
MLP neuron ``j`` of block ``b``: row ``j`` of ``blocks.b.mlp.fc1`` (weight, bias; both halves of a
packed gated MLP, or ``fc1_g`` and ``fc1_x``) plus column ``j`` of ``blocks.b.mlp.fc2.weight``.
Which tensors carry which groups is the layout's list of :class:`~pruning_runner.blocks.Slot`
(:mod:`pruning_runner.blocks` recognises the families); every operation here follows those slots.

Masks always live in the ORIGINAL index space (``[depth, H]`` and ``[depth, M]`` bool tensors).
A model may be physically compacted; ``present`` says which original groups it still holds, in
increasing order, so current position ``i`` of block ``b`` is original group
``present.heads[b].nonzero()[i]``.

Example:
    >>> layout = VitLayout(depth=2, num_heads=4, head_dim=8, embed_dim=32, mlp_hidden=64)  # no slots
    >>> GroupMasks.full(layout).heads.shape
    torch.Size([2, 4])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pruning_runner.blocks import Slot

GROUP_KINDS = ("head", "neuron")


@dataclass(frozen=True)
class VitLayout:
    """Shape of the original (uncompacted) ViT's prunable structure and where its groups live."""

    depth: int  # number of transformer blocks
    num_heads: int  # heads per block in the original model (0: attention not prunable, not targeted)
    head_dim: int  # per-head width (kept unchanged by compaction)
    embed_dim: int  # token width
    mlp_hidden: int  # MLP hidden neurons per block in the original model (0: MLP not prunable, not targeted)
    head_slots: tuple[Slot, ...] = ()  # tensors carrying the heads (names relative to a block)
    neuron_slots: tuple[Slot, ...] = ()  # tensors carrying the MLP neurons
    head_numel: int = 0  # parameters one head carries in the original model
    neuron_numel: int = 0  # parameters one neuron carries in the original model

    @classmethod
    def from_model(cls, model: nn.Module, *, target: str = "both", arch: str = "model") -> VitLayout:
        """The layout of an uncompacted model; refuses what ``target`` cannot prune exactly (module named)."""
        from pruning_runner.blocks import resolve_block_kinds

        model = unwrap_model(model)
        kinds = resolve_block_kinds(model, target=target, arch=arch)
        params = dict(model.named_parameters())

        def numel(slots, n):
            if not n:
                return 0
            total = sum(params["blocks.0." + s.name].numel() * s.per_group_fraction for s in slots)
            return int(round(total / n))

        return cls(
            depth=len(model.blocks),
            num_heads=kinds.num_heads,
            head_dim=kinds.head_dim,
            embed_dim=model.embed_dim if hasattr(model, "embed_dim") else model.blocks[0].norm1.weight.shape[0],
            mlp_hidden=kinds.mlp_hidden,
            head_slots=kinds.head_slots,
            neuron_slots=kinds.neuron_slots,
            head_numel=numel(kinds.head_slots, kinds.num_heads),
            neuron_numel=numel(kinds.neuron_slots, kinds.mlp_hidden),
        )

    def slots(self, kind: str) -> tuple[Slot, ...]:
        return self.head_slots if kind == "head" else self.neuron_slots

    def all_slots(self) -> tuple[Slot, ...]:
        return self.head_slots + self.neuron_slots

    def param_names(self, b: int, kind: str | None = None) -> list[str]:
        """Full names of block ``b``'s group-carrying tensors (of one kind, or both)."""
        slots = self.all_slots() if kind is None else self.slots(kind)
        return [f"blocks.{b}.{s.name}" for s in slots]


@dataclass(frozen=True, eq=False)
class GroupMasks:
    """Which groups are kept: ``heads`` ``[depth, H]`` and ``neurons`` ``[depth, M]`` bool (CPU)."""

    heads: torch.Tensor
    neurons: torch.Tensor

    @classmethod
    def full(cls, layout: VitLayout) -> GroupMasks:
        return cls(
            torch.ones(layout.depth, layout.num_heads, dtype=torch.bool),
            torch.ones(layout.depth, layout.mlp_hidden, dtype=torch.bool),
        )

    @classmethod
    def empty(cls, layout: VitLayout) -> GroupMasks:
        return cls(
            torch.zeros(layout.depth, layout.num_heads, dtype=torch.bool),
            torch.zeros(layout.depth, layout.mlp_hidden, dtype=torch.bool),
        )

    def __and__(self, other: GroupMasks) -> GroupMasks:
        return GroupMasks(self.heads & other.heads, self.neurons & other.neurons)

    def without(self, other: GroupMasks) -> GroupMasks:
        return GroupMasks(self.heads & ~other.heads, self.neurons & ~other.neurons)

    def equals(self, other: GroupMasks) -> bool:
        return bool(torch.equal(self.heads, other.heads) and torch.equal(self.neurons, other.neurons))

    def kept_heads(self) -> int:
        return int(self.heads.sum())

    def kept_neurons(self) -> int:
        return int(self.neurons.sum())

    def any(self) -> bool:
        return bool(self.heads.any() or self.neurons.any())

    def to_state(self) -> dict[str, torch.Tensor]:
        return {"heads": self.heads.clone(), "neurons": self.neurons.clone()}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> GroupMasks:
        return cls(state["heads"].to(torch.bool).cpu(), state["neurons"].to(torch.bool).cpu())


def current_masks(keep: GroupMasks, present: GroupMasks) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``keep`` restricted to the groups the (possibly compacted) model holds, per block."""
    heads = [keep.heads[b][present.heads[b]] for b in range(keep.heads.shape[0])]
    neurons = [keep.neurons[b][present.neurons[b]] for b in range(keep.neurons.shape[0])]
    return heads, neurons


def _axis_view(t: torch.Tensor, slot: Slot) -> tuple[torch.Tensor, int]:
    """``t`` viewed with its group axis split into ``(outer, n, inner)``; returns (view, dim of n)."""
    shape = list(t.shape)
    size = shape[slot.axis]
    n = size // (slot.outer * slot.inner)
    new = shape[: slot.axis] + [slot.outer, n, slot.inner] + shape[slot.axis + 1:]
    return t.reshape(new), slot.axis + 1


def group_count(t: torch.Tensor, slot: Slot) -> int:
    """Groups the tensor holds now."""
    return t.shape[slot.axis] // (slot.outer * slot.inner)


def _fixed_part(view: torch.Tensor, slot: Slot, dim: int) -> torch.Tensor:
    """``view`` with its fixed-zero outer parts zeroed (no copy when there are none)."""
    if not slot.zero_outer:
        return view
    keep = torch.ones(slot.outer, dtype=view.dtype, device=view.device)
    keep[list(slot.zero_outer)] = 0
    shape = [1] * view.ndim
    shape[dim - 1] = slot.outer
    return view * keep.view(shape)


def expand_mask(m: torch.Tensor, slot: Slot, t: torch.Tensor) -> torch.Tensor:
    """Group mask ``[n]`` -> a float mask broadcastable to ``t`` (fixed zeros stay zero)."""
    n = m.shape[0]
    full = m.to(torch.float32).view(1, n, 1).expand(slot.outer, n, slot.inner).clone()
    if slot.zero_outer:
        full[list(slot.zero_outer)] = 0
    flat = full.reshape(-1)
    if t.ndim == 1:
        return flat
    return flat.view(-1, 1) if slot.axis == 0 else flat.view(1, -1)


def reduce_slot(elem: torch.Tensor, slot: Slot) -> torch.Tensor:
    """Sum an element-wise quantity of one tensor over each group -> ``[n]`` (fixed zeros left out)."""
    view, dim = _axis_view(elem, slot)
    view = _fixed_part(view, slot, dim)
    return view.sum(dim=[d for d in range(view.ndim) if d != dim])


def select_slot(t: torch.Tensor, slot: Slot, index: torch.Tensor) -> torch.Tensor:
    """The groups ``index`` (current positions) of one tensor, as a new tensor."""
    view, dim = _axis_view(t, slot)
    picked = view.index_select(dim, index.to(t.device))
    shape = list(t.shape)
    shape[slot.axis] = slot.outer * index.numel() * slot.inner
    return picked.reshape(shape)


def create_param_masks(
    params: dict[str, torch.Tensor],
    keep: GroupMasks,
    present: GroupMasks,
    layout: VitLayout | int,
    *,
    skip_full: bool = True,
) -> dict[str, torch.Tensor]:
    """Per-tensor float masks (broadcastable to the tensor, on its device) for the kept groups.

    Args:
        params: name -> tensor of the (possibly compacted) model.
        keep: groups to keep, original index space.
        present: groups the model physically holds.
        layout: where the groups live (an int: the head_dim of a plain timm ViT, ``Attention`` + ``Mlp``).
        skip_full: leave out tensors whose groups are all kept (a tensor with fixed zeros is never left out).
    """
    if isinstance(layout, int):
        layout = plain_vit_layout(keep, layout)
    heads, neurons = current_masks(keep, present)
    out: dict[str, torch.Tensor] = {}
    for b in range(layout.depth):
        for kind, m in (("head", heads[b]), ("neuron", neurons[b])):
            for slot in layout.slots(kind):
                t = params.get(f"blocks.{b}.{slot.name}")
                if t is None or (skip_full and bool(m.all()) and not slot.zero_outer):
                    continue
                out[f"blocks.{b}.{slot.name}"] = expand_mask(m, slot, t).to(device=t.device, dtype=t.dtype)
    return out


def plain_vit_layout(keep: GroupMasks, head_dim: int) -> VitLayout:
    """The layout of a plain timm ViT (``Attention`` + ``Mlp``) with ``keep``'s shape."""
    d = head_dim
    heads = (Slot("attn.qkv.weight", "head", 0, 3, d), Slot("attn.qkv.bias", "head", 0, 3, d),
             Slot("attn.proj.weight", "head", 1, 1, d))
    neurons = (Slot("mlp.fc1.weight", "neuron", 0), Slot("mlp.fc1.bias", "neuron", 0),
               Slot("mlp.fc2.weight", "neuron", 1))
    return VitLayout(depth=keep.heads.shape[0], num_heads=keep.heads.shape[1], head_dim=d, embed_dim=0,
                     mlp_hidden=keep.neurons.shape[1], head_slots=heads, neuron_slots=neurons)


def block_tensors(params: dict[str, torch.Tensor], layout: VitLayout, b: int) -> dict[str, torch.Tensor | None]:
    """Block ``b``'s group-carrying tensors by slot name (relative to the block)."""
    return {s.name: params.get(f"blocks.{b}.{s.name}") for s in layout.all_slots()}


def reduce_groups(elem: dict[str, torch.Tensor | None], layout: VitLayout, kind: str, n: int) -> torch.Tensor:
    """Sum an element-wise quantity (slot name -> tensor) over each group of ``kind`` -> ``[n]``."""
    total = None
    for slot in layout.slots(kind):
        t = elem.get(slot.name)
        if t is not None:
            part = reduce_slot(t, slot)
            total = part if total is None else total + part
    if total is None:
        some = next((t for t in elem.values() if t is not None), None)
        return torch.zeros(n, device=some.device if some is not None else "cpu")
    return total


def group_norms(params: dict[str, torch.Tensor], layout: VitLayout, b: int,
                present: GroupMasks) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 norm of each head and each neuron of block ``b`` (current positions)."""
    t = block_tensors(params, layout, b)
    sq = {k: (v.detach().float() ** 2 if v is not None else None) for k, v in t.items()}
    nh, nn_ = int(present.heads[b].sum()), int(present.neurons[b].sum())
    return reduce_groups(sq, layout, "head", nh).sqrt(), reduce_groups(sq, layout, "neuron", nn_).sqrt()


def fixed_zero_masks(params: dict[str, torch.Tensor], layout: VitLayout) -> dict[str, torch.Tensor]:
    """Masks of the fixed zeros alone (EVA's k bias), every group kept."""
    out = {}
    for b in range(layout.depth):
        for slot in layout.all_slots():
            t = params.get(f"blocks.{b}.{slot.name}")
            if t is not None and slot.zero_outer:
                m = torch.ones(group_count(t, slot), dtype=torch.bool)
                out[f"blocks.{b}.{slot.name}"] = expand_mask(m, slot, t).to(device=t.device, dtype=t.dtype)
    return out


def model_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """name -> parameter of a (possibly DDP/compiled) ViT, names as in its state dict."""
    return dict(unwrap_model(model).named_parameters())


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain timm module under DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


@torch.no_grad()
def apply_param_masks_(params: dict[str, torch.Tensor], pmasks: dict[str, torch.Tensor]) -> None:
    """Zero masked weights in place (after every optimizer step)."""
    for name, m in pmasks.items():
        params[name].mul_(m)


@torch.no_grad()
def mask_grads_(params: dict[str, torch.Tensor], pmasks: dict[str, torch.Tensor]) -> None:
    """Zero the gradients of masked weights in place (before the optimizer step)."""
    for name, m in pmasks.items():
        g = params[name].grad
        if g is not None:
            g.mul_(m)
