"""Git LFS pointer files: what a checkpoint tracked by Git LFS is when its content was never fetched.

A repository clone without ``git lfs pull`` (a CI checkout without ``lfs: true``) holds, in place
of each LFS-tracked file, a small text file (the pointer, under 1,024 bytes by the spec)::

    version https://git-lfs.github.com/spec/v1
    oid sha256:4d7a2146...
    size 87654321

Its ``oid`` is the sha256 of the real content, so a manifest can be checked against it without the
content. Everything here is parsed from a file and hostile: only the exact shape of the spec is
accepted, and a file that merely starts like one is left to the ordinary "not a checkpoint" error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ckpttool.errors import CkptError
from ckpttool.formats import open_regular

# The spec's limit; git-lfs itself never treats a larger file as a pointer.
MAX_POINTER_SIZE = 1024
# The current spec URL and the pre-1.0 one git-lfs still accepts.
_VERSIONS = (b"https://git-lfs.github.com/spec/v1", b"https://hawser.github.com/spec/v1")
_LINE = re.compile(rb"([a-z0-9.-]+) ([^\r\n]*)")
_OID = re.compile(rb"sha256:([0-9a-f]{64})")
_SIZE = re.compile(rb"(0|[1-9][0-9]{0,18})")
FETCH_HINT = "run `git lfs pull` in the repository (in GitHub Actions: actions/checkout with `lfs: true`)"


@dataclass(frozen=True)
class LfsPointer:
    """A parsed Git LFS pointer: the sha256 and size of the content it stands for."""

    oid: str  # sha256 hex of the real content
    size: int  # bytes of the real content

    def describe(self, path: str | Path) -> str:
        """The one line a user sees: what the file is, and how to get the content."""
        return (f"{path} is a Git LFS pointer (oid sha256:{self.oid}, size {self.size} bytes), not the "
                f"checkpoint: its content was never fetched; {FETCH_HINT}")


def parse_lfs_pointer(data: bytes) -> LfsPointer | None:
    """The pointer ``data`` holds, or None when it is not exactly one (the spec's shape: ``version``
    first, then ``key value`` lines with unique keys, each ending in a newline, ``oid`` and ``size``
    present).

    Example:
        >>> parse_lfs_pointer(b"version https://git-lfs.github.com/spec/v1\\noid sha256:" + b"a" * 64 + b"\\nsize 12\\n")
        LfsPointer(oid='aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', size=12)
    """
    if len(data) >= MAX_POINTER_SIZE or not data.endswith(b"\n"):
        return None
    fields: dict[bytes, bytes] = {}
    for i, line in enumerate(data[:-1].split(b"\n")):
        m = _LINE.fullmatch(line)
        if m is None or m[1] in fields or (i == 0) != (m[1] == b"version"):
            return None
        fields[m[1]] = m[2]
    oid, size = _OID.fullmatch(fields.get(b"oid", b"")), _SIZE.fullmatch(fields.get(b"size", b""))
    if fields.get(b"version") not in _VERSIONS or oid is None or size is None:
        return None
    return LfsPointer(oid[1].decode("ascii"), int(size[1]))


def read_lfs_pointer(path: str | Path) -> LfsPointer | None:
    """The pointer at ``path`` if the file is one, else None (also when it cannot be read: the
    caller's own reader says why). Reads at most ``MAX_POINTER_SIZE`` bytes of a regular file."""
    try:
        with open_regular(Path(path)) as f:
            if os.fstat(f.fileno()).st_size >= MAX_POINTER_SIZE:
                return None
            data = f.read(MAX_POINTER_SIZE)
    except (CkptError, OSError):
        return None
    return parse_lfs_pointer(data)
