"""A large tensor's stored values, widened to float32 only where they are looked at.

The statistics of a tensor of billions of entries come from fixed samples (a few hundred rows and
columns, a few probe lines); widening the whole tensor first would cost its size in float32 and a
sweep of memory. ``StoredValues`` indexes, reshapes and transposes the stored bytes (a view of the
mapped file) and widens when numpy asks for an array.

Reading through the mapping maps pages into the process, and the kernel maps a whole large folio
of the page cache (up to megabytes) per touch: 512 sampled rows spread over a 2 GB embedding would
map all of it. So a selection is gathered span by span (at most ``SPAN`` bytes of the tensor at a
time) and each span's pages are released before the next: memory holds the selection, never the
tensor.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ckpttool.formats import release_view
from ckpttool.formats.dtypes import DType, widen

SPAN = 4 << 20
"""Most bytes of a mapped tensor touched before their pages are released."""


class StoredValues:
    """A lazily widened tensor: ``values[idx]`` is another ``StoredValues`` (a private copy of the
    selection when this one is mapped); ``np.asarray(values)`` is the float32 (or native int/bool)
    array that ``Checkpoint.array`` would give for that part."""

    def __init__(self, raw: np.ndarray, dtype: DType, base: np.ndarray | None = None):
        self.raw = raw  # stored dtype (bf16 / fp8 as bits), possibly a strided view of the mapping
        self.dtype = dtype
        self.base = base  # the file's mapping when ``raw`` is a view of it (pages to release)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.raw.shape

    @property
    def size(self) -> int:
        return self.raw.size

    @property
    def ndim(self) -> int:
        return self.raw.ndim

    @property
    def T(self) -> StoredValues:  # noqa: N802 (numpy's name)
        return StoredValues(self.raw.T, self.dtype, self.base)

    def reshape(self, *shape: Any) -> StoredValues:
        return StoredValues(self.raw.reshape(*shape), self.dtype, self.base)

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index: Any) -> StoredValues:
        if self.base is None:
            return StoredValues(self.raw[index], self.dtype)
        return StoredValues(self._gather(index), self.dtype)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raw = self.raw if self.base is None else self._gather(slice(None))
        array = widen(raw, self.dtype)
        return array if dtype is None else array.astype(dtype, copy=False)

    def rows(self, step: int) -> Iterator[np.ndarray]:
        """Consecutive blocks of ``step`` rows (first axis), widened; each block's pages released."""
        for i in range(0, self.shape[0], max(1, step)):
            yield np.asarray(self[i : i + step])

    def _gather(self, index: Any) -> np.ndarray:
        """``raw[index]`` as a private copy, touching at most ``SPAN`` bytes of the mapping at a time:
        the first axis's selection is read a span of stored lines at a time, the rest of the index
        applied to each piece."""
        raw = self.raw
        first, rest = (index[0] if index else slice(None), index[1:]) if isinstance(index, tuple) else (index, ())
        if raw.ndim == 0:
            return np.array(raw)
        if raw.ndim >= 2 and raw.strides[0] < raw.strides[-1]:  # a transposed view: stored rows are its last axis
            if rest or isinstance(first, (int, np.integer)):
                return np.array(raw[index])  # (not met by the statistics: numpy's own gather)
            return self._gather_transposed(first)
        picked = _selection(first, raw.shape[0])  # the first axis's selection, in order
        order = None if np.all(picked[1:] >= picked[:-1]) else np.argsort(picked, kind="stable")
        ordered = picked if order is None else picked[order]
        per = max(1, SPAN // max(1, raw.strides[0]))  # stored lines per span
        parts = []
        if ordered.size:
            spans = (ordered - ordered[0]) // per  # lines read together lie within one span
            for sel in np.split(ordered, np.flatnonzero(np.diff(spans)) + 1):
                part = np.array(raw[sel])
                parts.append(part[(slice(None), *rest)] if rest else part)
                release_view(self.base, raw[int(sel[0]) : int(sel[-1]) + 1])
        out = np.concatenate(parts) if parts else np.empty((0, *raw.shape[1:]), raw.dtype)[(slice(None), *rest)]
        if order is not None:
            out = out[np.argsort(order)]
        return out[0] if isinstance(first, (int, np.integer)) else out

    def _gather_transposed(self, first: Any) -> np.ndarray:
        """A selection along the first axis of an F-ordered view: read a span of its last axis (the
        stored rows) at a time."""
        raw = self.raw
        per = max(1, SPAN // max(1, raw.strides[-1]))
        parts = []
        for c in range(0, raw.shape[-1], per):
            block = raw[..., c : c + per]
            parts.append(np.array(block[first]))
            release_view(self.base, block)
        return np.concatenate(parts, axis=-1)


def _selection(index: Any, n: int) -> np.ndarray:
    """The positions an index of one axis of length ``n`` selects (never an array of all ``n``)."""
    if isinstance(index, slice):
        return np.arange(*index.indices(n))
    index = np.asarray(index)
    if index.dtype == np.bool_:
        return np.flatnonzero(index)
    return np.atleast_1d(np.where(index < 0, index + n, index))
