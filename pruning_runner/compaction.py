"""Masks -> a physically smaller timm ViT with the same outputs.

Each block keeps ``head_dim``; its ``attn.qkv`` / ``attn.proj`` Linear layers shrink to the kept heads
(``attn.num_heads`` / ``attn.attn_dim`` updated), ``mlp.fc1`` / ``mlp.fc2`` to the kept neurons.
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
from pruning_runner.groups import GroupMasks, VitLayout, block_param_names
from pruning_runner.model import ModelSpec, check_prunable, create_vit, parse_init_metadata

_SEP = "***"


def _positions(sub: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Current positions (within ``present``) of the groups in ``sub``."""
    return sub[present].nonzero().reshape(-1)


def select_state_dict(
    state_dict: dict[str, torch.Tensor],
    present_from: GroupMasks,
    present_to: GroupMasks,
    head_dim: int,
) -> dict[str, torch.Tensor]:
    """Slice a state dict of structure ``present_from`` down to ``present_to`` (a subset).

    Non-group tensors are passed through (same objects); group tensors are new tensors.
    """
    out = dict(state_dict)
    for b in range(present_from.heads.shape[0]):
        n = block_param_names(b)
        hi = _positions(present_to.heads[b], present_from.heads[b])
        ni = _positions(present_to.neurons[b], present_from.neurons[b])
        h_from = int(present_from.heads[b].sum())
        w = state_dict[n["qkv_w"]]
        dim = w.shape[1]
        out[n["qkv_w"]] = w.reshape(3, h_from, head_dim, dim).index_select(1, hi.to(w.device)).reshape(-1, dim)
        if n["qkv_b"] in state_dict:
            bb = state_dict[n["qkv_b"]]
            out[n["qkv_b"]] = bb.reshape(3, h_from, head_dim).index_select(1, hi.to(bb.device)).reshape(-1)
        pw = state_dict[n["proj_w"]]
        out[n["proj_w"]] = pw.reshape(pw.shape[0], h_from, head_dim).index_select(1, hi.to(pw.device)).reshape(
            pw.shape[0], -1
        )
        out[n["fc1_w"]] = state_dict[n["fc1_w"]].index_select(0, ni.to(w.device))
        if n["fc1_b"] in state_dict:
            out[n["fc1_b"]] = state_dict[n["fc1_b"]].index_select(0, ni.to(w.device))
        out[n["fc2_w"]] = state_dict[n["fc2_w"]].index_select(1, ni.to(w.device))
    return out


def resize_vit_(model: nn.Module, heads: list[int], hidden: list[int]) -> nn.Module:
    """Replace each block's qkv/proj/fc1/fc2 by Linear layers for ``heads[b]`` heads and ``hidden[b]`` neurons.

    Weights of resized layers are left uninitialised-random; load a state dict afterwards.

    Raises:
        InvalidArgumentError: a block holds a scale-norm or gate that cannot be resized (named).
    """
    check_prunable(model)
    for b, blk in enumerate(model.blocks):
        attn = blk.attn
        d = attn.head_dim
        dim = attn.qkv.in_features
        if heads[b] != attn.num_heads:
            qkv, proj = attn.qkv, attn.proj
            attn.qkv = nn.Linear(dim, 3 * heads[b] * d, bias=qkv.bias is not None,
                                 device=qkv.weight.device, dtype=qkv.weight.dtype)
            attn.proj = nn.Linear(heads[b] * d, proj.out_features, bias=proj.bias is not None,
                                  device=proj.weight.device, dtype=proj.weight.dtype)
            attn.num_heads = heads[b]
            attn.attn_dim = heads[b] * d
        mlp = blk.mlp
        if hidden[b] != mlp.fc1.out_features:
            fc1, fc2 = mlp.fc1, mlp.fc2
            mlp.fc1 = nn.Linear(fc1.in_features, hidden[b], bias=fc1.bias is not None,
                                device=fc1.weight.device, dtype=fc1.weight.dtype)
            mlp.fc2 = nn.Linear(hidden[b], fc2.out_features, bias=fc2.bias is not None,
                                device=fc2.weight.device, dtype=fc2.weight.dtype)
    return model


def create_compact_vit(spec: ModelSpec, present: GroupMasks) -> nn.Module:
    """A timm ViT holding only the ``present`` groups (random weights)."""
    model = create_vit(spec)
    return resize_vit_(model, present.heads.sum(1).tolist(), present.neurons.sum(1).tolist())


@torch.no_grad()
def compact_model(model: nn.Module, spec: ModelSpec, present_from: GroupMasks, keep: GroupMasks) -> nn.Module:
    """A new, smaller model holding the groups in ``keep`` (subset of ``present_from``) with ``model``'s weights."""
    layout = VitLayout.from_model(model)
    small = create_compact_vit(spec, keep)
    sd = select_state_dict(model.state_dict(), present_from, keep, layout.head_dim)
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
    model = resize_vit_(create_vit(spec), heads, hidden)
    model.load_state_dict(load_state_dict(path), strict=True)
    return model.eval()
