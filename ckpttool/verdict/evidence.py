"""Evidence that one module of a trained checkpoint never trained, whatever its group's other tensors say.

A group's status is the sum of its tensors: any trained tensor makes it trained. Partial loads get
through that sum. A loader that renames only ``.weight`` keys leaves matrices at their init beside
trained biases and norms; a reset norm sits at exactly 1/0 in a block whose convs are trained; a
position table re-drawn on N(0, 0.02) shares the ``embeddings`` group with a trained LayerNorm. Each
rule below names tensors whose own module is untouched, and the verdict calls their group untouched
however trained its other tensors look (``judgement``):

- **exact init** (``exact_init_tensors``): an init-like matrix that sits exactly on a standard init
  (``_init_fit``: uniform, truncated normal, N(0, 1), N(0, 0.02), N(0, 0.01)) while no matrix of its
  own module (the tensor's parent, ``blocks.3.attn.qkv``) shows training, and while some matrix
  elsewhere in the file does (a file whose matrices all stayed put, as in a GroupNorm net where only
  the gains moved, says nothing about any one of them) and, where the same matrix exists in sibling
  blocks (``blocks.#.attn.qkv.weight``), most of them trained: a short or gentle training can leave
  the deeper blocks of a small ViT exactly on N(0, 0.02) while their norms moved, and then the
  blocks that did not move are the many, not the few a loader skipped. Inside a group that shows training (another
  matrix, a bias, a norm that ran) it must hold ``SMALL_MATRIX`` entries: a small kernel can keep its
  uniform init through real training (mini-Xception's 288-entry depthwise ``separable_conv2d_5``
  beside its trained pointwise conv), while a re-drawn matrix of a transformer or a wide conv is far
  larger. An embedding table on N(0, 1) is
  no evidence: rows move by about the learning rate per use, invisible at unit scale, and trained
  tables still fit N(0, 1) (attacut, g2p-en, g2pm, UniRep in the wild corpus);
- **reset norms** (``reset_norm_tensors``): a norm layer exactly at its init (gain 1 and bias 0, or a
  BatchNorm whose running statistics never moved while others did) where most of the same norms in
  sibling blocks (the same name with other block indices) moved. Real training moves every gain it
  reaches; in the wild corpus only CHGNet's dead ``angle_layers.2`` (proven never trained) does this.

Pure functions of the statistics and the group layout; numpy-free.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ckpttool.verdict._init_fit import SMALL_MATRIX
from ckpttool.verdict.context import NEVER_RAN_NOTE
from ckpttool.verdict.grouping import is_embedding_table

if TYPE_CHECKING:  # pragma: no cover
    from ckpttool.verdict.stats import TensorStats

UNIT_NORMAL = "normal(0, 1)"
_NEVER_RAN_PREFIX = NEVER_RAN_NOTE.split("{")[0]
_INDEX = re.compile(r"(?:(?<=\.)|^)\d+(?=\.)|(?<=[A-Za-z])_?\d+(?=\.)")


def module_of(name: str) -> str:
    """The module a tensor belongs to: its name without the last component.

    Example:
        >>> module_of("blocks.3.attn.qkv.weight"), module_of("pos_embed")
        ('blocks.3.attn.qkv', 'pos_embed')
    """
    return name.rpartition(".")[0] or name


def role_of(name: str) -> str:
    """A tensor's name with every block index replaced by ``#``: the same tensor in sibling blocks.

    Example:
        >>> role_of("blocks.3.norm1.weight"), role_of("batch_normalization_13.weight")
        ('blocks.#.norm#.weight', 'batch_normalization#.weight')
    """
    return _INDEX.sub("#", name)


def _is_matrix(s: TensorStats) -> bool:
    return s.spectral_ratio is not None


def exact_init_tensors(stats: Sequence[TensorStats], group: Mapping[str, str]) -> dict[str, str]:
    """``{name: why}`` for the matrices whose module sits exactly on a standard init (rule above).

    Args:
        stats: the tensors judged (head left out), in file order.
        group: every tensor's group (``assign_groups``).
    """
    trained = [s for s in stats if _is_matrix(s) and s.status == "trained"]
    if not trained:
        return {}
    trained_modules = {module_of(s.name) for s in trained}
    trained_groups = {group[s.name] for s in stats if s.status == "trained"}
    siblings: dict[str, list[TensorStats]] = {}
    for s in stats:
        if _is_matrix(s):
            siblings.setdefault(role_of(s.name), []).append(s)
    out = {}
    for s in stats:
        if s.status != "init-like" or not s.init_fit or module_of(s.name) in trained_modules:
            continue
        others = [t for t in siblings.get(role_of(s.name), ()) if t is not s]
        if len(others) >= 2 and 2 * sum(t.status == "trained" for t in others) <= len(others):
            continue  # most of the same layer in other blocks did not train either: under-training
        if s.init_fit == UNIT_NORMAL and is_embedding_table(s.name):
            continue
        if group[s.name] in trained_groups and s.numel < SMALL_MATRIX:
            continue
        out[s.name] = f"exactly {s.init_fit}"
    return out


def reset_norm_tensors(stats: Sequence[TensorStats]) -> dict[str, str]:
    """``{name: why}`` for norm layers exactly at their init where their siblings moved (rule above)."""
    by_name = {s.name: s for s in stats}
    siblings: dict[str, list[TensorStats]] = {}
    for s in stats:
        if len(s.shape) == 1 and s.name.endswith(".weight"):
            siblings.setdefault(role_of(s.name), []).append(s)
    out = {}
    for same in siblings.values():
        if len(same) < 3:
            continue
        at_init = [s for s in same if _is_constant(s, 1.0) and _bias_at_zero(by_name, s.name)]
        moved = len(same) - len(at_init)
        if at_init and 2 * moved >= len(same):
            for s in at_init:
                out[s.name] = f"norm at gain 1, bias 0; {moved} of {len(same)} like it moved"
    for s in stats:
        if s.note.startswith(_NEVER_RAN_PREFIX):
            out[s.name] = "BatchNorm never ran"
    return out


def _is_constant(s: TensorStats, value: float) -> bool:
    return s.nonfinite == 0 and s.min == value and s.max == value


def _bias_at_zero(by_name: Mapping[str, TensorStats], weight: str) -> bool:
    bias = by_name.get(weight[: -len("weight")] + "bias")
    return bias is None or _is_constant(bias, 0.0)


def untouched_evidence(stats: Sequence[TensorStats], group: Mapping[str, str]) -> dict[str, str]:
    """Every tensor that marks its module untouched, with why: both rules above."""
    return {**exact_init_tensors(stats, group), **reset_norm_tensors(stats)}
