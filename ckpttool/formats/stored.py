"""A large tensor's stored values, widened to float32 only where they are looked at.

The statistics of a tensor of billions of entries come from fixed samples (a few hundred rows and
columns, a few probe lines); widening the whole tensor first would cost its size in float32 and a
sweep of memory. ``StoredValues`` indexes, reshapes and transposes the stored bytes (a view of the
mapped file: only the pages indexed are read) and widens when numpy asks for an array.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ckpttool.formats.dtypes import DType, widen


class StoredValues:
    """A lazily widened tensor: ``values[idx]`` is another ``StoredValues``; ``np.asarray(values)``
    is the float32 (or native int/bool) array that ``Checkpoint.array`` would give for that part."""

    def __init__(self, raw: np.ndarray, dtype: DType):
        self.raw = raw  # stored dtype (bf16 / fp8 as bits), possibly a strided view of the mapping
        self.dtype = dtype

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
        return StoredValues(self.raw.T, self.dtype)

    def reshape(self, *shape: Any) -> StoredValues:
        return StoredValues(self.raw.reshape(*shape), self.dtype)

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index: Any) -> StoredValues:
        return StoredValues(self.raw[index], self.dtype)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = widen(self.raw, self.dtype)
        return array if dtype is None else array.astype(dtype, copy=False)

    def rows(self, step: int) -> Any:
        """Consecutive row blocks (along the first axis), widened, each of about ``step`` rows."""
        for i in range(0, self.shape[0], max(1, step)):
            yield np.asarray(self[i : i + step])
