"""Checkpoint file formats, read without torch: detection by content and one reader per format.

- ``safetensors``: a numpy-only reader of the safetensors layout.
- ``torch_zip`` / ``torch_legacy``: ``torch.save`` files (zip, and the pre-1.6 pickle stream),
  unpickled by our own restricted unpickler (``unpickler``) into lazy tensor descriptions
  (``torch_tensors``) that are read one at a time as numpy arrays.
- ``dtypes``: dtype tables shared by all of them; ``limits``: the documented resource caps.
- ``lfs_pointer``: a Git LFS pointer text in place of a checkpoint (a checkout without the LFS
  content), named as such by ``detect_format`` instead of "not a checkpoint".

``dispatch`` picks the reader for a file; ``ckpttool.weight_sets`` unwraps what it returns.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from pathlib import Path

import numpy as np

from ckpttool.errors import CheckpointFormatError, CheckpointNotFoundError, LfsPointerError

SAFETENSORS = "safetensors"
TORCH_ZIP = "torch-zip"
TORCH_LEGACY = "torch-legacy"

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80

FIX = "the file is truncated or corrupt; re-download or regenerate it"


def one_line(error: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception message, shortened; for wrapping foreign errors."""
    for line in str(error).splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return type(error).__name__


def release_pages(mapped: np.memmap | None, start: int, end: int) -> None:
    """Unmap the pages of ``mapped[start:end]`` just copied, so that reading a whole file keeps one
    tensor resident, not the file. They stay in the page cache; touching them again faults them
    back in with the same bytes."""
    mm = getattr(mapped, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    first = start - start % mmap.PAGESIZE
    if end > first:
        mm.madvise(mmap.MADV_DONTNEED, first, end - first)


def release_view(base: np.ndarray | None, view: np.ndarray) -> None:
    """``release_pages`` for the bytes that ``view``, a view into the memory map ``base``, spans from
    its first to its last element (located by address: views keep no offset of their own; strides
    are >= 0, as the readers refuse others). A private array (not inside ``base``) is left alone."""
    if base is None or view.size == 0:
        return
    start = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    span = sum((n - 1) * s for n, s in zip(view.shape, view.strides, strict=True)) + view.itemsize
    if 0 <= start and start + span <= base.nbytes:
        release_pages(base, start, start + span)


def open_regular(path: Path):
    """Open ``path`` for reading, refusing anything but a regular file (a FIFO would block forever).

    The file is opened non-blocking and checked with ``fstat`` on the open descriptor, so a path
    swapped between the check and the open cannot slip a FIFO or device in.

    Raises:
        CheckpointNotFoundError: the path does not exist.
        CheckpointFormatError: a folder, FIFO, socket or device; or it cannot be read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError as e:
        raise CheckpointNotFoundError(f"checkpoint {path} does not exist; check the path") from e
    except IsADirectoryError as e:
        raise _folder(path) from e
    except OSError as e:
        raise CheckpointFormatError(f"cannot read {path}: {e.strerror or e}; check its permissions") from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise _folder(path)
        raise CheckpointFormatError(
            f"{path} is not a regular file (a FIFO, socket or device); pass the checkpoint file itself"
        )
    if hasattr(os, "O_NONBLOCK"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _folder(path: Path) -> CheckpointFormatError:
    return CheckpointFormatError(
        f"{path} is a folder, not a checkpoint file; pass one of the checkpoint files inside it"
    )


def detect_format(path: Path) -> str:
    """Tell a checkpoint's format from its first bytes, not its name.

    Args:
        path: file to look at.

    Returns:
        ``"safetensors"``, ``"torch-zip"`` (``torch.save`` default, also ``.pth.tar``) or
        ``"torch-legacy"`` (a pickle stream, ``_use_new_zipfile_serialization=False``).

    Raises:
        CheckpointNotFoundError: the path does not exist.
        CheckpointFormatError: a folder, a FIFO or device, an empty file, or content that is none of the above.
        LfsPointerError: a Git LFS pointer in place of the checkpoint (a checkout without the content).
    """
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            head = f.read(9)
        except OSError as e:
            raise CheckpointFormatError(
                f"cannot read {path}: {e.strerror or e}; check its permissions"
            ) from e
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
    if head.startswith(b"version "):  # a Git LFS checkout without the content: say so, and how to fetch it
        from ckpttool.formats.lfs_pointer import read_lfs_pointer

        pointer = read_lfs_pointer(path)
        if pointer is not None:
            raise LfsPointerError(pointer.describe(path), pointer)
    raise CheckpointFormatError(
        f"{path} is not a checkpoint: its content is neither safetensors, a torch zip nor a torch pickle "
        f"(it starts with {head[:8]!r}); check that it is the right file and was copied completely"
    )
