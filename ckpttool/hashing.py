"""File hashing: the identity a manifest, a backup record and a run record store for a checkpoint."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ckpttool.errors import CheckpointFormatError, CheckpointNotFoundError

_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks (constant memory).

    Args:
        path: the file.

    Returns:
        The lowercase hex digest.

    Raises:
        CheckpointNotFoundError: the file does not exist.
        CheckpointFormatError: it cannot be read (a folder, no permission).

    Example:
        >>> file_sha256("init_model/vit_small_cifar10_pretrained_init.safetensors")  # doctest: +SKIP
        '3b1f...'
    """
    digest = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    try:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                digest.update(view[:n])
    except FileNotFoundError as e:
        raise CheckpointNotFoundError(f"cannot hash {path}: it does not exist; check the path") from e
    except OSError as e:
        raise CheckpointFormatError(
            f"cannot hash {path}: {e.strerror or e}; check that it is a readable file"
        ) from e
    return digest.hexdigest()
