"""Masks -> a physically smaller timm ViT with the same outputs.

Each block keeps ``head_dim``; its ``attn.qkv`` / ``attn.proj`` Linear layers shrink to the kept heads
(``attn.num_heads`` / ``attn.attn_dim`` updated), ``mlp.fc1`` (or ``fc1_g`` / ``fc1_x``) / ``mlp.fc2`` to
the kept neurons (:mod:`pruning_runner.blocks` knows each family's layers).
Which original groups a model holds is a :class:`GroupMasks` ``present``; the architecture is also
written as text (``blocks.0.attn.num_heads:[3]***blocks.0.mlp.fc1:[40]***...``, in the spirit of
timm's ``_prune.py``) in exported files, so a pruned model loads without pickles.

Example:
    >>> # model = load_compact_model("runs/x/final_compact.safetensors")
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ckpttool.errors import CheckpointFormatError
from pruning_runner.blocks import resize_attention_, resize_mlp_, resolve_block_kinds
from pruning_runner.groups import GroupMasks, VitLayout, select_slot
from pruning_runner.model import ModelSpec, create_vit, parse_init_metadata

_SEP = "***"


def _positions(sub: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Current positions (within ``present``) of the groups in ``sub``."""
    return sub[present].nonzero().reshape(-1)


def select_state_dict(
    state_dict: dict[str, torch.Tensor],
    present_from: GroupMasks,
    present_to: GroupMasks,
    layout: VitLayout,
) -> dict[str, torch.Tensor]:
    """Slice a state dict of structure ``present_from`` down to ``present_to`` (a subset).

    Non-group tensors are passed through (same objects); group tensors are new tensors.
    """
    out = dict(state_dict)
    for b in range(present_from.heads.shape[0]):
        for kind, to, frm in (("head", present_to.heads[b], present_from.heads[b]),
                              ("neuron", present_to.neurons[b], present_from.neurons[b])):
            index = _positions(to, frm)
            for slot in layout.slots(kind):
                name = f"blocks.{b}.{slot.name}"
                if name in state_dict:
                    out[name] = select_slot(state_dict[name], slot, index)
    return out


def resize_vit_(model: nn.Module, heads: list[int], hidden: list[int], *, arch: str = "model") -> nn.Module:
    """Give block ``b`` ``heads[b]`` heads and ``hidden[b]`` MLP neurons (new layers' weights uninitialised).

    Load a state dict afterwards. Only what changes is resized.

    Raises:
        InvalidArgumentError: a block to resize holds a layer that cannot be resized exactly (named).
    """
    kinds = resolve_block_kinds(model, target="none", arch=arch)
    for b, blk in enumerate(model.blocks):
        if heads[b] != kinds.num_heads:
            resize_attention_(blk.attn, heads[b], where=f"blocks.{b}.attn", arch=arch)
        if hidden[b] != kinds.mlp_hidden:
            resize_mlp_(blk.mlp, hidden[b], where=f"blocks.{b}.mlp", arch=arch)
    return model


def create_compact_vit(spec: ModelSpec, present: GroupMasks, *, device: torch.device | str | None = None) -> nn.Module:
    """A timm ViT holding only the ``present`` groups (random weights; ``device="meta"``: shapes only)."""
    model = create_vit(spec, device=device)
    return resize_vit_(model, present.heads.sum(1).tolist(), present.neurons.sum(1).tolist(), arch=spec.arch)


@torch.no_grad()
def compact_model(model: nn.Module, spec: ModelSpec, present_from: GroupMasks, keep: GroupMasks,
                  layout: VitLayout | None = None) -> nn.Module:
    """A new, smaller model holding the groups in ``keep`` (subset of ``present_from``) with ``model``'s weights.

    ``layout`` is the ORIGINAL model's (by default: read from a fresh full model of ``spec``).
    """
    if layout is None:
        layout = VitLayout.from_model(create_vit(spec, device="meta"), target="none")
    small = create_compact_vit(spec, keep)
    sd = select_state_dict(model.state_dict(), present_from, keep, layout)
    small.load_state_dict(sd, strict=True)
    return small.to(next(model.parameters()).device)


def architecture_text(present: GroupMasks) -> str:
    """Per-block head counts and MLP widths as text: ``blocks.0.attn.num_heads:[3]***blocks.0.mlp.fc1:[40]``."""
    parts = []
    for b in range(present.heads.shape[0]):
        parts.append(f"blocks.{b}.attn.num_heads:[{int(present.heads[b].sum())}]")
        parts.append(f"blocks.{b}.mlp.fc1:[{int(present.neurons[b].sum())}]")
    return _SEP.join(parts)


def parse_architecture_text(text: str) -> tuple[list[int], list[int]]:
    """Inverse of :func:`architecture_text`: (heads per block, MLP widths per block)."""
    heads: dict[int, int] = {}
    hidden: dict[int, int] = {}
    for part in text.split(_SEP):
        key, _, shape = part.partition(":")
        value = int(shape.strip("[]"))
        b = int(key.split(".")[1])
        if key.endswith("attn.num_heads"):
            heads[b] = value
        elif key.endswith("mlp.fc1"):
            hidden[b] = value
    depth = len(heads)
    return [heads[b] for b in range(depth)], [hidden[b] for b in range(depth)]


def save_compact_model(path: str | Path, model: nn.Module, spec: ModelSpec, present: GroupMasks,
                       *, extra: dict | None = None) -> str:
    """Write a compacted model as safetensors with what is needed to rebuild it. Returns the sha256."""
    from ckpttool.saving import save_checkpoint

    metadata = {
        **spec.to_dict(),
        "timm_name": spec.arch,
        "architecture": architecture_text(present),
        "head_index": [present.heads[b].nonzero().reshape(-1).tolist() for b in range(present.heads.shape[0])],
        "neuron_index": [present.neurons[b].nonzero().reshape(-1).tolist() for b in range(present.neurons.shape[0])],
        **(extra or {}),
    }
    sd = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_checkpoint(Path(path), sd, metadata=metadata)


def load_compact_model(path: str | Path) -> nn.Module:
    """Rebuild a model written by :func:`save_compact_model` (safe loading, strict).

    Example:
        >>> model = load_compact_model("runs/x/final_compact.safetensors")  # doctest: +SKIP
    """
    from ckpttool.loading import load_checkpoint
    from ckpttool.torch_state import load_state_dict

    with load_checkpoint(path) as ckpt:
        md = parse_init_metadata(dict(ckpt.metadata or {}))
    if "architecture" not in md:
        raise CheckpointFormatError(f"{path} has no 'architecture' metadata: not a compact export of run-prune")
    spec = ModelSpec.from_dict(md)
    heads, hidden = parse_architecture_text(md["architecture"])
    model = resize_vit_(create_vit(spec), heads, hidden, arch=spec.arch)
    model.load_state_dict(load_state_dict(path), strict=True)
    return model.eval()
