"""The differential oracle: ckpttool's reader against ``torch.load(weights_only=True)``, with and
without ``mmap=True``, on the whole object tree (every tensor by its path of keys).

The tree is compared, not only the judged weight sets: weight sets are a pure function of the tree
(``ckpttool.weight_sets`` reads containers through ``dict`` only), so equal trees mean equal judged
tensors. Each tensor is compared as (dtype, shape, bytes of its logical values, C order); torch's
negation and conjugation bits are resolved first, so a tensor torch negates on load is compared
negated.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch

from ckpttool.errors import CkptError
from ckpttool.formats import detect_format
from ckpttool.formats.dispatch import open_pickled
from ckpttool.formats.torch_tensors import TensorRef

Tree = dict[str, tuple[str, tuple[int, ...], bytes]]


def _key(key: object, is_tensor) -> str:
    """A dict key as both readers can spell it: ``repr`` of plain values, tensors and other objects
    (a rebuild function used as a key: ours is a stand-in) by kind only."""
    if is_tensor(key):
        return "<tensor>"
    if isinstance(key, tuple):
        return "(" + ", ".join(_key(k, is_tensor) for k in key) + ")"
    if key is None or isinstance(key, str | bytes | int | float | complex):
        return repr(key)
    return "<object>"


def flatten(obj: object, is_tensor) -> dict[str, object]:
    """Every tensor reachable through dicts, lists and tuples, by path of keys (``_key``); each container once."""
    out: dict[str, object] = {}
    seen: set[int] = set()
    stack = [("", obj)]
    while stack:
        path, node = stack.pop()
        if is_tensor(node):
            out[path] = node
        elif isinstance(node, dict | list | tuple) and id(node) not in seen:
            seen.add(id(node))
            items = dict.items(node) if isinstance(node, dict) else enumerate(node)
            stack.extend((f"{path}/{_key(k, is_tensor)}", v) for k, v in items)
    return out


def ours(path: Path) -> tuple[str, Tree | CkptError]:
    """``("loaded", tree)`` as ckpttool's reader sees the file, or ``("refused", error)``."""
    try:
        pickled = open_pickled(path, detect_format(path))
    except CkptError as e:
        return "refused", e
    try:
        return "loaded", {
            k: (ref.dtype.name, ref.shape, pickled.raw(ref).tobytes())  # native order: little-endian here
            for k, ref in flatten(pickled.obj, lambda x: isinstance(x, TensorRef)).items()
        }
    except CkptError as e:
        return "refused", e
    finally:
        pickled.close()


def extra_safe_globals() -> list:
    """What ckpttool allows beyond torch's defaults: argparse.Namespace and numpy arrays, scalars, dtypes."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    entries = [argparse.Namespace, np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar]
    dtypes = getattr(np, "dtypes", None)
    entries += [getattr(dtypes, n) for n in dir(dtypes or object) if n.endswith("DType")]
    return entries


def tensor_entry(t: torch.Tensor) -> tuple[str, tuple[int, ...], bytes]:
    t = t.detach().resolve_neg().resolve_conj()
    flat = t.reshape(-1).contiguous()
    return str(t.dtype).removeprefix("torch."), tuple(t.shape), flat.view(torch.uint8).numpy().tobytes()


def theirs(path: Path, *, mmap: bool = False) -> tuple[str, Tree | BaseException]:
    """``("loaded", tree)`` as ``torch.load(weights_only=True, mmap=mmap)`` returns it, or ``("refused", error)``."""
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(extra_safe_globals()):
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        return "loaded", {k: tensor_entry(t) for k, t in flatten(obj, torch.is_tensor).items()}
    except Exception as e:  # noqa: BLE001 - the oracle refusing, for any reason
        return "refused", e


def disagreement(path: Path) -> str | None:
    """Why ckpttool's verdict on ``path`` could be about other tensors than torch loads, or None.

    None when ckpttool refuses, or when each of torch's loads (``mmap`` off and on) refuses or
    returns exactly the tree ckpttool read.
    """
    kind, got = ours(path)
    if kind == "refused":
        return None
    for mmap in (False, True):
        torch_kind, expected = theirs(path, mmap=mmap)
        if torch_kind == "loaded" and expected != got:
            diff = sorted(set(got) ^ set(expected)) or [k for k in got if got[k] != expected[k]]
            return f"{path.name}: torch.load(mmap={mmap}) returns other tensors than ckpttool read ({diff[:3]})"
    return None
