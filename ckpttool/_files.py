"""Opening files that arrive with a folder (backups, manifests, locks) without trusting what they are.

A path in a repository can be a symlink to any file of the user's, or a FIFO that blocks the first
``open`` forever. :func:`open_regular` opens without blocking, optionally without following a final
symlink, and checks the opened descriptor (not the path, which can change in between) is a regular file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ckpttool.errors import CheckpointNotFoundError, InvalidArgumentError

_CHUNK = 1 << 20
_KINDS = (
    (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
)  # fmt: skip


def describe_kind(mode: int) -> str:
    """'a folder', 'a FIFO (named pipe)', ... for a non-regular ``st_mode``."""
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | Path, *, action: str, follow_symlinks: bool = True, flags: int = os.O_RDONLY,
                 create_mode: int = 0o644, symlink_hint: str = "") -> int:
    """Open ``path`` and return its descriptor, refusing anything but a regular file.

    Args:
        path: the file.
        action: what the caller was doing, for messages: "cannot back up", "cannot lock".
        follow_symlinks: False refuses a symlink in the last component (``O_NOFOLLOW``).
        flags: ``os.O_RDONLY`` (default), or e.g. ``os.O_RDWR | os.O_CREAT`` for a lock file.
        create_mode: permissions when ``flags`` creates the file.
        symlink_hint: appended to the message when a symlink is refused ("; pass the real file ...").

    Returns:
        A blocking descriptor (close-on-exec) the caller owns.

    Raises:
        CheckpointNotFoundError: it does not exist.
        InvalidArgumentError: it is a symlink (with ``follow_symlinks=False``), a folder, a FIFO, a
            device or a socket, or cannot be opened.
    """
    path = Path(path)
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever
    flags |= os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags, create_mode)
    except FileNotFoundError as e:
        raise CheckpointNotFoundError(f"{action} {path}: no such file") from e
    except OSError as e:
        if e.errno == errno.ELOOP and not follow_symlinks:
            raise InvalidArgumentError(f"{action} {path}: it is a symlink (to {os.path.realpath(path)}) and "
                                       f"symlinks are not followed here{symlink_hint}") from e
        if e.errno == errno.EISDIR:
            raise InvalidArgumentError(f"{action} {path}: it is a folder, not a regular file") from e
        raise InvalidArgumentError(f"{action} {path}: {e.strerror or e}") from e
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InvalidArgumentError(f"{action} {path}: it is {describe_kind(mode)}, not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def copy_and_hash(src: BinaryIO, out: BinaryIO | None = None) -> tuple[str, int]:
    """sha256 (hex) and size of the rest of ``src``, copied to ``out`` on the way when given.

    Hashing the descriptor that was checked, rather than reopening the path, means the bytes hashed
    are the bytes of the file that passed :func:`open_regular`.
    """
    digest = hashlib.sha256()
    size = 0
    while chunk := src.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if out is not None:
            out.write(chunk)
    return digest.hexdigest(), size


def is_relative_inside(value: object) -> bool:
    """Whether ``value`` (from a file) is a relative '/'-separated path that stays inside its folder:
    a non-empty string, not absolute, no ``..`` component, no NUL."""
    if not isinstance(value, str) or not value or "\0" in value or value.startswith("/"):
        return False
    return ".." not in PurePosixPath(value).parts


def is_below(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path``, with every symlink resolved, lies inside ``folder`` (also resolved)."""
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([real, base]) == base
