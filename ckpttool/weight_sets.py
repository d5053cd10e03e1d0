"""Weight sets: which sets of named tensors a torch file holds, and under which names.

Training scripts wrap their weights (``{'state_dict': ...}``, ``model_state_dict``,
``{'model': {'state_dict': ...}}``, EMA copies); every wrapper holding tensors is a *weight set*
(the first is the checkpoint's tensors, the others are listed and can be selected).
``module.`` / ``_orig_mod.`` prefixes are stripped (and Lightning's ``model.``) when every name
carries them. Containers come from our unpickler, so they are read through ``dict`` itself and
walked iteratively, each once (a hostile pickle can share or nest them without end).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ckpttool.errors import CheckpointFormatError
from ckpttool.formats.torch_tensors import TensorRef
from ckpttool.formats.unpickler import NumpyValue

# Where training scripts keep weights, as key paths; the first holding tensors is the checkpoint's
# tensors, every other one holding tensors is judged too (a consumer may load it: timm prefers EMA).
WRAPPERS = (
    ("state_dict",),
    ("model_state_dict",),
    ("model", "state_dict"),
    ("model",),
    ("state_dict_ema",),
    ("model_ema", "state_dict"),
    ("model_ema",),
    ("ema_state_dict",),
    ("ema",),
)
SEQUENCE_WRAPPER = "(list)"
"""The wrapper recorded for a file holding a list or tuple of state dicts (names by position)."""

# Added by DataParallel/DDP and torch.compile; stripped when every name carries them.
DEFAULT_PREFIXES = ("module.", "_orig_mod.")
# Lightning's LightningModule keeps the network as ``self.model``: stripped in Lightning files only.
_LIGHTNING_PREFIX = "model."
_LIGHTNING_KEYS = ("pytorch-lightning_version", "optimizer_states", "lr_schedulers")
# Where optimizer state lives (Lightning: a list, one per optimizer).
_OPTIMIZER_KEYS = ("optimizer", "optimizer_state_dict", "optimizer_states")
METADATA_KEY = "ckpttool"
# Nested dicts deeper than this are not a state dict (listed as non-tensor entries).
_MAX_DEPTH = 32


def _is_tensor(value: object) -> bool:
    return isinstance(value, TensorRef)


@dataclass(frozen=True)
class WeightSet:
    wrapper: str | None
    tensors: dict[str, TensorRef]
    stripped_prefixes: tuple[str, ...]


@dataclass(frozen=True)
class Unwrapped:
    sets: tuple[WeightSet, ...]  # the checkpoint's tensors first
    non_tensor_keys: tuple[str, ...]
    metadata: dict
    optimizer: object  # the optimizer state dict(s), if any


def unwrap(path: Path, obj: object) -> Unwrapped:
    """Find every weight set inside what a torch file holds; see the module docstring.

    Containers come from our unpickler (dicts, or our dict subclass with no methods of its own);
    they are still read through ``dict`` itself, never through methods of the objects.
    """
    if isinstance(obj, (list, tuple)):
        tensors = _sequence_tensors(obj)
        if not tensors:
            raise CheckpointFormatError(no_tensors(path, []))
        first = {name.partition(".")[0] for name in tensors}
        extra = (f"{first.pop()}.",) if len(first) == 1 else ()  # [state_dict]: the one item's names
        return Unwrapped((_weight_set(path, SEQUENCE_WRAPPER, tensors, extra),), (), {}, None)
    if not isinstance(obj, dict):
        kind = "Tensor" if _is_tensor(obj) else type(obj).__name__
        raise CheckpointFormatError(
            f"{path} holds a {kind}, not a dict of tensors; re-save it with torch.save(model.state_dict())"
        )
    top = dict(dict.items(obj))
    metadata: dict = {}
    if isinstance(top.get(METADATA_KEY), dict):
        metadata = _plain(top.pop(METADATA_KEY))
    lightning = any(k in top for k in _LIGHTNING_KEYS)
    sets: list[WeightSet] = []
    used: set[str] = set()
    for key_path in WRAPPERS:
        value = _at(top, key_path)
        if isinstance(value, dict) and _holds_tensor(value) and key_path[0] not in used:
            extra = (_LIGHTNING_PREFIX,) if lightning and key_path == ("state_dict",) else ()
            tensors, others = _flat_tensors(path, value)
            if tensors:
                sets.append(_weight_set(path, ".".join(key_path), tensors, extra))
                used.add(key_path[0])
    if sets:
        others = [str(k) for k in top if k not in used]
    else:
        tensors, others = _flat_tensors(path, top)
        if not tensors:
            raise CheckpointFormatError(no_tensors(path, list(top)))
        sets.append(_weight_set(path, None, tensors, ()))
    optimizer = next((top[k] for k in _OPTIMIZER_KEYS if k in top), None)
    return Unwrapped(tuple(sets), tuple(others), metadata, optimizer)


def _at(top: dict, key_path: tuple[str, ...]) -> object:
    value: object = top
    for key in key_path:
        if not isinstance(value, dict):
            return None
        value = dict.get(value, key)
    return value


def _weight_set(
    path: Path, wrapper: str | None, flat: dict[str, TensorRef], extra: tuple[str, ...]
) -> WeightSet:
    renamed, stripped = strip_prefixes(list(flat), extra)
    if len(set(renamed)) != len(renamed):  # flattening made "a.b" twice
        raise CheckpointFormatError(f"{path} holds the same tensor name twice after flattening nested dicts")
    return WeightSet(wrapper, dict(zip(renamed, flat.values(), strict=True)), stripped)


def _flat_tensors(path: Path, chosen: dict) -> tuple[dict[str, TensorRef], list[str]]:
    """The tensors of one dict (nested tensor trees flattened to dotted names) and its other keys."""
    flat: dict[str, TensorRef] = {}
    others: list[str] = []
    for key, value in dict.items(chosen):
        if _is_tensor(value):
            if not isinstance(key, str | int):  # str() of an object key is not a stable name
                raise CheckpointFormatError(
                    f"{path} holds a tensor under a key that is a {type(key).__name__}, not a name; "
                    "re-save it with torch.save(model.state_dict())"
                )
            flat[str(key)] = value
        elif isinstance(value, dict) and _is_tensor_tree(value):
            _flatten(str(key), value, flat)
        else:
            others.append(str(key))
    return flat, others


def _sequence_tensors(obj: list | tuple) -> dict[str, TensorRef]:
    """The tensors of a file that holds a list or tuple (a list of per-layer state dicts, as some
    packages save), in order, named by their positions and keys (``0.1.0.weight``). Dicts that are not
    pure tensor trees (constructor kwargs, metadata) are left out. Iterative, each container once, at
    most ``_MAX_DEPTH`` deep: the same guards as for nested dicts."""
    out: dict[str, TensorRef] = {}
    seen: set[int] = set()
    stack: list[tuple[str, object, int]] = [("", obj, 0)]
    while stack:
        name, node, depth = stack.pop()
        if _is_tensor(node):
            out[name] = node
        elif isinstance(node, dict):
            if id(node) not in seen and _is_tensor_tree(node):
                _flatten(name, node, out)
            seen.add(id(node))
        elif isinstance(node, (list, tuple)) and id(node) not in seen and depth < _MAX_DEPTH:
            seen.add(id(node))
            items = [(f"{name}.{i}" if name else str(i), item) for i, item in enumerate(node)]
            stack.extend((n, item, depth + 1) for n, item in reversed(items))
    return out


def _plain(value: dict) -> dict:
    """A JSON-like copy of a metadata dict from a pickle (numpy values unwrapped, our dicts made plain)."""
    out = {}
    for node in _dict_nodes(value):
        if node is None:
            return {}
    for k, v in dict.items(value):
        if isinstance(v, dict):
            v = _plain(v)
        elif isinstance(v, NumpyValue):
            v = v.value.tolist() if hasattr(v.value, "tolist") else v.value
        out[k] = v
    return out


def _dict_nodes(value: dict) -> Iterator[dict | None]:
    """Every dict nested in ``value`` (itself included), each once, depth-first, iteratively.

    Yields None for a dict reached a second time (shared or cyclic) or deeper than ``_MAX_DEPTH``:
    a hostile pickle can make dicts that contain themselves or share children (2**depth paths for
    a few bytes), so nothing here may recurse or revisit.
    """
    seen: set[int] = set()
    stack: list[tuple[dict, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen or depth > _MAX_DEPTH:
            yield None
            continue
        seen.add(id(node))
        yield node
        stack.extend((v, depth + 1) for v in dict.values(node) if isinstance(v, dict))


def _holds_tensor(value: dict) -> bool:
    """Any tensor in a nested dict."""
    return any(node is not None and any(map(_is_tensor, dict.values(node))) for node in _dict_nodes(value))


def _is_tensor_tree(value: dict) -> bool:
    """A nested dict with string keys whose leaves are all tensors (and at least one).

    It must be a tree at most ``_MAX_DEPTH`` deep: a sub-dict reached twice (shared or cyclic)
    makes it not one, so that flattening stays linear in the file's size.
    """
    if not value:
        return False
    return all(
        node is not None
        and all(isinstance(k, str) and (isinstance(v, dict) or _is_tensor(v)) for k, v in dict.items(node))
        for node in _dict_nodes(value)
    )


def _flatten(prefix: str, value: dict, out: dict[str, TensorRef]) -> None:
    for k, v in dict.items(value):
        name = f"{prefix}.{k}"
        if _is_tensor(v):
            out[name] = v
        else:
            _flatten(name, v, out)


def strip_prefixes(names: list[str], extra: tuple[str, ...] = ()) -> tuple[list[str], tuple[str, ...]]:
    """Remove ``module.`` / ``_orig_mod.`` (and ``extra``) while every name starts with one (in any nesting)."""
    stripped: list[str] = []
    while names:
        prefix = next((p for p in (*DEFAULT_PREFIXES, *extra) if all(n.startswith(p) for n in names)), None)
        if prefix is None:
            break
        names = [n[len(prefix) :] for n in names]
        stripped.append(prefix)
    return names, tuple(stripped)


def no_tensors(path: Path, keys: list) -> str:
    listed = f" (top-level entries: {', '.join(map(str, keys[:8]))})" if keys else ""
    return (
        f"{path} holds no tensors{listed}; ckpttool reads state dicts, "
        "save one with torch.save(model.state_dict()) or safetensors"
    )

