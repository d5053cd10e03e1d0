"""Legacy torch pickles (``torch.save(..., _use_new_zipfile_serialization=False)``), read without torch.

Layout: five pickles in a row (magic number, protocol version, sys info, the object, the list of
storage keys), then each storage in key order as an 8-byte element count and its raw bytes. Every
pickle is scanned as a stream (one opcode at a time, within the limits) before it is unpickled;
storage sizes are checked against the counts and the file size; the file is memory-mapped. Sizes and
storages are little-endian, as torch reads them (the sys info's ``little_endian`` is ignored, as by torch).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from ckpttool.errors import CheckpointFormatError
from ckpttool.formats import FIX, release_pages
from ckpttool.formats._pickles import check_scan, load_one, no_storages, open_with
from ckpttool.formats.limits import MAX_PICKLE_BYTES, CheckpointLimitError
from ckpttool.formats.torch_tensors import PickledFile, StorageRef, TensorCounter
from ckpttool.formats.unpickler import scan_pickle, storage_dtype

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001


class _BoundedReader:
    """A binary file whose ``read(n)`` never asks for more than what is left of the file or the cap.

    A pickle opcode may claim any length (BINUNICODE8: 2**64 bytes); a plain ``read(n)`` of a
    buffered file allocates n bytes before finding out that the file is shorter.
    """

    def __init__(self, f: io.BufferedReader, end: int):
        self._f, self._end = f, end

    def read(self, n: int = -1) -> bytes:
        left = max(self._end - self._f.tell(), 0)
        return self._f.read(left if n is None or n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self._f.readline(max(self._end - self._f.tell(), 0))

    def tell(self) -> int:
        return self._f.tell()


def open_torch_legacy(path: Path) -> PickledFile:
    """Scan and unpickle a legacy torch stream into a ``PickledFile``.

    Raises:
        UnsafeCheckpointError: a pickle imports globals outside the allow-list (nothing executed).
        CheckpointFormatError: not a torch stream, truncated, lying about sizes, or beyond a limit.
    """
    return open_with(path, _open)


def _scan_next(f: io.BufferedReader, size: int) -> tuple[int, int, set[str], str | None]:
    """Scan the next pickle of the stream (as a stream); returns its span, globals and first odd opcode."""
    start = f.tell()
    found, unsupported = scan_pickle(_BoundedReader(f, min(size, start + MAX_PICKLE_BYTES)))
    end = f.tell()
    if end - start >= MAX_PICKLE_BYTES:
        raise CheckpointLimitError(
            f"one of its pickles is larger than {MAX_PICKLE_BYTES} bytes (see SECURITY.md)"
        )
    return start, end, found, unsupported


def _open(path: Path, f: io.BufferedReader) -> PickledFile:
    size = os.fstat(f.fileno()).st_size
    counter = TensorCounter()
    # Every pickle is scanned before any is unpickled, so that a refusal names every unsafe global.
    start, end, found, unsupported = _scan_next(f, size)
    spans = [(start, end)]
    magic = load_one(os.pread(f.fileno(), end - start, start), no_storages, counter) if not found else None
    if magic != LEGACY_MAGIC:
        check_scan(path, found, None)
        raise CheckpointFormatError(
            f"{path} is a plain pickle, not a torch.save checkpoint; re-save it with torch.save(model.state_dict())"
        )
    for _ in range(4):
        start, end, more, odd = _scan_next(f, size)
        spans.append((start, end))
        found |= more
        unsupported = unsupported or odd
    check_scan(path, found, unsupported)
    pickles = iter([os.pread(f.fileno(), e - s, s) for s, e in spans[1:]])
    version = load_one(next(pickles), no_storages, counter)
    if version != _PROTOCOL_VERSION:
        raise CheckpointFormatError(f"unknown legacy protocol version {version!r:.20}; {FIX}")
    # sys_info is unpickled (it is checked like the rest) but, as by torch, not used: torch's legacy
    # reader reads every size and storage as little-endian whatever it says (issue 19, compatibility)
    load_one(next(pickles), no_storages, counter)
    refs: dict[str, StorageRef] = {}

    def storage(pid: tuple) -> StorageRef:
        if len(pid) != 6:
            raise CheckpointFormatError("a storage reference has the wrong form for a legacy checkpoint")
        _, storage_type, key, _location, numel, view = pid
        dtype = storage_dtype(storage_type)
        if getattr(storage_type, "name", "").endswith("UntypedStorage"):  # torch's legacy loader fails on these too
            raise CheckpointFormatError(
                "it is a legacy (non-zip) file with untyped storages (float8, uint16... tensors), which torch "
                "cannot load either; re-save it with torch.save's default zip format"
            )
        if view is not None:
            raise CheckpointFormatError("it uses storage views (torch < 0.4), which ckpttool does not read")
        if not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise CheckpointFormatError("a storage reference is malformed")
        ref = StorageRef(key, dtype, numel)
        known = refs.setdefault(key, ref)
        if (known.dtype, known.numel) != (ref.dtype, ref.numel):
            raise CheckpointFormatError(f"storage {key[:40]!r} is referenced with two sizes")
        if ref.nbytes > size:
            raise CheckpointFormatError(
                f"storage {key[:40]!r} claims {ref.nbytes} bytes, more than the file; {FIX}"
            )
        return known

    obj = load_one(next(pickles), storage, counter)
    keys = load_one(next(pickles), no_storages, counter)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointFormatError(f"its list of storages is malformed; {FIX}")
    offsets: dict[str, int] = {}
    pos = spans[-1][1]
    for key in keys:
        ref = refs.get(key)
        if ref is None:
            raise CheckpointFormatError(f"it stores storage {key[:40]!r} that nothing refers to; {FIX}")
        head = os.pread(f.fileno(), 8, pos)
        if len(head) != 8:
            raise CheckpointFormatError(f"storage {key[:40]!r} is missing (the file ends early); {FIX}")
        stored = int.from_bytes(head, "little", signed=True)
        if stored != ref.numel:
            raise CheckpointFormatError(
                f"storage {key[:40]!r} is referenced as {ref.numel} elements but stored as {stored}; {FIX}"
            )
        offsets[key] = pos + 8
        pos += 8 + ref.nbytes
        if pos > size:
            raise CheckpointFormatError(f"storage {key[:40]!r} reaches past the end of the file; {FIX}")
    missing = set(refs) - set(offsets)
    if missing:
        raise CheckpointFormatError(
            f"storage {sorted(missing)[0][:40]!r} is referenced but not stored; {FIX}"
        )
    mapped = np.memmap(f, dtype=np.uint8, mode="r")

    def buffer(ref: StorageRef) -> np.ndarray:
        start = offsets[ref.key]
        return mapped[start : start + ref.nbytes]

    def release(ref: StorageRef) -> None:
        release_pages(mapped, offsets[ref.key], offsets[ref.key] + ref.nbytes)

    return PickledFile(obj, "<", buffer, f.close, release, base=mapped)
