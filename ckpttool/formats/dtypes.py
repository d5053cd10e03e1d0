"""Dtype tables shared by every reader: safetensors codes, torch dtype names and torch storage classes,
each mapped to the numpy dtype of the stored bytes and how to widen them (bf16, fp8 by table).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np


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


# Every dtype ckpttool reads, by its torch name (complex128 exists in torch files only).
TORCH_DTYPES: dict[str, DType] = {d.name: d for d in SAFETENSORS_DTYPES.values()}
TORCH_DTYPES["complex128"] = DType("complex128", "<c16", "native")

# torch dtypes that exist but that ckpttool does not read, and why (refused with one line).
UNSUPPORTED_TORCH_DTYPES: dict[str, str] = {
    **{
        n: "a packed sub-byte or bit dtype"
        for n in (
            "bits8",
            "bits16",
            "bits1x8",
            "bits2x4",
            "bits4x2",
            "float4_e2m1fn_x2",
            *(f"int{i}" for i in range(1, 8)),
            *(f"uint{i}" for i in range(1, 8)),
        )
    },  # fmt: skip
    "complex32": "half-precision complex, which numpy cannot represent",
    "bcomplex32": "bfloat16 complex, which numpy cannot represent",
    **{n: "a quantized dtype" for n in ("qint8", "quint8", "qint32", "quint4x2", "quint2x4")},
}

# Legacy typed-storage classes (``torch.FloatStorage``...) as torch pickles name them -> dtype name.
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
    "UntypedStorage": "uint8",  # bytes; the tensor's own dtype (``_rebuild_tensor_v3``) reinterprets them
}
QUANTIZED_STORAGES = ("QInt8Storage", "QUInt8Storage", "QInt32Storage", "QUInt4x2Storage", "QUInt2x4Storage")
