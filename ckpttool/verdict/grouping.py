"""Tensor names -> module groups, the classifier head and the input layer.

A group is the unit the verdict reasons about: one numbered child of a container (``blocks.3``,
``layer2.1``, ``_blocks.5``, ``cnn.10``, ``encoder.layer.3``), one self-indexed module (``layer2``,
``conv3``), one layer of a multi-layer RNN (``lstm.l1``), or a top-level module (``patch_embed``,
``pos_embed``, ``norm``, ``stem``...). Grouping looks at the whole checkpoint (``assign_groups``):

- a prefix that every tensor shares (``bert.``, ``model.``) is a wrapper: groups are formed below it
  and keep it in their names (``bert.embeddings``, ``bert.encoder.layer.3``);
- a container whose only numbered child is ``0`` and holds 40% or more of the tensors (ALBERT's
  one shared layer) is split at that child's named sub-modules (``...albert_layers.0.attention`` / ``.ffn``), so that re-initialising
  one of them is not hidden inside a group that also holds trained weights;
- a top-level module without numbered children whose matrices sit in two or more child layers
  (chemprop's ``message_passing.W_i`` / ``W_h`` / ``W_o``) is split into those layers.

The head and the input layer are found by name here (``is_head_tensor``, ``is_input_group``); the
verdict adds position (first and last layers in module order) where names say nothing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Sequence

_CONTAINERS = frozenset(
    {"blocks", "block", "layers", "layer", "stages", "stage", "levels", "resblocks", "h",
     "encoder_layers", "decoder_layers", "network", "body", "trunk_blocks", "albert_layers"}
)
"""Containers that extend a group they appear in (``stages.1.blocks.0``); any module followed by a
number starts one (``features.3``, ``cnn.10``)."""

_SELF_INDEXED = re.compile(r"^(?:s|b|stage|block|layer|level|res|denseblock|denselayer|transition)_?\d+$")
"""Names that carry their own index and extend a group (ResNet ``layer2``, RegNet ``s1.b2``)."""

_NUMBERED_MODULE = re.compile(r"^[A-Za-z][A-Za-z_]*?_?\d+$")
"""Any module named with a trailing number (``conv3``, ``lin0``, ``fc2``) starts a group of its own."""

_RNN_LAYER = re.compile(r"^(weight|bias)_(?:ih|hh|hr)_l(\d+)(_reverse)?$")
"""``nn.LSTM`` / ``nn.GRU`` parameters: layer k's tensors form group ``<rnn>.l<k>``."""

_WRAPPERS = frozenset({"model", "module", "backbone", "encoder", "trunk", "net", "vit", "visual", "base_model"})
"""Leading wrapper names kept as a prefix of the group name."""

_STEM_ALIASES = frozenset({"conv1", "bn1", "conv_stem", "stem"})
_CONV_HEAD_ALIASES = frozenset({"conv_head", "bn2"})
"""EfficientNet-family final 1x1 conv and its norm (top-level ``conv_head`` + ``bn2``): one group."""

_NORM_SUFFIX = re.compile(r"^(.+?)[_-](?:bn|BN|batchnorm|BatchNorm)$")
"""A norm layer named after the layer it follows (Keras-converted ``conv2`` + ``conv2_BN``)."""

_HEAD = re.compile(
    r"^(?:(?:model|module|backbone|net|base_model)\.)*"
    r"(?:head|head_dist|heads|fc|classifier|last_linear|(?!conv_)[a-z]+_head|auxlogits|aux_logits|logits|pooler"
    r"|output_proj|output_layer|fc_out|out_fc|cls|predictions)"
    r"(?:\.|$)",
    re.IGNORECASE,
)

_INPUT_NAMES = re.compile(
    r"^(?:stem|patch_embed|conv_in|input\w*|embeddings?|embed_tokens|wte|word_embeddings?|tok_embeddings"
    r"|token_embedding|char_embeddings?)$",
    re.IGNORECASE,
)
"""Top-level module names of input layers (after wrappers): stems, patch and token embeddings."""

_EMBEDDING_TABLE = re.compile(
    r"(?:^|\.)(?:[a-z]+_)*(?:emb|embs|embed|embeds|embedding|embeddings|wte|embed_tokens|tok_embeddings)(?:_\d+)?"
    r"\.weight$", re.IGNORECASE)
"""A token/character embedding table (``nn.Embedding``): ``word_embeddings.weight``, ``char_emb.weight``."""


def is_head_tensor(name: str) -> bool:
    """Whether a tensor belongs to the classifier head (re-initialised when ``num_classes`` changes).

    Args:
        name: tensor name after unwrapping, e.g. ``"head.weight"``, ``"fc.bias"`` (ResNet),
            ``"head.fc.weight"`` (ConvNeXt, Swin), ``"classifier.weight"``, ``"pooler.dense.weight"``,
            any ``*_head`` but EfficientNet's ``conv_head`` (``lm_head``, ``mlm_head``), a masked-LM
            ``predictions`` head.

    Returns:
        True for top-level head modules only (``blocks.0.mlp.fc1.weight`` is not head).

    Example:
        >>> is_head_tensor("head.fc.weight"), is_head_tensor("blocks.0.mlp.fc1.weight")
        (True, False)
    """
    return _HEAD.match(name) is not None


def is_input_group(name: str) -> bool:
    """Whether a group is named as the network's input layer (``stem``, ``patch_embed``, ``embeddings``).

    Example:
        >>> is_input_group("backbone.stem"), is_input_group("bert.embeddings"), is_input_group("blocks.0")
        (True, True, False)
    """
    return _INPUT_NAMES.match(name.rpartition(".")[2]) is not None


def is_embedding_table(name: str) -> bool:
    """Whether a tensor is a token/character embedding table (often left near its N(0, 1) init).

    Example:
        >>> is_embedding_table("embeddings.word_embeddings.weight"), is_embedding_table("blocks.0.mlp.fc1.weight")
        (True, False)
    """
    return _EMBEDDING_TABLE.search(name) is not None


@functools.lru_cache(maxsize=8192)
def group_of(name: str) -> str:
    """The module group a tensor belongs to, from its name alone (see ``assign_groups``).

    Args:
        name: tensor name, e.g. ``"blocks.3.attn.qkv.weight"``.

    Returns:
        ``"blocks.3"``, ``"layer2.1"``, ``"stages.1.blocks.0"``, ``"blocks.2.1"`` (EfficientNet),
        ``"cnn.10"``, ``"lstm.l1"``, ``"patch_embed"``, ``"stem"`` (``conv1``/``bn1``/``conv_stem``)...

    Example:
        >>> group_of("stages.1.blocks.0.conv_dw.weight"), group_of("layer2.1.bn1.running_mean")
        ('stages.1.blocks.0', 'layer2.1')
    """
    parts = name.split(".")
    path = parts[:-1] if len(parts) > 1 else parts
    rnn = _RNN_LAYER.match(parts[-1]) if len(parts) > 1 else None
    # The first numbered child (``<any>.<N>``) or self-indexed module starts the group; consecutive
    # indexed components extend it (``blocks.2.1``, ``stages.1.blocks.0``).
    j, end = 0, 0
    while j < len(path):
        if (path[j] in _STEM_ALIASES | _CONV_HEAD_ALIASES or _INPUT_NAMES.match(path[j])) and all(
                p in _WRAPPERS for p in path[:j]):
            break  # an input layer or stem is one group, however it is built (ConvNeXt's stem.0 + stem.1)
        if j + 1 < len(path) and path[j + 1].isdigit() and not path[j].isdigit():
            end = j + 2
            break
        if path[j].isdigit() or _SELF_INDEXED.match(path[j]):
            end = j + 1
            break
        if _NUMBERED_MODULE.match(path[j]):
            end = j + 1
            break
        j += 1
    if not end:
        return ".".join(path) + f".l{rnn.group(2)}" if rnn else _top_level_group(path)
    while end < len(path):
        if path[end].isdigit() and end + 1 < len(path):  # a stage's block; not a Sequential's leaf layer
            end += 1
        elif path[end] in _CONTAINERS and end + 1 < len(path) and path[end + 1].isdigit():
            end += 2
        elif _SELF_INDEXED.match(path[end]):
            end += 1
        else:
            break
    group = ".".join(path[:end])
    return f"{group}.l{rnn.group(2)}" if rnn and end == len(path) else group


def _top_level_group(path: list[str]) -> str:
    k = 0
    while k < len(path) - 1 and path[k] in _WRAPPERS:
        k += 1
    head = path[k]
    suffixed = _NORM_SUFFIX.match(head)
    if suffixed:
        head = suffixed.group(1)
    if head in _STEM_ALIASES:
        head = "stem"
    elif head in _CONV_HEAD_ALIASES:
        head = "conv_head"
    return ".".join([*path[:k], head])


def common_prefix(names: Sequence[str]) -> str:
    """The leading module path (``"bert."``) that every name shares, '' if none; never a whole name.

    Example:
        >>> common_prefix(["bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.output.dense.weight"])
        'bert.'
    """
    if len(names) < 2:
        return ""
    split = [n.split(".")[:-1] for n in names]
    prefix: list[str] = []
    for parts in zip(*split, strict=False):
        if len(set(parts)) != 1 or parts[0].isdigit():
            break
        prefix.append(parts[0])
    # keep at least one module level below the prefix for every name
    while prefix and any(len(p) <= len(prefix) for p in split):
        prefix.pop()
    return "".join(p + "." for p in prefix)


def assign_groups(names: Sequence[str], matrices: Collection[str] = ()) -> dict[str, str]:
    """The group of every tensor of one checkpoint, with the whole-checkpoint rules above.

    Args:
        names: every tensor name of the checkpoint (head included), in file order.
        matrices: the names that are matrices (judged for structure); a top-level module with two
            or more child layers holding matrices is split into them (``message_passing.W_h``).

    Returns:
        ``{name: group}``.

    Example:
        >>> g = assign_groups(["bert.embeddings.word_embeddings.weight", "bert.encoder.layer.3.attention.self.query.weight"])
        >>> g["bert.encoder.layer.3.attention.self.query.weight"], g["bert.embeddings.word_embeddings.weight"]
        ('bert.encoder.layer.3', 'bert.embeddings')
    """
    prefix = common_prefix(names)
    groups = {n: prefix + group_of(n[len(prefix):]) for n in names}
    return _split_wide_modules(_split_single_children(groups), set(matrices))


def _split_wide_modules(groups: dict[str, str], matrices: set[str]) -> dict[str, str]:
    """Split an unindexed, non-input group (``message_passing``) whose tensors sit in two or more
    child modules holding matrices (``W_i``, ``W_h``, ``W_o``) into those children."""
    children: dict[str, set[str]] = {}
    for name, group in groups.items():
        rest = name[len(group) + 1:].split(".") if name.startswith(group + ".") else []
        if len(rest) >= 2 and name in matrices:
            children.setdefault(group, set()).add(rest[0])
    wide = {g for g, kids in children.items()
            if len(kids) >= 2 and not any(p.isdigit() for p in g.split(".")) and not is_input_group(g)
            and not _NUMBERED_MODULE.match(g.rpartition(".")[2])  # ``conv5`` is a block already
            and g.rpartition(".")[2] not in {"stem", "conv_head"}}
    out = dict(groups)
    for name, group in groups.items():
        if group in wide and name.startswith(group + ".") and name[len(group) + 1:].count("."):
            out[name] = f"{group}.{name[len(group) + 1:].split('.')[0]}"
    return out


def _split_single_children(groups: dict[str, str]) -> dict[str, str]:
    """Split every group ending in a container's only numbered child (``...layers.0`` with no
    ``...layers.1``) that holds 40% or more of the checkpoint's tensors at its named sub-modules.
    One pass over the names, then one decision per group (a file can hold 100,000 tensors)."""
    present = set(groups.values())
    sizes: dict[str, int] = {}
    subs: dict[str, set[str]] = {}  # group -> the sub-modules its deeper tensors sit in
    for name, group in groups.items():
        sizes[group] = sizes.get(group, 0) + 1
        rest = name[len(group) + 1:].split(".")
        if len(rest) >= 2:
            subs.setdefault(group, set()).add(rest[0])
    split = set()
    for group, kids in subs.items():
        container, _, index = group.rpartition(".")
        if (index == "0" and container and 5 * sizes[group] >= 2 * len(groups) and len(kids) > 1
                and not any(g.startswith(container + ".1") for g in present)):  # at most two groups get here
            split.add(group)
    return {name: (f"{group}.{name[len(group) + 1:].split('.')[0]}"
                   if group in split and name[len(group) + 1:].count(".") else group)
            for name, group in groups.items()}


def head_tensors(names: Sequence[str]) -> set[str]:
    """Names of the classifier-head tensors of one checkpoint, found by name at the top level or
    below the model wrapper that most tensors share (``bert.pooler.dense.weight``).

    Example:
        >>> sorted(head_tensors(["bert.embeddings.word_embeddings.weight", "bert.pooler.dense.weight"]))
        ['bert.pooler.dense.weight']
    """
    wrapper = _dominant_wrapper(names)
    return {n for n in names if is_head_tensor(n) or (wrapper and n.startswith(wrapper) and is_head_tensor(n[len(wrapper):]))}


def _dominant_wrapper(names: Sequence[str]) -> str:
    """The first module name (``albert.``) that most tensors sit under: the model wrapper of an HF
    task model (``albert.*`` beside ``predictions.*``), '' if there is none."""
    firsts: dict[str, int] = {}
    for n in names:
        first, dot, _ = n.partition(".")
        if dot and not first.isdigit():
            firsts[first] = firsts.get(first, 0) + 1
    top = max(firsts.items(), key=lambda kv: kv[1], default=("", 0))
    return top[0] + "." if 2 * top[1] > len(names) else ""
