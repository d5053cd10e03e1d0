"""A numpy-only reader of safetensors files: header validated by us (every lie gets a precise message)
and again by ``safetensors.safe_open``, then the file memory-mapped and read one tensor at a time,
float dtypes widened to float32 with numpy alone. Torch is never imported.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ckpttool.errors import CheckpointFormatError
from ckpttool.formats import FIX as _FIX
from ckpttool.formats import one_line, open_regular, release_pages
from ckpttool.formats.dtypes import SAFETENSORS_DTYPES, DType, widen
from ckpttool.formats.limits import MAX_NDIM, MAX_TENSORS, CheckpointLimitError

# safetensors refuses headers above 100 MB; so do we, before reading one.
_MAX_HEADER = 100 * 1000 * 1000
# Shape entries and offsets above this are lies (no file is 8 EiB).
_MAX_INT = 2**63 - 1


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor lives in a safetensors file (absolute byte offsets)."""

    name: str
    shape: tuple[int, ...]
    dtype: DType
    start: int
    end: int


class SafetensorsFile:
    """A validated, memory-mapped safetensors file. Reads one tensor at a time; never imports torch.

    Example:
        >>> st = SafetensorsFile(Path("model.safetensors"))  # doctest: +SKIP
        >>> st.read(st.tensors[0].name).dtype  # doctest: +SKIP
        dtype('float32')
    """

    def __init__(self, path: Path):
        self.path = path
        # Header and mapping come from one open file, so a file replaced meanwhile cannot mix them.
        with open_regular(path) as f:
            self.tensors, self.metadata = read_header(path, f)
            _validate_with_safetensors(path)
            self._mmap: np.memmap | None = np.memmap(f, dtype=np.uint8, mode="r")
        self._by_name = {t.name: t for t in self.tensors}

    def raw(self, name: str) -> np.ndarray:
        """The stored values of ``name`` as a read-only view of the mapped file (no copy)."""
        if self._mmap is None:
            raise ValueError(f"{self.path} is closed")
        t = self._by_name[name]
        flat = np.asarray(self._mmap[t.start : t.end]).view(t.dtype.raw)
        return flat.reshape(t.shape)

    def view(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """``(raw(name), the file's mapping)``: what ``Checkpoint.raw_chunks`` reads piece by piece,
        releasing each piece's pages through the mapping."""
        return self.raw(name), self._mmap

    def copy(self, name: str) -> np.ndarray:
        """A fresh copy of ``name``'s stored values (its own dtype, native byte order); its pages released."""
        t = self._by_name[name]
        raw = self.raw(name)
        array = np.array(raw, dtype=raw.dtype.newbyteorder("="), order="C")
        release_pages(self._mmap, t.start, t.end)
        return array

    def read(self, name: str) -> np.ndarray:
        """A fresh array of ``name``: float32 for float dtypes, the native dtype otherwise."""
        array = widen(self.raw(name), self._by_name[name].dtype)
        t = self._by_name[name]
        release_pages(self._mmap, t.start, t.end)
        return array

    def close(self) -> None:
        """Drop the mapping (arrays already returned are copies and stay valid)."""
        self._mmap = None


def read_header(path: Path | str, f: io.BufferedReader, size: int | None = None
                ) -> tuple[tuple[StoredTensor, ...], dict[str, str]]:
    """The validated header of a safetensors file open as ``f`` (any object with ``read``; ``size``:
    the file's length when ``f`` is not a local file): its tensors in data order and its metadata."""
    size = os.fstat(f.fileno()).st_size if size is None else size
    prefix = f.read(8)
    if len(prefix) < 8:
        raise CheckpointFormatError(f"{path} is too short to be a safetensors file ({size} bytes); {_FIX}")
    (n,) = struct.unpack("<Q", prefix)
    if n > _MAX_HEADER:
        raise CheckpointFormatError(
            f"{path} is not a valid safetensors file: its header claims {n} bytes, more than the "
            f"{_MAX_HEADER} safetensors allows; {_FIX}"
        )
    if n > size - 8:
        raise CheckpointFormatError(
            f"{path} is not a valid safetensors file: its header claims {n} bytes but only "
            f"{size - 8} follow; {_FIX}"
        )
    blob = f.read(n)
    # Each tensor entry is a JSON object: counting braces bounds the entries before parsing them.
    if blob.count(b"{") > 2 * MAX_TENSORS + 2:
        raise CheckpointLimitError(
            f"{path} is refused: its safetensors header describes more than {MAX_TENSORS} tensors "
            "(ckpttool's limit, see SECURITY.md); split the file into shards"
        )
    try:
        header = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        # ValueError: bad JSON or an integer of thousands of digits; RecursionError: deep nesting.
        raise CheckpointFormatError(
            f"{path} is not a valid safetensors file: its header is not JSON ({one_line(e)}); {_FIX}"
        ) from e
    if not isinstance(header, dict):
        raise CheckpointFormatError(
            f"{path} is not a valid safetensors file: its header is not a JSON object; {_FIX}"
        )
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise CheckpointFormatError(
            f"{path} is not a valid safetensors file: __metadata__ must map strings to strings; {_FIX}"
        )
    if len(header) > MAX_TENSORS:
        raise CheckpointLimitError(
            f"{path} is refused: its safetensors header describes {len(header)} tensors, more than "
            f"{MAX_TENSORS} (ckpttool's limit, see SECURITY.md); split the file into shards"
        )
    data_start = 8 + n
    tensors = [_stored_tensor(path, name, entry, data_start, size) for name, entry in header.items()]
    tensors.sort(key=lambda t: (t.start, t.end))
    return tuple(tensors), dict(metadata)


def _stored_tensor(path: Path, name: str, entry: object, data_start: int, size: int) -> StoredTensor:
    def bad(what: str) -> CheckpointFormatError:
        return CheckpointFormatError(
            f"{path} is not a valid safetensors file: tensor {name!r} {what}; {_FIX}"
        )

    if not isinstance(entry, dict):
        raise bad("has no dtype/shape/data_offsets entry")
    code, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    dtype = SAFETENSORS_DTYPES.get(code) if isinstance(code, str) else None
    if dtype is None:
        raise CheckpointFormatError(
            f"{path}: tensor {name!r} has dtype {code!r}, which ckpttool cannot read "
            f"(it reads {', '.join(SAFETENSORS_DTYPES)}); convert the tensor to one of them"
        )
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(type(d) is int and 0 <= d <= _MAX_INT for d in shape)
    ):
        raise bad(f"has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int and o <= _MAX_INT for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise bad(f"has invalid data_offsets {offsets!r}")
    begin, end = offsets
    if data_start + end > size:
        raise bad(
            f"points past the end of the file (bytes {begin}..{end} of a data section of {size - data_start})"
        )
    expected = math.prod(shape) * np.dtype(dtype.raw).itemsize
    if end - begin != expected:
        raise bad(f"claims shape {shape} of {code} ({expected} bytes) but spans {end - begin} bytes")
    return StoredTensor(name, tuple(shape), dtype, data_start + begin, data_start + end)


def _validate_with_safetensors(path: Path) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            f.offset_keys()
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointFormatError(f"{path} is not a valid safetensors file ({one_line(e)}); {_FIX}") from e
