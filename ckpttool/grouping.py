"""Tensor names -> module groups and the classifier head (timm / torchvision / HF conventions).

A group is the unit the verdict reasons about: one transformer block (``blocks.3``), one residual
unit (``layer2.1``), one stage block (``stages.1.blocks.0``), or a top-level module (``patch_embed``,
``pos_embed``, ``cls_token``, ``norm``, ``stem``...).
"""

from __future__ import annotations

import functools
import re

_CONTAINERS = frozenset(
    {"blocks", "block", "layers", "layer", "stages", "stage", "features", "levels", "resblocks", "h",
     "encoder_layers", "decoder_layers", "network", "body", "trunk_blocks"}
)
"""Module names whose children are indexed (``<container>.<N>``)."""

_SELF_INDEXED = re.compile(r"^(?:s|b|stage|block|layer|level|res|denseblock|denselayer|transition)_?\d+$")
"""Names that carry their own index (ResNet ``layer2``, RegNet ``s1.b2``, DenseNet ``denseblock1``)."""

_WRAPPERS = frozenset({"model", "module", "backbone", "encoder", "trunk", "net", "vit", "visual", "base_model"})
"""Leading wrapper names kept as a prefix of the group name."""

_STEM_ALIASES = frozenset({"conv1", "bn1", "conv_stem", "stem"})
_CONV_HEAD_ALIASES = frozenset({"conv_head", "bn2"})
"""EfficientNet-family final 1x1 conv and its norm (top-level ``conv_head`` + ``bn2``): one group."""

_NORM_SUFFIX = re.compile(r"^(.+?)[_-](?:bn|BN|batchnorm|BatchNorm)$")
"""A norm layer named after the layer it follows (Keras-converted ``conv2`` + ``conv2_BN``)."""

_HEAD = re.compile(
    r"^(?:(?:model|module|backbone|net|base_model)\.)*"
    r"(?:head|head_dist|heads|fc|classifier|last_linear|lm_head|aux_head|auxlogits|aux_logits|logits)"
    r"(?:\.|$)",
    re.IGNORECASE,
)


def is_head_tensor(name: str) -> bool:
    """Whether a tensor belongs to the classifier head (re-initialised when ``num_classes`` changes).

    Args:
        name: tensor name after unwrapping, e.g. ``"head.weight"``, ``"fc.bias"`` (ResNet),
            ``"head.fc.weight"`` (ConvNeXt, Swin), ``"classifier.weight"``, ``"head_dist.weight"``.

    Returns:
        True for top-level head modules only (``blocks.0.mlp.fc1.weight`` is not head).

    Example:
        >>> is_head_tensor("head.fc.weight"), is_head_tensor("blocks.0.mlp.fc1.weight")
        (True, False)
    """
    return _HEAD.match(name) is not None


def _is_index(part: str) -> bool:
    return part.isdigit()


@functools.lru_cache(maxsize=8192)
def group_of(name: str) -> str:
    """The module group a tensor belongs to.

    Args:
        name: tensor name, e.g. ``"blocks.3.attn.qkv.weight"``.

    Returns:
        ``"blocks.3"``, ``"layer2.1"``, ``"stages.1.blocks.0"``, ``"blocks.2.1"`` (EfficientNet),
        ``"patch_embed"``, ``"pos_embed"``, ``"stem"`` (``conv1``/``bn1``/``conv_stem``)...

    Example:
        >>> group_of("stages.1.blocks.0.conv_dw.weight"), group_of("layer2.1.bn1.running_mean")
        ('stages.1.blocks.0', 'layer2.1')
    """
    parts = name.split(".")
    path = parts[:-1] if len(parts) > 1 else parts
    # The first indexed component starts the group; consecutive indexed components extend it.
    j = 0
    while j < len(path):
        if path[j] in _CONTAINERS and j + 1 < len(path) and _is_index(path[j + 1]):
            end = j + 2
            break
        if _SELF_INDEXED.match(path[j]):
            end = j + 1
            break
        j += 1
    else:
        return _top_level_group(path)
    while end < len(path):
        if _is_index(path[end]):
            end += 1
        elif path[end] in _CONTAINERS and end + 1 < len(path) and _is_index(path[end + 1]):
            end += 2
        elif _SELF_INDEXED.match(path[end]):
            end += 1
        else:
            break
    return ".".join(path[:end])


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
