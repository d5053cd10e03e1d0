"""The resource caps every reader enforces (documented in SECURITY.md). A file beyond one is refused
with one line naming the cap; nothing is allocated for it first.

The caps are far above what real checkpoints need (a vit_base ``data.pkl`` is ~30 KB and ~5,000
opcodes; a 70B-parameter shard a few thousand tensors) and low enough that a hostile file cannot
take more than a few hundred MB or a few seconds before it is refused.
"""

from __future__ import annotations

from ckpttool.errors import CheckpointFormatError

# A torch pickle (data.pkl, or each pickle of a legacy stream), after inflation.
MAX_PICKLE_BYTES = 32 * 1024 * 1024
# Opcodes in one pickle: bounds the objects an unpickler can create (each opcode makes at most one).
MAX_OPCODES = 500_000
# Containers nested deeper than this are refused (hashing a deeply nested tuple recurses in C).
MAX_NESTING = 500
# Tensors in one file (safetensors header entries, or tensor rebuilds in a pickle).
MAX_TENSORS = 100_000
# Dimensions of one tensor.
MAX_NDIM = 64
# Work done by the interpreted callables (elements copied into sets, bytes built...), per pickle byte.
WORK_PER_PICKLE_BYTE = 16
WORK_FLOOR = 1_000_000
# Bytes of tensor data materialised while reading a file, at most this many times the file size...
MATERIALISED_PER_FILE_BYTE = 4
# ...plus this (tied weights read twice, tiny files).
MATERIALISED_FLOOR = 64 * 1024 * 1024


class CheckpointLimitError(CheckpointFormatError):
    """A file exceeds one of the documented resource caps (exit 2)."""


def materialised_budget(file_size: int) -> int:
    """The most tensor bytes a file of ``file_size`` bytes may make a reader produce."""
    return MATERIALISED_PER_FILE_BYTE * file_size + MATERIALISED_FLOOR
