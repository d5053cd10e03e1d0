"""Advisory file locks that serialise writers of one file across processes.

Two ``ckpttool generate`` runs aimed at one destination, or two backups into one ``backup_old``,
take the same lock: the second waits, then sees what the first did. The lock is an ``fcntl.flock``
on a dot-file next to the guarded path (``.NAME.lock``); the kernel releases it when the holder
exits, even on ``kill -9``, so a stale lock file is harmless and is never deleted (deleting it would
let two processes lock two different inodes).

The lock file sits in a folder that may have come with a repository: it is opened with ``O_NOFOLLOW``
and must be a regular file, so a planted symlink (or FIFO) named like the lock is refused instead of
creating or truncating whatever it points at.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ckpttool.errors import CheckpointNotFoundError, CkptError, OutputError

DEFAULT_LOCK_TIMEOUT_S = 600.0


def lock_path_for(path: str | Path) -> Path:
    """The lock file that guards ``path``: ``.NAME.lock`` in the same folder.

    Example:
        >>> lock_path_for("init_model/a.pth.tar").name
        '.a.pth.tar.lock'
    """
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextmanager
def file_lock(path: str | Path, *, timeout: float | None = DEFAULT_LOCK_TIMEOUT_S,
              poll_interval: float = 0.05) -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` (through its lock file) for the ``with`` block.

    Args:
        path: the file being guarded (it need not exist; its folder must).
        timeout: seconds to wait for another holder; None waits forever.
        poll_interval: seconds between attempts while waiting.

    Yields:
        The lock file's path.

    Raises:
        OutputError: the folder cannot hold a lock file, or the lock was not obtained in time.

    Example:
        >>> with file_lock(tmp / "a.pth.tar"):  # doctest: +SKIP
        ...     write_it()
    """
    from ckpttool._files import open_regular

    lock = lock_path_for(path)
    try:
        fd = open_regular(lock, action="cannot use lock file", follow_symlinks=False,
                          flags=os.O_RDWR | os.O_CREAT)
    except CheckpointNotFoundError as e:
        raise OutputError(f"cannot create lock file {lock}: its folder does not exist; check {lock.parent}") from e
    except CkptError as e:  # a planted symlink or FIFO, or a folder that is not writable
        raise OutputError(f"{e}; check that {lock.parent} is a writable folder, and remove {lock} if it is "
                          "not an empty file ckpttool made") from e
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise OutputError(f"cannot lock {lock}: {e.strerror or e}") from e
                if deadline is not None and time.monotonic() >= deadline:
                    raise OutputError(
                        f"{path} is locked by another process (lock file {lock}) for more than "
                        f"{timeout:g} s; wait for it to finish and retry"
                    ) from None
                time.sleep(poll_interval)
        try:
            yield lock
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
