"""Dispatch to a reader: a torch file (zip or legacy) to the reader of its format, and the checks
every reader's result goes through before any tensor is read."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ckpttool.formats import SAFETENSORS, TORCH_ZIP, detect_format
from ckpttool.formats.limits import CheckpointLimitError, materialised_budget
from ckpttool.formats.safetensors import SafetensorsFile
from ckpttool.formats.torch_tensors import PickledFile, TensorRef


def open_pickled(path: Path, fmt: str) -> PickledFile:
    """Scan and unpickle a torch file (zip or legacy) with our restricted unpickler."""
    if fmt == TORCH_ZIP:
        from ckpttool.formats.torch_zip import open_torch_zip

        return open_torch_zip(path)
    from ckpttool.formats.torch_legacy import open_torch_legacy

    return open_torch_legacy(path)


def check_torch_file(path: str | Path) -> None:
    """Put a torch file through every check of ``load_checkpoint`` without unwrapping it.

    For callers that must then ``torch.load`` it themselves (the runner's resume checkpoints hold
    optimizer and RNG state, not a state dict): the same scan, restricted unpickling, storage
    and layout checks and limits apply first, and nothing is loaded unless they pass.

    Raises:
        The same errors as ``load_checkpoint``.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == SAFETENSORS:
        SafetensorsFile(path).close()
        return
    pickled = open_pickled(path, fmt)
    try:
        refs, seen, stack = {}, set(), [("", pickled.obj)]
        while stack:  # every tensor reachable through containers, each container once
            name, node = stack.pop()
            if isinstance(node, TensorRef):
                refs[name] = node
            elif isinstance(node, dict | list | tuple) and id(node) not in seen:
                seen.add(id(node))
                items = dict.items(node) if isinstance(node, dict) else enumerate(node)
                stack.extend((f"{name}.{k}" if name else str(k), v) for k, v in items)
        check_materialised(path, [refs])
    finally:
        pickled.close()


def check_materialised(path: Path, sets: Iterable[dict[str, TensorRef]]) -> None:
    """Refuse a file whose tensors would make us produce far more bytes than it holds (shared storages)."""
    budget = materialised_budget(path.stat().st_size)
    total = 0
    seen: set[int] = set()
    for tensors in sets:
        for name, ref in tensors.items():
            if id(ref) in seen:
                continue
            seen.add(id(ref))
            total += ref.nbytes
            if total > budget:
                raise CheckpointLimitError(
                    f"{path} is refused: reading it up to tensor {name[:80]!r} would produce {total} bytes, more "
                    f"than {budget} for a file of {path.stat().st_size} bytes (tensors sharing storage; "
                    "ckpttool's limit, see SECURITY.md)"
                )
