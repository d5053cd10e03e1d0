"""Load checkpoints safely and lazily: named tensors as numpy arrays, one at a time.

Formats are told apart by content: safetensors (read with numpy alone, torch is never imported),
torch zip (``torch.save`` default; ``.pth.tar`` is one too) and legacy torch pickles. Pickle-based
files load only through ``torch.load(weights_only=True)`` after a static scan of their globals;
there is no unsafe switch. Training wrappers (``{'state_dict': ...}``, ``{'model': ...}``, EMA
variants) are unwrapped and ``module.`` / ``_orig_mod.`` prefixes stripped; what was done is
recorded on the returned ``Checkpoint``.

Example:
    >>> with load_checkpoint("init_model/vit_small_cifar10_pretrained_init.pth.tar") as ckpt:  # doctest: +SKIP
    ...     for info, array in ckpt.iter_arrays():
    ...         print(info.name, info.dtype, array.std())
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ckpttool._formats import SAFETENSORS, SafetensorsFile, detect_format, one_line
from ckpttool.errors import CheckpointFormatError, CheckpointNotFoundError, InvalidArgumentError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pth.tar", ".pt", ".bin", ".ckpt")

# Training scripts wrap the weights; the first of these holding tensors is the state dict.
_WRAPPERS = ("state_dict", "model", "state_dict_ema", "model_ema")
# Added by DataParallel/DDP and torch.compile; stripped when every name carries them.
_PREFIXES = ("module.", "_orig_mod.")
_METADATA_KEY = "ckpttool"
# Nested dicts deeper than this are not a state dict (listed as non-tensor entries).
_MAX_DEPTH = 32


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a checkpoint, described without reading its values."""

    name: str  # after unwrapping and prefix stripping
    shape: tuple[int, ...]
    dtype: str  # torch spelling without "torch.": float32, bfloat16, float8_e4m3fn, int64, bool...
    numel: int


class Checkpoint:
    """An opened checkpoint: what it holds, and its tensors on demand. Use as a context manager.

    Attributes:
        path: the file.
        format: ``"safetensors"``, ``"torch-zip"`` or ``"torch-legacy"``.
        wrapper: the top-level key the tensors were unwrapped from, or None.
        stripped_prefixes: name prefixes removed from every tensor, in the order removed.
        non_tensor_keys: entries that are not model tensors (``epoch``, ``optimizer``...), listed only.
        metadata: the ``ckpttool`` metadata dict written by ``save_checkpoint`` (both formats);
            for a safetensors file without it, its ``__metadata__`` (str -> str); else ``{}``.
        tensors: every tensor, in file order.
    """

    def __init__(
        self,
        *,
        path: Path,
        format: str,
        wrapper: str | None,
        stripped_prefixes: tuple[str, ...],
        non_tensor_keys: tuple[str, ...],
        metadata: dict,
        tensors: tuple[TensorInfo, ...],
        sources: dict[str, str],
        read: Callable[[str], np.ndarray],
        close: Callable[[], None],
    ):
        self.path = path
        self.format = format
        self.wrapper = wrapper
        self.stripped_prefixes = stripped_prefixes
        self.non_tensor_keys = non_tensor_keys
        self.metadata = metadata
        self.tensors = tensors
        self._infos = {t.name: t for t in tensors}
        self._sources = sources  # our name -> the name stored in the file
        self._read: Callable[[str], np.ndarray] | None = read
        self._close = close

    def array(self, name: str) -> np.ndarray:
        """Read one tensor: float32 for every float dtype, the numpy dtype for int/bool.

        Only that tensor is read. The array is a fresh copy, writable, of the tensor's shape.

        Raises:
            InvalidArgumentError: no tensor has that name.
        """
        if self._read is None:
            raise ValueError(f"checkpoint {self.path} is closed")
        if name not in self._infos:
            some = ", ".join(list(self._infos)[:3])
            raise InvalidArgumentError(
                f"{self.path} has no tensor named {name!r} (it has {len(self._infos)}, e.g. {some}); "
                "list them with `ckpttool inspect`"
            )
        return self._read(self._sources[name])

    def iter_arrays(self) -> Iterator[tuple[TensorInfo, np.ndarray]]:
        """Every tensor in file order, one in memory at a time."""
        for info in self.tensors:
            yield info, self.array(info.name)

    def close(self) -> None:
        """Release the file mapping. Arrays already returned stay valid."""
        if self._read is not None:
            self._read = None
            self._close()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, format={self.format!r}, tensors={len(self.tensors)})"


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint safely; tensors are read later, one at a time.

    Args:
        path: a ``.safetensors``, torch zip (``.pth``, ``.pth.tar``, ``.pt``, ``.bin``, ``.ckpt``)
            or legacy torch file. The format is told from the content, not the name.

    Returns:
        A ``Checkpoint`` (close it, or use ``with``).

    Raises:
        CheckpointNotFoundError: the path does not exist.
        CheckpointFormatError: empty, truncated, garbage, a header that lies, or no tensors.
        UnsafeCheckpointError: the pickle imports globals outside the allow-list; nothing executed.

    Example:
        >>> with load_checkpoint("model.safetensors") as ckpt:  # doctest: +SKIP
        ...     ckpt.array("blocks.0.attn.qkv.weight").std()
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == SAFETENSORS:
        return _open_safetensors(path)
    return _open_torch(path, fmt)


def _open_safetensors(path: Path) -> Checkpoint:
    st = SafetensorsFile(path)
    names = [t.name for t in st.tensors]
    if not names:
        raise CheckpointFormatError(_no_tensors(path, []))
    renamed, stripped = _strip_prefixes(names)
    by_name = {t.name: t for t in st.tensors}
    infos = tuple(
        TensorInfo(new, by_name[old].shape, by_name[old].dtype.name, math.prod(by_name[old].shape))
        for new, old in zip(renamed, names, strict=True)
    )
    return Checkpoint(
        path=path,
        format=SAFETENSORS,
        wrapper=None,
        stripped_prefixes=stripped,
        non_tensor_keys=(),
        metadata=_decode_metadata(path, st.metadata),
        tensors=infos,
        sources=dict(zip(renamed, names, strict=True)),
        read=st.read,
        close=st.close,
    )


def _open_torch(path: Path, fmt: str) -> Checkpoint:
    import torch

    from ckpttool._safe_pickle import load_torch_object

    obj = load_torch_object(path, fmt, mmap=True)
    unwrapped = _unwrap(path, obj, torch.is_tensor)
    tensors = unwrapped.tensors
    infos = tuple(_tensor_info(name, t) for name, t in tensors.items())

    def close() -> None:
        tensors.clear()

    return Checkpoint(
        path=path,
        format=fmt,
        wrapper=unwrapped.wrapper,
        stripped_prefixes=unwrapped.stripped_prefixes,
        non_tensor_keys=unwrapped.non_tensor_keys,
        metadata=unwrapped.metadata,
        tensors=infos,
        sources={name: name for name in tensors},
        read=lambda name: _torch_to_numpy(tensors[name]),
        close=close,
    )


def _tensor_info(name: str, t: torch.Tensor) -> TensorInfo:
    return TensorInfo(name, tuple(t.shape), str(t.dtype).removeprefix("torch."), t.numel())


def _torch_to_numpy(t: torch.Tensor) -> np.ndarray:
    import torch

    t = t.detach()
    if t.is_quantized:
        t = t.dequantize()
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.is_floating_point():
        if t.dtype == torch.float32:
            return np.array(t.numpy(), copy=True)  # the tensor may be a view of the mmap'd file
        return t.float().numpy()
    return np.array(t.numpy(), copy=True)


def state_dict_arrays(state_dict: Mapping[str, Any]) -> Iterator[tuple[TensorInfo, np.ndarray]]:
    """``(TensorInfo, ndarray)`` pairs from an in-memory torch state dict, as ``Checkpoint.iter_arrays``
    gives them for a file (non-tensor entries are skipped; tensors on any device)."""
    import torch

    for name, t in state_dict.items():
        if isinstance(t, torch.Tensor):
            yield _tensor_info(name, t), _torch_to_numpy(t.cpu())


def find_checkpoints(path: str | Path) -> list[Path]:
    """The checkpoint files at ``path``: the file itself, or every one under a folder (recursive, sorted).

    Files are picked by suffix (``CHECKPOINT_SUFFIXES``, ``.pth.tar`` included, case-insensitive).
    Below the folder, ``backup_old/`` folders (old files kept on purpose, often under misleading
    names) and hidden folders are skipped; pass such a folder itself to check it.

    Raises:
        CheckpointNotFoundError: the path does not exist, or the folder holds no checkpoint file.

    Example:
        >>> find_checkpoints("init_model")  # doctest: +SKIP
        [PosixPath('init_model/vit_small_cifar10_pretrained_init.pth.tar'), ...]
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise CheckpointNotFoundError(f"{path} does not exist; pass a checkpoint file or a folder of them")
    found = sorted(
        p
        for p in path.rglob("*")
        if p.name.lower().endswith(CHECKPOINT_SUFFIXES) and p.is_file() and not _skipped_below(path, p)
    )
    if not found:
        raise CheckpointNotFoundError(
            f"no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)}) under {path}; "
            "pass a folder that holds some, or a file"
        )
    return found


def _skipped_below(root: Path, file: Path) -> bool:
    folders = file.relative_to(root).parts[:-1]
    return any(f == "backup_old" or f.startswith(".") for f in folders)


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint's tensors as real torch tensors, with the same safety and unwrapping.

    Original dtypes are kept. Non-tensor entries are dropped (``load_checkpoint`` lists them).

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
    from ckpttool._safe_pickle import load_torch_object

    obj = load_torch_object(path, fmt, mmap=False)
    return _unwrap(path, obj, torch.is_tensor).tensors


def _safetensors_state_dict(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    st = SafetensorsFile(path)  # our validation first: precise messages
    names = [t.name for t in st.tensors]
    if not names:
        raise CheckpointFormatError(_no_tensors(path, []))
    try:
        loaded = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointFormatError(f"{path} is not a valid safetensors file ({one_line(e)})") from e
    renamed, _ = _strip_prefixes(names)
    return {new: loaded[old] for new, old in zip(renamed, names, strict=True)}


# --- unwrapping -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unwrapped:
    tensors: dict[str, Any]
    wrapper: str | None
    stripped_prefixes: tuple[str, ...]
    non_tensor_keys: tuple[str, ...]
    metadata: dict


def _unwrap(path: Path, obj: object, is_tensor: Callable[[object], bool]) -> _Unwrapped:
    """Find the state dict inside what a torch file holds; see the module docstring."""
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(
            f"{path} holds a {type(obj).__name__}, not a dict of tensors; "
            "re-save it with torch.save(model.state_dict())"
        )
    top = dict(obj)
    metadata: dict = {}
    if isinstance(top.get(_METADATA_KEY), Mapping):
        metadata = dict(top.pop(_METADATA_KEY))
    wrapper = next(
        (k for k in _WRAPPERS if isinstance(top.get(k), Mapping) and _holds_tensor(top[k], is_tensor)), None
    )
    if wrapper is not None:
        chosen = top.pop(wrapper)
        others = [str(k) for k in top]
    else:
        chosen, others = top, []
    flat: dict[str, Any] = {}
    for key, value in chosen.items():
        if is_tensor(value):
            flat[str(key)] = value
        elif isinstance(value, Mapping) and _is_tensor_tree(value, is_tensor):
            _flatten(str(key), value, flat, is_tensor)
        else:
            others.append(str(key))
    if not flat:
        raise CheckpointFormatError(_no_tensors(path, list(obj)))
    renamed, stripped = _strip_prefixes(list(flat))
    if len(set(renamed)) != len(renamed):  # flattening made "a.b" twice
        raise CheckpointFormatError(f"{path} holds the same tensor name twice after flattening nested dicts")
    tensors = dict(zip(renamed, flat.values(), strict=True))
    return _Unwrapped(tensors, wrapper, stripped, tuple(others), metadata)


def _dict_nodes(value: Mapping) -> Iterator[Mapping | None]:
    """Every dict nested in ``value`` (itself included), each once, depth-first, iteratively.

    Yields None for a dict reached a second time (shared or cyclic) or deeper than ``_MAX_DEPTH``:
    a hostile pickle can make dicts that contain themselves or share children (2**depth paths for
    a few bytes), so nothing here may recurse or revisit.
    """
    seen: set[int] = set()
    stack: list[tuple[Mapping, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen or depth > _MAX_DEPTH:
            yield None
            continue
        seen.add(id(node))
        yield node
        stack.extend((v, depth + 1) for v in node.values() if isinstance(v, Mapping))


def _holds_tensor(value: Mapping, is_tensor: Callable[[object], bool]) -> bool:
    """Any tensor in a nested dict."""
    return any(node is not None and any(is_tensor(v) for v in node.values()) for node in _dict_nodes(value))


def _is_tensor_tree(value: Mapping, is_tensor: Callable[[object], bool]) -> bool:
    """A nested dict with string keys whose leaves are all tensors (and at least one).

    It must be a tree at most ``_MAX_DEPTH`` deep: a sub-dict reached twice (shared or cyclic)
    makes it not one, so that flattening stays linear in the file's size.
    """
    if not value:
        return False
    return all(
        node is not None
        and all(isinstance(k, str) and (isinstance(v, Mapping) or is_tensor(v)) for k, v in node.items())
        for node in _dict_nodes(value)
    )


def _flatten(prefix: str, value: Mapping, out: dict[str, Any], is_tensor: Callable[[object], bool]) -> None:
    for k, v in value.items():
        name = f"{prefix}.{k}"
        if is_tensor(v):
            out[name] = v
        else:
            _flatten(name, v, out, is_tensor)


def _strip_prefixes(names: list[str]) -> tuple[list[str], tuple[str, ...]]:
    """Remove ``module.`` / ``_orig_mod.`` while every name starts with one (in any nesting)."""
    stripped: list[str] = []
    while names:
        prefix = next((p for p in _PREFIXES if all(n.startswith(p) for n in names)), None)
        if prefix is None:
            break
        names = [n[len(prefix) :] for n in names]
        stripped.append(prefix)
    return names, tuple(stripped)


def _no_tensors(path: Path, keys: list) -> str:
    listed = f" (top-level entries: {', '.join(map(str, keys[:8]))})" if keys else ""
    return (
        f"{path} holds no tensors{listed}; ckpttool reads state dicts, "
        "save one with torch.save(model.state_dict()) or safetensors"
    )


def _decode_metadata(path: Path, raw: dict[str, str]) -> dict:
    """The ``ckpttool`` entry decoded from JSON when present (as written by save_checkpoint), else ``raw``."""
    if _METADATA_KEY not in raw:
        return dict(raw)
    try:
        decoded = json.loads(raw[_METADATA_KEY])
    except json.JSONDecodeError:
        decoded = None
    if not isinstance(decoded, dict):
        logger.warning(
            "%s: __metadata__['%s'] is not a JSON object; returning the raw metadata", path, _METADATA_KEY
        )
        return dict(raw)
    return decoded
