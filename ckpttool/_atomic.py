"""Atomic file writes: a reader sees the old file or the complete new one, never a half-written one."""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ckpttool.errors import CkptError, InvalidArgumentError, OutputError

logger = logging.getLogger(__name__)

_MODES = ("wb", "w", "wt")


def output_error(path: Path, error: OSError) -> OutputError:
    """One line naming the destination, the OS reason and what to check."""
    code = errno.errorcode.get(error.errno, str(error.errno)) if error.errno is not None else "?"
    reason = error.strerror or str(error) or type(error).__name__
    return OutputError(
        f"cannot write {path}: {reason} ({code}); check that its folder exists, is writable and has free space"
    )


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", *, permissions: int | None = None) -> Iterator[IO[Any]]:
    """Write a file atomically through a temporary file in the same folder.

    The temporary file is ``.<name>.<random>.tmp`` beside the destination, created by
    ``tempfile.mkstemp`` (``O_CREAT | O_EXCL | O_NOFOLLOW``, mode 0600): a planted file or symlink is
    never opened, and nobody else can read the content while it is written. On success it is
    flushed, fsynced, given its final permissions, renamed over the destination with ``os.replace``
    (which replaces a symlink there, never writes through it) and the folder is fsynced. On any
    exception the temporary file is removed and the destination is untouched.

    Args:
        path: destination file; its folder must exist.
        mode: ``"wb"`` (default) or ``"w"`` (text, UTF-8).
        permissions: the final mode bits; default: keep the destination's, or 0o666 minus the umask.

    Yields:
        The open temporary file to write to.

    Raises:
        OutputError: the folder is missing or unwritable, the disk is full, or another OS error.

    Example:
        >>> with atomic_write(Path("out/report.json"), "w") as f:  # doctest: +SKIP
        ...     f.write("{}")
    """
    if mode not in _MODES:
        raise InvalidArgumentError(f"atomic_write mode must be one of {', '.join(_MODES)}, not {mode!r}")
    path = Path(path)
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise output_error(path, e) from e
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _final_mode(path) if permissions is None else permissions)
        os.replace(tmp, path)
    except BaseException as e:
        _remove_quietly(tmp)
        if isinstance(e, OSError) and not isinstance(e, CkptError):
            raise output_error(path, e) from e
        raise
    _fsync_folder(folder)


def _final_mode(path: Path) -> int:
    """Keep an existing file's permissions; a new file gets the usual 0o666 minus the umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _remove_quietly(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        logger.warning("could not remove temporary file %s", tmp)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable. Some filesystems cannot fsync a folder; the file is in place anyway."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        logger.debug("fsync of folder %s not supported", folder)
    finally:
        os.close(fd)
