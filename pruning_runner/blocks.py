"""Which timm blocks the runner can prune exactly, where their heads and neurons live, and how to resize them.

A prunable tensor is described by a :class:`Slot`: one axis of the tensor is laid out as
``(outer, n, inner)`` with the group index on ``n``. That one description covers every family:

- attention (timm ``Attention`` / ``AttentionRope``): ``attn.qkv.weight`` rows ``(3, H, head_dim)``,
  ``attn.qkv.bias`` likewise, ``attn.proj.weight`` columns ``(1, H, head_dim)``. Per-head norms
  (``q_norm`` / ``k_norm`` over ``head_dim``) are shared by all heads and stay as they are.
- EVA attention (timm ``EvaAttention``: ``q_bias`` / ``v_bias`` beside a bias-free ``qkv``, k bias fixed
  at zero): converted on construction to timm's ``AttentionRope`` with the same weights and the fused
  bias ``cat(q_bias, 0, v_bias)``; its k third is a fixed zero (``zero_outer``), never trained. This is
  needed because ``EvaAttention.forward`` reshapes its output to the token width and so cannot run with
  fewer heads; ``AttentionRope``'s forward is the same computation with the width of its heads.
- MLP (timm ``Mlp``): ``fc1`` rows, ``fc1`` bias, ``fc2`` columns.
- gated MLP, packed (timm ``GluMlp``, ``SwiGLUPacked``): neuron ``j`` is row ``j`` of both halves of
  ``fc1`` (``(2, M, 1)``) and column ``j`` of ``fc2``.
- gated MLP, split (timm ``SwiGLU``): rows of ``fc1_g`` and ``fc1_x``, columns of ``fc2``.

Anything else whose heads or neurons are pruned (a scale-norm across heads or neurons, gated
attention, separate q/k/v projections, grouped-query attention, another attention or MLP class) is
refused up front with the module named.

Example:
    >>> Slot("mlp.fc1.weight", "neuron", axis=0, outer=2).per_group_fraction
    1.0
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ckpttool.errors import InvalidArgumentError

KINDS = ("head", "neuron")


@dataclass(frozen=True)
class Slot:
    """One tensor of a block that carries groups: its axis ``axis`` is ``(outer, n, inner)``, groups on ``n``."""

    name: str  # relative to the block, e.g. "attn.qkv.weight"
    kind: str  # "head" | "neuron"
    axis: int  # tensor axis that carries the groups (0: rows / a vector, 1: columns)
    outer: int = 1  # e.g. 3 for q, k, v; 2 for a packed gate and value
    inner: int = 1  # e.g. head_dim
    zero_outer: tuple[int, ...] = ()  # outer parts that are fixed zeros (EVA's k bias): never trained, never counted

    @property
    def per_group_fraction(self) -> float:
        """Fraction of a group's entries in this tensor that are real parameters (not fixed zeros)."""
        return 1.0 - len(self.zero_outer) / self.outer


@dataclass(frozen=True)
class BlockKinds:
    """What the blocks of a model hold (the same in every block)."""

    num_heads: int  # heads per block (0: attention not prunable and not targeted)
    head_dim: int
    mlp_hidden: int  # MLP neurons per block (0: MLP not prunable and not targeted)
    head_slots: tuple[Slot, ...]
    neuron_slots: tuple[Slot, ...]


def _refuse(arch: str, where: str, what: str, instead: str | None = None) -> InvalidArgumentError:
    flag = "head" if instead == "heads" else "mlp"
    way_out = f"prune only the {instead} (--target {flag}) or " if instead else ""
    return InvalidArgumentError(
        f"{arch!r} has {where} ({what}), which structured pruning cannot resize exactly; "
        f"{way_out}use a ViT without it"
    )


def _class_name(module: nn.Module) -> str:
    return f"{type(module).__name__} from {type(module).__module__}"


def _is_set(module) -> bool:
    return module is not None and not isinstance(module, nn.Identity)


def _attention_classes():
    from timm.layers.attention import Attention, AttentionRope

    return (Attention, AttentionRope)


def _mlp_classes():
    from timm.layers.mlp import GluMlp, Mlp, SwiGLU

    return Mlp, GluMlp, SwiGLU


def attention_problem(attn: nn.Module) -> tuple[str, str] | None:
    """(sub-module path, why) when ``attn``'s heads cannot be grouped exactly; None when they can."""
    if getattr(attn, "qkv", None) is None and getattr(attn, "q_proj", None) is not None:
        return ".q_proj", "separate q/k/v projections"
    if type(attn) not in _attention_classes():
        return "", _class_name(attn)
    if getattr(attn, "num_kv_heads", attn.num_heads) != attn.num_heads:
        return ".k_proj", "grouped-query attention"
    if _is_set(getattr(attn, "norm", None)):
        return ".norm", "scale-norm over the attention output (scale_attn_norm)"
    if _is_set(getattr(attn, "gate", None)):
        return ".gate", "gated attention"
    for name in ("q_norm", "k_norm"):
        norm = getattr(attn, name, None)
        if _is_set(norm) and any(p.shape != (attn.head_dim,) for p in norm.parameters()):
            return f".{name}", "a norm whose parameters differ per head"
    return None


def mlp_problem(mlp: nn.Module) -> tuple[str, str] | None:
    """(sub-module path, why) when ``mlp``'s neurons cannot be grouped exactly; None when they can."""
    mlp_cls, glu_cls, swiglu_cls = _mlp_classes()
    if type(mlp) not in (mlp_cls, glu_cls, swiglu_cls):
        return "", _class_name(mlp)
    if _is_set(getattr(mlp, "norm", None)):
        return ".norm", "scale-norm inside the MLP (scale_mlp_norm)"
    for name in ("fc1", "fc1_g", "fc1_x", "fc2"):
        layer = getattr(mlp, name, None)
        if layer is not None and type(layer) is not nn.Linear:
            return f".{name}", f"a {type(layer).__name__}, not a Linear layer"
    if type(mlp) is glu_cls and (mlp.chunk_dim != -1 or mlp.fc1.out_features % 2):
        return ".fc1", "a gate and value split the runner does not know"
    return None


def head_slots(attn: nn.Module) -> tuple[Slot, ...]:
    d = attn.head_dim
    slots = [Slot("attn.qkv.weight", "head", 0, 3, d)]
    if attn.qkv.bias is not None:
        fixed = (1,) if getattr(attn, "_ckpttool_fixed_k_bias", False) else ()
        slots.append(Slot("attn.qkv.bias", "head", 0, 3, d, fixed))
    slots.append(Slot("attn.proj.weight", "head", 1, 1, d))
    return tuple(slots)


def neuron_slots(mlp: nn.Module) -> tuple[Slot, ...]:
    mlp_cls, glu_cls, _ = _mlp_classes()
    if type(mlp) in (mlp_cls, glu_cls):
        outer = 2 if type(mlp) is glu_cls else 1
        firsts = [Slot("mlp.fc1.weight", "neuron", 0, outer)]
        if mlp.fc1.bias is not None:
            firsts.append(Slot("mlp.fc1.bias", "neuron", 0, outer))
    else:  # SwiGLU: gate and value as two Linear layers
        firsts = []
        for name in ("fc1_g", "fc1_x"):
            firsts.append(Slot(f"mlp.{name}.weight", "neuron", 0))
            if getattr(mlp, name).bias is not None:
                firsts.append(Slot(f"mlp.{name}.bias", "neuron", 0))
    return (*firsts, Slot("mlp.fc2.weight", "neuron", 1))


def mlp_width(mlp: nn.Module) -> int:
    """Neurons of a recognised MLP (a packed gated MLP's fc1 holds two rows per neuron)."""
    return mlp.fc2.in_features


def resolve_block_kinds(model: nn.Module, *, target: str = "both", arch: str = "model") -> BlockKinds:
    """Recognise every block's attention and MLP; refuse, naming the module, what ``target`` would prune inexactly.

    Kinds that are not targeted are left alone (counted when recognised, else 0 groups).

    Raises:
        InvalidArgumentError: a block the runner cannot group exactly (e.g. ``blocks.0.mlp.norm``).
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None or not len(blocks):
        raise InvalidArgumentError(f"{arch!r} is not a ViT with transformer blocks (model.blocks)")
    usable = {}
    for kind, part, problem, targeted in (
        ("head", "attn", attention_problem, target in ("head", "both")),
        ("neuron", "mlp", mlp_problem, target in ("mlp", "both")),
    ):
        modules = [getattr(blk, part, None) for blk in blocks]
        issues = [(b, ("", "missing") if m is None else problem(m)) for b, m in enumerate(modules)]
        first = next(((b, i) for b, i in issues if i is not None), None)
        if first is not None and targeted:
            b, (sub, why) = first
            instead = None if target != "both" else ("MLP neurons" if kind == "head" else "heads")
            raise _refuse(arch, f"blocks.{b}.{part}{sub}", why, instead)
        usable[kind] = modules if first is None else None  # a kind not targeted and not prunable: left alone
    attns, mlps = usable["head"], usable["neuron"]
    shapes = {(
        (a.num_heads, a.head_dim, head_slots(a)) if attns else (0, 0, ()),
        (mlp_width(m), neuron_slots(m)) if mlps else (0, ()),
    ) for a, m in zip(attns or [None] * len(blocks), mlps or [None] * len(blocks), strict=True)}
    if len(shapes) != 1:
        raise InvalidArgumentError(f"{arch!r} has blocks of different shapes; the runner prunes uniform ViTs only")
    (heads, head_dim, hs), (hidden, ns) = shapes.pop()
    return BlockKinds(heads, head_dim, hidden, hs, ns)


# ---------------------------------------------------------------------------------------- EVA attention


def convert_eva_attention_(model: nn.Module) -> nn.Module:
    """Replace every fused ``EvaAttention`` by timm's ``AttentionRope`` holding the same weights (in place).

    The fused bias is ``cat(q_bias, 0, v_bias)``; its k third is marked as a fixed zero so masks keep
    it at zero (EVA's k bias is a constant zero buffer). Outputs are unchanged.
    """
    from timm.layers import AttentionRope
    from timm.models.eva import EvaAttention

    for blk in getattr(model, "blocks", ()):
        attn = getattr(blk, "attn", None)
        if type(attn) is not EvaAttention or attn.qkv is None:
            continue
        w = attn.qkv.weight
        new = AttentionRope(attn.qkv.in_features, num_heads=attn.num_heads, qkv_bias=attn.q_bias is not None,
                            num_prefix_tokens=attn.num_prefix_tokens, attn_head_dim=attn.head_dim,
                            proj_bias=attn.proj.bias is not None, rotate_half=attn.rotate_half,
                            device=w.device, dtype=w.dtype)
        new.q_norm, new.k_norm, new.norm, new.gate = attn.q_norm, attn.k_norm, attn.norm, attn.gate
        new.attn_drop, new.proj_drop, new.proj = attn.attn_drop, attn.proj_drop, attn.proj
        new.fused_attn, new.scale = attn.fused_attn, attn.scale
        with torch.no_grad():
            new.qkv.weight.copy_(w)
            if attn.q_bias is not None:
                new.qkv.bias.copy_(torch.cat([attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias]))
                new._ckpttool_fixed_k_bias = True
        blk.attn = new
    return model


def convert_eva_state_dict(state_dict: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """An EVA state dict (``attn.q_bias`` / ``attn.v_bias``) in the converted model's keys (``attn.qkv.bias``)."""
    out = dict(state_dict)
    for key in list(state_dict):
        if not key.endswith(".attn.q_bias"):
            continue
        prefix = key[: -len("q_bias")]
        if prefix + "qkv.bias" in expected and prefix + "qkv.bias" not in out and prefix + "v_bias" in out:
            q, v = out.pop(prefix + "q_bias"), out.pop(prefix + "v_bias")
            out[prefix + "qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
    return out


# ---------------------------------------------------------------------------------------- resizing


def _linear_like(layer: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    w = layer.weight
    return nn.Linear(in_features, out_features, bias=layer.bias is not None, device=w.device, dtype=w.dtype)


def resize_attention_(attn: nn.Module, heads: int, *, where: str, arch: str) -> None:
    """Give ``attn`` ``heads`` heads (head_dim unchanged); weights of the new layers are uninitialised."""
    if heads == attn.num_heads:
        return
    issue = attention_problem(attn)
    if issue is not None:
        raise _refuse(arch, f"{where}{issue[0]}", issue[1])
    d, dim = attn.head_dim, attn.qkv.in_features
    attn.qkv = _linear_like(attn.qkv, dim, 3 * heads * d)
    attn.proj = _linear_like(attn.proj, heads * d, attn.proj.out_features)
    attn.num_heads = heads
    attn.attn_dim = heads * d
    if hasattr(attn, "num_kv_heads"):  # AttentionRope (fused qkv: one kv head per head)
        attn.num_kv_heads = heads
        attn.kv_dim = heads * d


def resize_mlp_(mlp: nn.Module, hidden: int, *, where: str, arch: str) -> None:
    """Give ``mlp`` ``hidden`` neurons; weights of the new layers are uninitialised."""
    issue = mlp_problem(mlp)
    if issue is not None:
        raise _refuse(arch, f"{where}{issue[0]}", issue[1])
    _, glu_cls, _ = _mlp_classes()
    for name in ("fc1", "fc1_g", "fc1_x"):
        layer = getattr(mlp, name, None)
        if layer is not None:
            rows = 2 * hidden if type(mlp) is glu_cls else hidden
            setattr(mlp, name, _linear_like(layer, layer.in_features, rows))
    mlp.fc2 = _linear_like(mlp.fc2, hidden, mlp.fc2.out_features)
