"""Prunable groups of a timm ViT and their masks.

Head ``h`` of block ``b``: its rows of q, k and v in ``blocks.b.attn.qkv`` (weight viewed
``[3, H, d, dim]``, and bias) plus its columns of ``blocks.b.attn.proj.weight``.
MLP neuron ``j`` of block ``b``: row ``j`` of ``blocks.b.mlp.fc1`` (weight, bias) plus column ``j``
of ``blocks.b.mlp.fc2.weight``.

Masks always live in the ORIGINAL index space (``[depth, H]`` and ``[depth, M]`` bool tensors).
A model may be physically compacted; ``present`` says which original groups it still holds, in
increasing order, so current position ``i`` of block ``b`` is original group
``present.heads[b].nonzero()[i]``.

Example:
    >>> layout = VitLayout(depth=2, num_heads=4, head_dim=8, embed_dim=32, mlp_hidden=64)
    >>> GroupMasks.full(layout).heads.shape
    torch.Size([2, 4])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

GROUP_KINDS = ("head", "neuron")


@dataclass(frozen=True)
class VitLayout:
    """Shape of the original (uncompacted) ViT's prunable structure."""

    depth: int  # number of transformer blocks
    num_heads: int  # heads per block in the original model
    head_dim: int  # per-head width (kept unchanged by compaction)
    embed_dim: int  # token width
    mlp_hidden: int  # MLP hidden neurons per block in the original model

    @classmethod
    def from_model(cls, model: nn.Module) -> VitLayout:
        blk = model.blocks[0]
        return cls(
            depth=len(model.blocks),
            num_heads=blk.attn.num_heads,
            head_dim=blk.attn.head_dim,
            embed_dim=blk.attn.qkv.in_features,
            mlp_hidden=blk.mlp.fc1.out_features,
        )

    def head_params(self, qkv_bias: bool = True) -> int:
        """Parameters one head carries (q, k, v rows and biases plus proj columns)."""
        return 3 * self.head_dim * self.embed_dim + (3 * self.head_dim if qkv_bias else 0) + self.embed_dim * self.head_dim

    def neuron_params(self) -> int:
        """Parameters one MLP neuron carries (fc1 row and bias plus fc2 column)."""
        return 2 * self.embed_dim + 1


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


def block_param_names(b: int) -> dict[str, str]:
    """Names of the tensors that carry the groups of block ``b``."""
    p = f"blocks.{b}."
    return {
        "qkv_w": p + "attn.qkv.weight",
        "qkv_b": p + "attn.qkv.bias",
        "proj_w": p + "attn.proj.weight",
        "fc1_w": p + "mlp.fc1.weight",
        "fc1_b": p + "mlp.fc1.bias",
        "fc2_w": p + "mlp.fc2.weight",
    }


def _head_expand(m: torch.Tensor, head_dim: int, kind: str) -> torch.Tensor:
    h = m.shape[0]
    if kind == "qkv_w":
        return m.view(1, h, 1).expand(3, h, head_dim).reshape(-1, 1)
    if kind == "qkv_b":
        return m.view(1, h, 1).expand(3, h, head_dim).reshape(-1)
    if kind == "proj_w":
        return m.view(h, 1).expand(h, head_dim).reshape(1, -1)
    raise KeyError(kind)


def _neuron_expand(m: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "fc1_w":
        return m.view(-1, 1)
    if kind == "fc1_b":
        return m
    if kind == "fc2_w":
        return m.view(1, -1)
    raise KeyError(kind)


def create_param_masks(
    params: dict[str, torch.Tensor],
    keep: GroupMasks,
    present: GroupMasks,
    head_dim: int,
    *,
    skip_full: bool = True,
) -> dict[str, torch.Tensor]:
    """Per-tensor float masks (broadcastable to the tensor, on its device) for the kept groups.

    Args:
        params: name -> tensor of the (possibly compacted) model.
        keep: groups to keep, original index space.
        present: groups the model physically holds.
        head_dim: per-head width.
        skip_full: leave out tensors whose groups are all kept.
    """
    heads, neurons = current_masks(keep, present)
    out: dict[str, torch.Tensor] = {}
    for b, (mh, mn) in enumerate(zip(heads, neurons, strict=True)):
        names = block_param_names(b)
        if not (skip_full and bool(mh.all())):
            for kind in ("qkv_w", "qkv_b", "proj_w"):
                t = params.get(names[kind])
                if t is not None:
                    out[names[kind]] = _head_expand(mh, head_dim, kind).to(device=t.device, dtype=t.dtype)
        if not (skip_full and bool(mn.all())):
            for kind in ("fc1_w", "fc1_b", "fc2_w"):
                t = params.get(names[kind])
                if t is not None:
                    out[names[kind]] = _neuron_expand(mn, kind).to(device=t.device, dtype=t.dtype)
    return out


def block_tensors(params: dict[str, torch.Tensor], b: int) -> dict[str, torch.Tensor | None]:
    """The six group-carrying tensors of block ``b`` (``qkv_b``/``fc1_b`` may be None)."""
    return {kind: params.get(name) for kind, name in block_param_names(b).items()}


def reduce_heads(elem: dict[str, torch.Tensor | None], head_dim: int) -> torch.Tensor:
    """Sum an element-wise quantity over each head's q/k/v rows, biases and proj columns -> ``[H]``."""
    qkv_w = elem["qkv_w"]
    dim = qkv_w.shape[1]
    h = qkv_w.shape[0] // (3 * head_dim)
    total = qkv_w.reshape(3, h, head_dim, dim).sum(dim=(0, 2, 3))
    if elem.get("qkv_b") is not None:
        total = total + elem["qkv_b"].reshape(3, h, head_dim).sum(dim=(0, 2))
    proj = elem["proj_w"]
    total = total + proj.reshape(proj.shape[0], h, head_dim).sum(dim=(0, 2))
    return total


def reduce_neurons(elem: dict[str, torch.Tensor | None]) -> torch.Tensor:
    """Sum an element-wise quantity over each neuron's fc1 row, fc1 bias and fc2 column -> ``[M]``."""
    total = elem["fc1_w"].sum(dim=1) + elem["fc2_w"].sum(dim=0)
    if elem.get("fc1_b") is not None:
        total = total + elem["fc1_b"]
    return total


def group_sizes(params: dict[str, torch.Tensor], b: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Number of elements per head and per neuron of block ``b`` (for fractions)."""
    t = block_tensors(params, b)
    ones = {k: (torch.ones_like(v) if v is not None else None) for k, v in t.items()}
    return reduce_heads(ones, head_dim), reduce_neurons(ones)


def group_norms(params: dict[str, torch.Tensor], b: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 norm of each head and each neuron of block ``b`` (current positions)."""
    t = block_tensors(params, b)
    sq = {k: (v.detach().float() ** 2 if v is not None else None) for k, v in t.items()}
    return reduce_heads(sq, head_dim).sqrt(), reduce_neurons(sq).sqrt()


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
