"""Tensors of a torch pickle as descriptions: storage, dtype, offset, shape, stride. Nothing is read
until asked, and every description is checked against its storage's real size before that.

torch's rebuild functions (``torch._utils._rebuild_tensor_v2`` and friends) are interpreted here,
not called: each stand-in validates its arguments and returns a ``TensorRef``. Layouts that could
make a tiny file allocate gigabytes (sparse, meta, nested, overlapping strides, numpy-backed device
tensors, tensor constructors) are refused with one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ckpttool.errors import CheckpointFormatError, UnsafeCheckpointError
from ckpttool.formats.dtypes import DType, widen
from ckpttool.formats.limits import MAX_NDIM, MAX_TENSORS, CheckpointLimitError

# Sizes, strides and offsets above this are lies (no storage holds 2**62 elements).
_MAX_DIM = 2**62


@dataclass(frozen=True, eq=False)
class StorageRef:
    """One storage a pickle refers to: the ``data/<key>`` member (zip) or a block after the pickles (legacy)."""

    key: str
    dtype: DType  # the element type it was saved as (uint8 for UntypedStorage)
    numel: int  # elements of ``dtype``, as the pickle claims and the reader checked

    @property
    def nbytes(self) -> int:
        return self.numel * np.dtype(self.dtype.raw).itemsize

    def __setstate__(self, state: object) -> None:
        raise UnsafeCheckpointError("a pickle tried to set attributes on a storage; refused")


@dataclass(frozen=True, eq=False)
class TensorRef:
    """A tensor described, not read: ``dtype`` elements at ``offset``/``stride`` (elements) in ``storage``."""

    storage: StorageRef
    dtype: DType
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * np.dtype(self.dtype.raw).itemsize

    def raw(self, buffer: np.ndarray, byteorder: str = "<") -> np.ndarray:
        """The stored values as a (possibly strided) read-only view of ``buffer``, the storage's bytes."""
        dt = np.dtype(self.dtype.raw)
        if dt.itemsize > 1 and byteorder == ">":
            dt = dt.newbyteorder(">")
        if self.numel == 0:
            return np.empty(self.shape, dtype=dt)
        return np.ndarray(
            self.shape,
            dtype=dt,
            buffer=buffer,
            offset=self.offset * dt.itemsize,
            strides=tuple(s * dt.itemsize for s in self.stride),
        )

    def read(self, buffer: np.ndarray, byteorder: str = "<") -> np.ndarray:
        """A fresh array: float32 for float dtypes, the native dtype otherwise (as ``widen``)."""
        return widen(self.raw(buffer, byteorder), self.dtype)

    def __setstate__(self, state: object) -> None:
        raise UnsafeCheckpointError("a pickle tried to set attributes on a tensor; refused")


def check_layout(
    storage: StorageRef, dtype: DType, offset: object, shape: object, stride: object
) -> TensorRef:
    """Validate a tensor's geometry against its storage and return its description.

    The extent (offset + every reachable element) must lie inside the storage and no two indices
    may reach the same element: a stride-0 view of one number would otherwise read back as
    gigabytes (``expand`` saved by torch, or a crafted file).

    Raises:
        CheckpointFormatError: a malformed or out-of-bounds geometry.
        UnsafeCheckpointError: overlapping strides.
    """
    shape = _ints("size", shape)
    stride = _ints("stride", stride)
    if type(offset) is not int or not 0 <= offset <= _MAX_DIM:
        raise CheckpointFormatError(f"a tensor has an invalid storage offset {_short(offset)}")
    if len(stride) != len(shape):
        raise CheckpointFormatError(f"a tensor has size {shape} but stride {stride}")
    itemsize = np.dtype(dtype.raw).itemsize
    numel = math.prod(shape)
    last = offset + sum((n - 1) * s for n, s in zip(shape, stride, strict=True)) if numel else offset - 1
    if (last + 1) * itemsize > storage.nbytes:
        raise CheckpointFormatError(
            f"a tensor of size {shape}, stride {stride}, offset {offset} ({dtype.name}) reaches past its "
            f"storage of {storage.nbytes} bytes"
        )
    span = 0
    for n, s in sorted((d for d in zip(shape, stride, strict=True) if d[0] > 1), key=lambda d: d[1]):
        if s <= span:
            raise UnsafeCheckpointError(
                f"a tensor of size {shape} has overlapping strides {stride} (one stored value read many "
                "times, e.g. a saved expand() view); ckpttool refuses such tensors, save tensor.clone() instead"
            )
        span += (n - 1) * s
    return TensorRef(storage, dtype, offset, shape, stride)


def _ints(what: str, value: object) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or len(value) > MAX_NDIM:
        raise CheckpointFormatError(f"a tensor has an invalid {what} {_short(value)}")
    if not all(type(v) is int and 0 <= v <= _MAX_DIM for v in value):
        raise CheckpointFormatError(f"a tensor has an invalid {what} {_short(value)}")
    return tuple(value)


def _short(value: object) -> str:
    text = repr(value) if isinstance(value, int | float | str | bytes | type(None)) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


class TensorCounter:
    """Counts the tensors a pickle rebuilds, refusing past ``MAX_TENSORS``."""

    def __init__(self) -> None:
        self.count = 0

    def add(self) -> None:
        self.count += 1
        if self.count > MAX_TENSORS:
            raise CheckpointLimitError(
                f"the pickle rebuilds more than {MAX_TENSORS} tensors (ckpttool's limit, see SECURITY.md)"
            )


class PickledFile:
    """An unpickled torch file: the object tree (tensors as ``TensorRef``) and its storages' bytes.

    Attributes:
        obj: what the file holds, with tensors as ``TensorRef`` and containers as dicts/lists/tuples.
        byteorder: ``"<"`` or ``">"`` (how the storages were written).
    """

    def __init__(self, obj: object, byteorder: str, buffer, close, release=None, base=None):
        self.obj = obj
        self._base = base  # the file's memory map, through which pages of a view are released
        self.byteorder = byteorder
        self._buffer = buffer
        self._close = close
        self._release = release  # drops a storage's mapped pages once copied (bounded memory)

    def read(self, ref: TensorRef) -> np.ndarray:
        """One tensor, widened (float32 for float dtypes), a fresh array; its pages are released after."""
        array = ref.read(self._buffer(ref.storage), self.byteorder)
        if self._release is not None:
            self._release(ref.storage)
        return array

    def raw(self, ref: TensorRef) -> np.ndarray:
        """One tensor's stored values, its own dtype (bf16/fp8 as uint16/uint8), a fresh C-contiguous array."""
        raw = ref.raw(self._buffer(ref.storage), self.byteorder)
        array = np.array(raw, dtype=raw.dtype.newbyteorder("="), order="C")
        if self._release is not None:
            self._release(ref.storage)
        return array

    def view(self, ref: TensorRef) -> tuple[np.ndarray, np.ndarray | None]:
        """``(stored values as a view of the mapped file (possibly strided or big-endian), the map)``."""
        return ref.raw(self._buffer(ref.storage), self.byteorder), self._base

    def close(self) -> None:
        self._close()
