"""Save state dicts atomically, with ckpttool metadata, in a form ``load_checkpoint`` reads back safely."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ckpttool._atomic import atomic_write
from ckpttool.errors import InvalidArgumentError
from ckpttool.hashing import file_sha256

if TYPE_CHECKING:
    import torch

_METADATA_KEY = "ckpttool"


def save_checkpoint(
    path: str | Path, state_dict: Mapping[str, torch.Tensor], *, metadata: dict | None = None
) -> str:
    """Write a state dict atomically and return the file's sha256.

    ``.safetensors`` paths get safetensors, with ``metadata`` JSON-encoded under the key
    ``"ckpttool"`` of ``__metadata__``; any other path (``.pth``, ``.pth.tar``...) gets a torch zip
    holding ``{"state_dict": ..., "ckpttool": metadata}``, loadable with ``weights_only=True``.
    Either way ``load_checkpoint(path).metadata`` gives ``metadata`` back (as JSON round-trips it:
    tuples become lists). Tensors are saved contiguous, on the CPU and cloned, so tensors that
    share storage (tied weights, views) never break safetensors.

    Args:
        path: destination; its folder must exist. An existing file is replaced atomically.
        state_dict: tensor name -> tensor.
        metadata: JSON-serialisable dict (provenance, expected verdict...).

    Returns:
        The hex sha256 of the written file.

    Raises:
        InvalidArgumentError: empty state dict, a non-tensor value, or metadata that is not JSON.
        OutputError: the file cannot be written (nothing half-written remains).

    Example:
        >>> save_checkpoint("init_model/vit_tiny.safetensors", model.state_dict(),
        ...                 metadata={"arch": "vit_tiny_patch16_224", "init": "random"})  # doctest: +SKIP
        '9f2c...'
    """
    import torch

    path = Path(path)
    tensors = _prepare(path, state_dict, torch)
    meta_json = _metadata_json(path, metadata)
    if path.name.lower().endswith(".safetensors"):
        from safetensors.torch import save

        header = {"format": "pt"}
        if meta_json is not None:
            header[_METADATA_KEY] = meta_json
        try:
            data = save(tensors, metadata=header)
        except (ValueError, RuntimeError, TypeError) as e:
            raise InvalidArgumentError(f"cannot save {path} as safetensors: {e}") from e
        with atomic_write(path) as f:
            f.write(data)
    else:
        payload: dict = {"state_dict": tensors}
        if meta_json is not None:
            payload[_METADATA_KEY] = json.loads(meta_json)  # plain types only: weights_only loads it
        with atomic_write(path) as f:
            try:
                torch.save(payload, f)
            except RuntimeError as e:
                # After a failed write (ENOSPC...) torch's zip writer fails again while closing and
                # raises "unexpected pos"; the OS error under it is what atomic_write reports.
                os_error = _os_error_in(e)
                if os_error is None:
                    raise
                raise os_error from e
    return file_sha256(path)


def _os_error_in(error: BaseException) -> OSError | None:
    seen = 0
    cause = error.__cause__ or error.__context__
    while cause is not None and seen < 8:
        if isinstance(cause, OSError):
            return cause
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return None


def _prepare(path: Path, state_dict: Mapping, torch) -> dict:
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise InvalidArgumentError(f"cannot save {path}: the state dict is empty or not a dict of tensors")
    bad = sorted(str(k) for k, v in state_dict.items() if not isinstance(k, str) or not torch.is_tensor(v))
    if bad:
        raise InvalidArgumentError(
            f"cannot save {path}: entries {', '.join(bad[:5])} are not str -> tensor; pass model.state_dict()"
        )
    return {
        k: v.detach().to("cpu").clone(memory_format=torch.contiguous_format) for k, v in state_dict.items()
    }


def _metadata_json(path: Path, metadata: dict | None) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise InvalidArgumentError(
            f"cannot save {path}: metadata must be a dict, not {type(metadata).__name__}"
        )
    try:
        return json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"cannot save {path}: metadata is not JSON-serialisable ({e})") from e
