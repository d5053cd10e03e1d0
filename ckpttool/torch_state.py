"""Conversion to torch: a checkpoint's tensors as real torch tensors, and torch tensors as numpy.

The file is read by the same torch-free readers as ``load_checkpoint`` (same scan, same limits,
same unwrapping); only the final arrays become torch tensors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ckpttool.errors import CheckpointFormatError
from ckpttool.formats import FIX, SAFETENSORS, detect_format, one_line
from ckpttool.formats.dispatch import check_materialised, open_pickled
from ckpttool.formats.safetensors import SafetensorsFile
from ckpttool.loading import TensorInfo
from ckpttool.weight_sets import no_tensors, strip_prefixes, unwrap

if TYPE_CHECKING:
    import torch


def _torch_to_numpy(t: torch.Tensor) -> np.ndarray:
    import torch

    t = t.detach()
    if t.is_quantized:
        t = t.dequantize()
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.is_floating_point():
        if t.dtype == torch.float32:
            return np.array(t.numpy(), copy=True)
        return t.float().numpy()
    return np.array(t.numpy(), copy=True)


def state_dict_arrays(state_dict: Mapping[str, Any]) -> Iterator[tuple[TensorInfo, np.ndarray]]:
    """``(TensorInfo, ndarray)`` pairs from an in-memory torch state dict, as ``Checkpoint.iter_arrays``
    gives them for a file (non-tensor entries are skipped; tensors on any device)."""
    import torch

    for name, t in state_dict.items():
        if isinstance(t, torch.Tensor):
            info = TensorInfo(name, tuple(t.shape), str(t.dtype).removeprefix("torch."), t.numel())
            yield info, _torch_to_numpy(t.cpu())


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint's tensors as real torch tensors, with the same safety and unwrapping.

    The file is read by the same torch-free readers as ``load_checkpoint`` (same scan, same
    limits); only the final arrays become torch tensors. Original dtypes are kept. Non-tensor
    entries are dropped (``load_checkpoint`` lists them).

    Raises:
        The same errors as ``load_checkpoint``.

    Example:
        >>> model.load_state_dict(load_state_dict("init_model/vit_small.pth.tar"))  # doctest: +SKIP
    """
    import torch

    path = Path(path)
    fmt = detect_format(path)
    if fmt == SAFETENSORS:
        return _safetensors_state_dict(path)
    pickled = open_pickled(path, fmt)
    try:
        unwrapped = unwrap(path, pickled.obj)
        tensors = unwrapped.sets[0].tensors
        check_materialised(path, [unwrapped.sets[0].tensors])
        out = {}
        for name, ref in tensors.items():
            t = torch.from_numpy(pickled.raw(ref))
            if ref.dtype.kind in ("bf16", "fp8"):
                t = t.view(getattr(torch, ref.dtype.name))
            out[name] = t
        return out
    finally:
        pickled.close()


def _safetensors_state_dict(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    st = SafetensorsFile(path)  # our validation first: precise messages
    names = [t.name for t in st.tensors]
    if not names:
        raise CheckpointFormatError(no_tensors(path, []))
    try:
        loaded = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointFormatError(f"{path} is not a valid safetensors file ({one_line(e)}); {FIX}") from e
    renamed, _ = strip_prefixes(names)
    return {new: loaded[old] for new, old in zip(renamed, names, strict=True)}

