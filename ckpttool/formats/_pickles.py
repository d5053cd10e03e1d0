"""What the two torch readers share: scan-then-unpickle of one pickle, and errors with the path in them."""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from pathlib import Path

from ckpttool.errors import CheckpointFormatError, CkptError, UnsafeCheckpointError
from ckpttool.formats import FIX, one_line, open_regular
from ckpttool.formats.limits import MAX_PICKLE_BYTES, CheckpointLimitError
from ckpttool.formats.torch_tensors import PickledFile, StorageRef, TensorCounter
from ckpttool.formats.unpickler import (
    RestrictedUnpickler,
    scan_pickle,
    unsafe_globals,
    unsafe_message,
    unsupported_message,
)


def open_with(path: Path, read: Callable[[Path, io.BufferedReader], PickledFile]) -> PickledFile:
    """Open ``path`` (a regular file only) and ``read`` it; any failure becomes one typed error with the path."""
    f = open_regular(path)
    try:
        return read(path, f)
    except BaseException as e:
        f.close()
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        raise located(path, e) from e


def located(path: Path, error: BaseException) -> CkptError:
    """Our typed error for ``error`` raised while reading ``path``, with the path in a single line."""
    if isinstance(error, CkptError) and str(path) in str(error):
        return error
    if isinstance(error, CheckpointLimitError):
        return CheckpointLimitError(f"{path} is refused: {error}")
    if isinstance(error, UnsafeCheckpointError):
        return UnsafeCheckpointError(f"refused to load {path}: {error}")
    if isinstance(error, CheckpointFormatError):
        return CheckpointFormatError(f"{path} is not a readable torch checkpoint: {error}")
    if isinstance(error, CkptError):
        return error
    if isinstance(error, RecursionError):
        return CheckpointLimitError(f"{path} is refused: its pickle nests objects too deeply")
    if isinstance(error, MemoryError):
        return CheckpointLimitError(f"{path} is refused: reading it ran out of memory")
    return CheckpointFormatError(f"{path} is not a readable torch checkpoint ({one_line(error)}); {FIX}")


def scan_one(path: Path, data: bytes) -> None:
    """Scan one pickle's bytes: refuse unsafe globals (all named) and files beyond the limits."""
    check_scan(path, *scan_pickle(io.BytesIO(data)))


def check_scan(path: Path, found: set[str], unsupported: str | None) -> None:
    """Refuse unsafe globals (every one named), then opcodes torch's weights-only loader lacks."""
    unsafe = unsafe_globals(found)
    if unsafe:
        raise UnsafeCheckpointError(unsafe_message(path, unsafe))
    if unsupported is not None:
        raise CheckpointFormatError(unsupported_message(path, unsupported))


def load_one(data: bytes, storage: Callable[[tuple], StorageRef], counter: TensorCounter) -> object:
    """Unpickle one scanned pickle with our restricted unpickler."""
    if len(data) > MAX_PICKLE_BYTES:
        raise CheckpointLimitError(f"its pickle is larger than {MAX_PICKLE_BYTES} bytes (see SECURITY.md)")
    unpickler = RestrictedUnpickler(
        io.BytesIO(data), pickle_bytes=len(data), storage=storage, counter=counter
    )
    try:
        return unpickler.load()
    except pickle.UnpicklingError as e:
        raise CheckpointFormatError(f"malformed pickle ({one_line(e)})") from e


def no_storages(pid: tuple) -> StorageRef:
    raise CheckpointFormatError("a header pickle refers to a storage")
