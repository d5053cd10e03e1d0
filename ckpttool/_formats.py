"""Checkpoint formats: detection by content, dtype tables, and a numpy-only safetensors reader.

Nothing here imports torch: ``ckpttool verify`` on a ``.safetensors`` file must not pay for it.
The reader validates the header itself (so that every lie gets a precise message), lets
``safetensors.safe_open`` validate it a second time, then memory-maps the file and reads one
tensor at a time, converting float dtypes to float32 with numpy alone.
"""

from __future__ import annotations

import functools
import io
import json
import math
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ckpttool.errors import CheckpointFormatError, CheckpointNotFoundError

SAFETENSORS = "safetensors"
TORCH_ZIP = "torch-zip"
TORCH_LEGACY = "torch-legacy"

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
# safetensors refuses headers above 100 MB; so do we, before reading one.
_MAX_HEADER = 100 * 1000 * 1000

_FIX = "the file is truncated or corrupt; re-download or regenerate it"


def one_line(error: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception message, shortened; for wrapping foreign errors."""
    for line in str(error).splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return type(error).__name__


def detect_format(path: Path) -> str:
    """Tell a checkpoint's format from its first bytes, not its name.

    Args:
        path: file to look at.

    Returns:
        ``"safetensors"``, ``"torch-zip"`` (``torch.save`` default, also ``.pth.tar``) or
        ``"torch-legacy"`` (a pickle stream, ``_use_new_zipfile_serialization=False``).

    Raises:
        CheckpointNotFoundError: the path does not exist.
        CheckpointFormatError: a folder, an empty file, or content that is none of the above.
    """
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise CheckpointFormatError(
                f"{path} is a folder, not a checkpoint file; pass one of the checkpoint files inside it"
            )
        with open(path, "rb") as f:
            head = f.read(9)
    except FileNotFoundError as e:
        raise CheckpointNotFoundError(f"checkpoint {path} does not exist; check the path") from e
    except OSError as e:
        raise CheckpointFormatError(f"cannot read {path}: {e.strerror or e}; check its permissions") from e
    if not head:
        raise CheckpointFormatError(
            f"{path} is empty (0 bytes); the write that produced it failed, regenerate or restore it"
        )
    if head.startswith(_ZIP_MAGIC):
        return TORCH_ZIP
    if len(head) == 9 and head[8:9] == b"{":
        # A header length whose low byte is 0x80 looks like a pickle's PROTO opcode; a pickle's
        # next 7 bytes read as a length would exceed the file, so plausibility settles it.
        (n,) = struct.unpack("<Q", head[:8])
        if head[0] != _PICKLE_PROTO or n <= size - 8:
            return SAFETENSORS
    if head[0] == _PICKLE_PROTO:
        return TORCH_LEGACY
    raise CheckpointFormatError(
        f"{path} is not a checkpoint: its content is neither safetensors, a torch zip nor a torch pickle "
        f"(it starts with {head[:8]!r}); check that it is the right file and was copied completely"
    )


# --- dtypes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DType:
    """One safetensors dtype: its torch spelling, the numpy dtype of its raw bytes, how to widen it."""

    name: str  # torch spelling without "torch."
    raw: str  # numpy dtype of the stored bytes (little-endian)
    kind: str  # "float" (numpy float), "bf16", "fp8" (lookup table), "native" (int/bool/complex)


SAFETENSORS_DTYPES: dict[str, DType] = {
    "F64": DType("float64", "<f8", "float"),
    "F32": DType("float32", "<f4", "float"),
    "F16": DType("float16", "<f2", "float"),
    "BF16": DType("bfloat16", "<u2", "bf16"),
    "F8_E4M3": DType("float8_e4m3fn", "u1", "fp8"),
    "F8_E5M2": DType("float8_e5m2", "u1", "fp8"),
    "F8_E4M3FNUZ": DType("float8_e4m3fnuz", "u1", "fp8"),
    "F8_E5M2FNUZ": DType("float8_e5m2fnuz", "u1", "fp8"),
    "F8_E8M0": DType("float8_e8m0fnu", "u1", "fp8"),
    "I64": DType("int64", "<i8", "native"),
    "I32": DType("int32", "<i4", "native"),
    "I16": DType("int16", "<i2", "native"),
    "I8": DType("int8", "i1", "native"),
    "U64": DType("uint64", "<u8", "native"),
    "U32": DType("uint32", "<u4", "native"),
    "U16": DType("uint16", "<u2", "native"),
    "U8": DType("uint8", "u1", "native"),
    "BOOL": DType("bool", "?", "native"),
    "C64": DType("complex64", "<c8", "native"),
}


def _minifloat(byte: int, exp_bits: int, man_bits: int, bias: int, style: str) -> float:
    sign = -1.0 if byte >> 7 else 1.0
    exp = (byte >> man_bits) & ((1 << exp_bits) - 1)
    man = byte & ((1 << man_bits) - 1)
    top = (1 << exp_bits) - 1
    if style == "fnuz" and byte == 0x80:  # the only NaN; there is no negative zero
        return math.nan
    if style == "ieee" and exp == top:
        return sign * math.inf if man == 0 else math.nan
    if style == "fn" and exp == top and man == (1 << man_bits) - 1:
        return math.nan
    if exp == 0:
        return sign * (man / (1 << man_bits)) * 2.0 ** (1 - bias)
    return sign * (1 + man / (1 << man_bits)) * 2.0 ** (exp - bias)


@functools.cache
def fp8_table(name: str) -> np.ndarray:
    """The float32 value of each of the 256 bytes of an 8-bit float dtype (built once per dtype)."""
    if name == "float8_e8m0fnu":  # exponent only, no sign, 0xFF is NaN
        values = [math.nan if b == 0xFF else 2.0 ** (b - 127) for b in range(256)]
    else:
        exp_bits, man_bits, bias, style = {
            "float8_e4m3fn": (4, 3, 7, "fn"),
            "float8_e5m2": (5, 2, 15, "ieee"),
            "float8_e4m3fnuz": (4, 3, 8, "fnuz"),
            "float8_e5m2fnuz": (5, 2, 16, "fnuz"),
        }[name]
        values = [_minifloat(b, exp_bits, man_bits, bias, style) for b in range(256)]
    table = np.array(values, dtype=np.float32)
    table.flags.writeable = False
    return table


def widen(raw: np.ndarray, dtype: DType) -> np.ndarray:
    """Convert raw stored values to what ``Checkpoint.array`` returns: a fresh, writable array.

    Float dtypes become float32 (bf16 by bit shift, fp8 by lookup table); int/bool/complex keep
    their dtype (native byte order).
    """
    if dtype.kind == "float":
        return np.array(raw, dtype=np.float32)
    if dtype.kind == "bf16":
        bits = raw.astype(np.uint32)
        bits <<= 16
        return bits.view(np.float32)
    if dtype.kind == "fp8":
        return fp8_table(dtype.name)[raw]
    return np.array(raw, dtype=raw.dtype.newbyteorder("="))


# --- safetensors --------------------------------------------------------------------------------


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
        with open(path, "rb") as f:
            self.tensors, self.metadata = _read_header(path, f)
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

    def read(self, name: str) -> np.ndarray:
        """A fresh array of ``name``: float32 for float dtypes, the native dtype otherwise."""
        array = widen(self.raw(name), self._by_name[name].dtype)
        self._release(self._by_name[name])
        return array

    def _release(self, t: StoredTensor) -> None:
        """Unmap the pages just copied, so that reading a whole file keeps one tensor resident, not the file.

        They stay in the page cache; touching them again faults them back in with the same bytes.
        """
        mm = getattr(self._mmap, "_mmap", None)
        if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = t.start - t.start % mmap.PAGESIZE
        if t.end > start:
            mm.madvise(mmap.MADV_DONTNEED, start, t.end - start)

    def close(self) -> None:
        """Drop the mapping (arrays already returned are copies and stay valid)."""
        self._mmap = None


def _read_header(path: Path, f: io.BufferedReader) -> tuple[tuple[StoredTensor, ...], dict[str, str]]:
    size = os.fstat(f.fileno()).st_size
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
    try:
        header = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
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
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise bad(f"has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
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
