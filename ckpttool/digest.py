"""The weights digest: one sha256 over the tensors of a weight set, the same whether it is computed
from the file ``verify`` judged or from the state dict a training script loaded.

A file's sha256 says which bytes CI verified; the weights digest says which *tensors*, so a script
that loads the file with its own code (``torch.load``, timm, a wrapper of its own) can check in one
line that it got exactly those: same names, dtypes, shapes and values.

Byte layout (version 1). The digest is the lowercase hex sha256 of::

    b"ckpttool-weights/1\\n"
    for each tensor, in order of its name (sorted by code point, i.e. by UTF-8 bytes):
        u64 n, then the name's n bytes in UTF-8
        u64 n, then the dtype's n bytes in ASCII: torch's spelling without "torch." (float32, bfloat16, int64, bool...)
        u64 ndim, then one u64 per dimension
        u64 n, then the n bytes of the values: C order, little-endian, each element as torch stores it
            (bfloat16 and float8 as their bits, bool as one byte)

where u64 is an unsigned 64-bit little-endian integer. Names are those ``verify`` judges: after
unwrapping (``state_dict``, EMA...) and with ``module.`` / ``_orig_mod.`` stripped when every name
carries it. Non-tensor entries are not part of it. Tensors are hashed one at a time (memory: one
tensor).

Example (the pattern for a training script)::

    import ckpttool, torch
    sd = torch.load("init_model/vit_small_cifar10_pretrained_init.pth.tar", weights_only=True)
    model.load_state_dict(sd)
    assert ckpttool.weights_digest(model) == VERIFIED  # from `verify --format json` or MANIFEST.json
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ckpttool.errors import InvalidArgumentError

if TYPE_CHECKING:
    from ckpttool.loading import Checkpoint

WEIGHTS_DIGEST_VERSION = 1
_MAGIC = b"ckpttool-weights/1\n"
_U64 = struct.Struct("<Q")


class WeightsHasher:
    """The weights digest built one tensor at a time, in name order, each tensor's values in chunks
    (what ``ckpttool.sweep`` feeds it while it reads every tensor once for the statistics too)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256(_MAGIC)
        self._last: str | None = None

    def tensor(self, name: str, dtype: str, shape: tuple[int, ...], nbytes: int) -> None:
        """Start a tensor: its header; its ``nbytes`` of values follow through ``values``."""
        if self._last is not None and name <= self._last:
            raise ValueError(f"tensors must come in name order ({name!r} after {self._last!r})")
        self._last = name
        h = self._h
        for text in (name.encode("utf-8", "surrogatepass"), dtype.encode("ascii")):
            h.update(_U64.pack(len(text)) + text)
        h.update(_U64.pack(len(shape)) + b"".join(_U64.pack(d) for d in shape))
        h.update(_U64.pack(nbytes))

    def values(self, chunk: np.ndarray) -> None:
        """The next bytes of the current tensor's values (C order, little-endian)."""
        self._h.update(memoryview(_little_endian(chunk)).cast("B"))

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _digest(entries: Iterable[tuple[str, str, tuple[int, ...], Any]], read) -> str:
    """sha256 of ``(name, dtype, shape, source)`` entries in name order; ``read(source)`` gives the bytes."""
    hasher = WeightsHasher()
    for name, dtype, shape, source in sorted(entries, key=lambda e: e[0]):
        values = read(source)
        hasher.tensor(name, dtype, shape, values.nbytes)
        hasher.values(values)
    return hasher.hexdigest()


def _little_endian(array: np.ndarray) -> np.ndarray:
    if array.dtype.itemsize > 1 and array.dtype.byteorder not in ("<", "|") and not (
        array.dtype.byteorder == "=" and np.little_endian
    ):
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array)


def checkpoint_weights_digest(ckpt: Checkpoint) -> str:
    """The weights digest of one open weight set (``load_checkpoint(...)`` or ``ckpt.select(...)``).

    Example:
        >>> with load_checkpoint("model.safetensors") as ckpt:  # doctest: +SKIP
        ...     checkpoint_weights_digest(ckpt)
        '9f2c...'
    """
    hasher = WeightsHasher()
    for t in sorted(ckpt.tensors, key=lambda t: t.name):
        hasher.tensor(t.name, t.dtype, t.shape, ckpt.nbytes(t.name))
        for chunk in ckpt.raw_chunks(t.name):  # bounded memory, whatever the tensor's size
            hasher.values(chunk)
    return hasher.hexdigest()


def file_weights_digests(path: str | Path) -> dict[str | None, str]:
    """The weights digest of every weight set of a checkpoint file, by wrapper (the first is the file's
    tensors, as ``verify`` reports them). The file is read by ckpttool's own reader (never torch).

    Raises:
        The errors of ``load_checkpoint``.
    """
    from ckpttool.loading import load_checkpoint

    with load_checkpoint(path) as ckpt:
        return weight_set_digests(ckpt)


def weight_set_digests(ckpt: Checkpoint) -> dict[str | None, str]:
    """The weights digest of every weight set of an open checkpoint, by wrapper, in ``weight_sets`` order."""
    out = {ckpt.wrapper: checkpoint_weights_digest(ckpt)}
    for wrapper in ckpt.weight_sets[1:]:
        with ckpt.select(wrapper) as other:
            out[wrapper] = checkpoint_weights_digest(other)
    return out


def weights_digest(weights: Any, *, strip_prefix: str | None = None) -> str:
    """The weights digest of tensors a script holds: a state dict (name -> tensor) or an ``nn.Module``.

    Names are taken as ``verify`` takes them from a file: nested dicts made only of tensors are joined
    with ``.``, other entries are skipped, and ``module.`` / ``_orig_mod.`` are stripped while every
    name carries one. Tensors on any device are hashed as their logical values (a negated or
    conjugated view is resolved first).

    Args:
        weights: a mapping of names to ``torch.Tensor`` (``torch.load``'s result, unwrapped), or a module.
        strip_prefix: one more prefix to strip from every name, e.g. ``"model."`` for a Lightning
            checkpoint's ``state_dict`` (``verify`` strips it in Lightning files).

    Raises:
        InvalidArgumentError: ``weights`` is neither; a tensor is sparse, quantized or nested; a name
            is not a string.

    Example:
        >>> model.load_state_dict(torch.load(path, weights_only=True))  # doctest: +SKIP
        >>> assert weights_digest(model) == report_json["weights_digest"]  # doctest: +SKIP
    """
    import torch

    from ckpttool.weight_sets import strip_prefixes

    if isinstance(weights, torch.nn.Module):
        weights = weights.state_dict()
    if not isinstance(weights, Mapping):
        raise InvalidArgumentError(
            f"weights_digest takes a state dict or an nn.Module, not a {type(weights).__name__}"
        )
    flat: dict[str, torch.Tensor] = {}
    stack = [("", weights)]
    while stack:
        prefix, node = stack.pop()
        for key, value in node.items():
            if not isinstance(key, str):
                raise InvalidArgumentError(f"weights_digest needs string names, got {type(key).__name__} {key!r:.40}")
            if isinstance(value, torch.Tensor):
                flat[f"{prefix}{key}"] = value
            elif isinstance(value, Mapping) and _is_tensor_tree(value, torch.Tensor):
                stack.append((f"{prefix}{key}.", value))
    names, _ = strip_prefixes(list(flat), (strip_prefix,) if strip_prefix else ())
    entries = [
        (new, str(t.dtype).removeprefix("torch."), tuple(t.shape), t)
        for new, t in zip(names, flat.values(), strict=True)
    ]
    return _digest(entries, _tensor_bytes)


def _is_tensor_tree(value: Mapping, tensor: type, depth: int = 0) -> bool:
    """As ``verify`` unwraps: a nested dict counts only when it holds tensors and nothing else."""
    return bool(value) and depth < 32 and all(
        isinstance(k, str) and (isinstance(v, tensor) or (isinstance(v, Mapping) and _is_tensor_tree(v, tensor, depth + 1)))
        for k, v in value.items()
    )


def _tensor_bytes(t: Any) -> np.ndarray:
    import torch

    t = t.detach()
    if t.layout != torch.strided or t.is_quantized or t.is_nested:
        raise InvalidArgumentError(
            f"weights_digest reads dense tensors only, got a {t.layout} / quantized / nested one; "
            "ckpttool refuses such tensors in files too"
        )
    t = t.cpu().resolve_neg().resolve_conj().contiguous()
    return t.reshape(-1).view(torch.uint8).numpy()  # native order: little-endian hosts, as torch's files
