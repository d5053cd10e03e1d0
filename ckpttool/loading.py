"""Load checkpoints safely and lazily: named tensors as numpy arrays, one at a time. Torch is never imported.

Formats are told apart by content and read by ``ckpttool.formats``: safetensors, torch zip
(``torch.save`` default; ``.pth.tar`` is one too) and legacy torch pickles, the last two through
our own restricted unpickler after a static scan (there is no unsafe switch). This module only
dispatches and unwraps: training wrappers (``{'state_dict': ...}``, ``model_state_dict``,
``{'model': {'state_dict': ...}}``, EMA copies) are found, every one of them holding tensors is a
*weight set* (the first is the checkpoint's tensors, the others are listed and can be selected),
``module.`` / ``_orig_mod.`` prefixes are stripped (and Lightning's ``model.``); what was done is
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

from ckpttool.errors import CheckpointFormatError, CheckpointNotFoundError, InvalidArgumentError
from ckpttool.formats import FIX, SAFETENSORS, TORCH_ZIP, detect_format, one_line
from ckpttool.formats.limits import CheckpointLimitError, materialised_budget
from ckpttool.formats.safetensors import SafetensorsFile
from ckpttool.formats.torch_tensors import PickledFile, TensorRef
from ckpttool.formats.unpickler import NumpyValue
from ckpttool.verdict.optimizer_state import params_without_optimizer_state

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pth.tar", ".pt", ".bin", ".ckpt")

# Where training scripts keep weights, as key paths; the first holding tensors is the checkpoint's
# tensors, every other one holding tensors is judged too (a consumer may load it: timm prefers EMA).
WRAPPERS = (
    ("state_dict",),
    ("model_state_dict",),
    ("model", "state_dict"),
    ("model",),
    ("state_dict_ema",),
    ("model_ema", "state_dict"),
    ("model_ema",),
    ("ema_state_dict",),
    ("ema",),
)
SEQUENCE_WRAPPER = "(list)"
"""The wrapper recorded for a file holding a list or tuple of state dicts (names by position)."""

# Added by DataParallel/DDP and torch.compile; stripped when every name carries them.
_PREFIXES = ("module.", "_orig_mod.")
# Lightning's LightningModule keeps the network as ``self.model``: stripped in Lightning files only.
_LIGHTNING_PREFIX = "model."
_LIGHTNING_KEYS = ("pytorch-lightning_version", "optimizer_states", "lr_schedulers")
# Where optimizer state lives (Lightning: a list, one per optimizer).
_OPTIMIZER_KEYS = ("optimizer", "optimizer_state_dict", "optimizer_states")
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
        wrapper: where the tensors were unwrapped from (``"state_dict"``, ``"model.state_dict"``...), or None.
        stripped_prefixes: name prefixes removed from every tensor, in the order removed.
        non_tensor_keys: entries that are not model tensors (``epoch``, ``optimizer``...), listed only.
        metadata: the ``ckpttool`` metadata dict written by ``save_checkpoint`` (both formats);
            for a safetensors file without it, its ``__metadata__`` (str -> str); else ``{}``.
        tensors: every tensor, in file order.
        weight_sets: the wrapper of every weight set the file holds (this one first); more than one
            when it also carries e.g. ``state_dict_ema``. ``select(wrapper)`` opens another.
        params_without_optimizer_state: when the file carries torch optimizer state that maps to
            these tensors unambiguously, the parameters that never got any (see
            ``ckpttool.verdict.optimizer_state``); else None.
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
        sources: dict[str, Any],
        read: Callable[[Any], np.ndarray],
        close: Callable[[], None],
        weight_sets: tuple[str | None, ...] = (),
        params_without_optimizer_state: tuple[str, ...] | None = None,
        select: Callable[[str | None], Checkpoint] | None = None,
    ):
        self.path = path
        self.format = format
        self.wrapper = wrapper
        self.stripped_prefixes = stripped_prefixes
        self.non_tensor_keys = non_tensor_keys
        self.metadata = metadata
        self.tensors = tensors
        self.weight_sets = weight_sets or (wrapper,)
        self.params_without_optimizer_state = params_without_optimizer_state
        self._infos = {t.name: t for t in tensors}
        self._sources = sources  # our name -> what the reader needs (stored name or TensorRef)
        self._read: Callable[[Any], np.ndarray] | None = read
        self._close = close
        self._select = select

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

    def select(self, wrapper: str | None) -> Checkpoint:
        """Another weight set of the same file (one of ``weight_sets``), sharing this one's reader.

        Raises:
            InvalidArgumentError: the file holds no such weight set.
        """
        if wrapper not in self.weight_sets or self._select is None:
            raise InvalidArgumentError(
                f"{self.path} has no weight set {wrapper!r} (it has {', '.join(map(str, self.weight_sets))})"
            )
        return self._select(wrapper)

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
    """Open a checkpoint safely; tensors are read later, one at a time. Never imports torch.

    Args:
        path: a ``.safetensors``, torch zip (``.pth``, ``.pth.tar``, ``.pt``, ``.bin``, ``.ckpt``)
            or legacy torch file. The format is told from the content, not the name.

    Returns:
        A ``Checkpoint`` (close it, or use ``with``).

    Raises:
        CheckpointNotFoundError: the path does not exist.
        CheckpointFormatError: empty, truncated, garbage, a header that lies, no tensors, or beyond
            a documented limit (``CheckpointLimitError``, see SECURITY.md).
        UnsafeCheckpointError: the pickle imports globals outside the allow-list, or builds
            something refused; nothing executed.

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


def open_pickled(path: Path, fmt: str) -> PickledFile:
    """Scan and unpickle a torch file (zip or legacy) with our restricted unpickler."""
    if fmt == TORCH_ZIP:
        from ckpttool.formats.torch_zip import open_torch_zip

        return open_torch_zip(path)
    from ckpttool.formats.torch_legacy import open_torch_legacy

    return open_torch_legacy(path)


def _open_torch(path: Path, fmt: str) -> Checkpoint:
    pickled = open_pickled(path, fmt)
    try:
        unwrapped = _unwrap(path, pickled.obj)
        _check_materialised(path, unwrapped.sets)
    except BaseException:
        pickled.close()
        raise
    closed = []

    def close() -> None:
        if not closed:
            closed.append(True)
            pickled.close()

    def build(chosen: _WeightSet, owner: bool) -> Checkpoint:
        tensors = chosen.tensors
        infos = tuple(_tensor_info(name, ref) for name, ref in tensors.items())
        optimizer = (
            params_without_optimizer_state([(i.name, i.shape, i.dtype) for i in infos], unwrapped.optimizer)
            if unwrapped.optimizer is not None
            else None
        )
        return Checkpoint(
            path=path,
            format=fmt,
            wrapper=chosen.wrapper,
            stripped_prefixes=chosen.stripped_prefixes,
            non_tensor_keys=unwrapped.non_tensor_keys,
            metadata=unwrapped.metadata,
            tensors=infos,
            sources=tensors,
            read=pickled.read,
            close=close if owner else (lambda: None),
            weight_sets=tuple(ws.wrapper for ws in unwrapped.sets),
            params_without_optimizer_state=optimizer,
            select=lambda wrapper: build(next(ws for ws in unwrapped.sets if ws.wrapper == wrapper), False),
        )

    return build(unwrapped.sets[0], True)


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
        _check_materialised(path, (_WeightSet(None, refs, ()),))
    finally:
        pickled.close()


def _tensor_info(name: str, ref: TensorRef) -> TensorInfo:
    return TensorInfo(name, ref.shape, ref.dtype.name, ref.numel)


def _check_materialised(path: Path, sets: tuple[_WeightSet, ...]) -> None:
    """Refuse a file whose tensors would make us produce far more bytes than it holds (shared storages)."""
    budget = materialised_budget(path.stat().st_size)
    total = 0
    seen: set[int] = set()
    for ws in sets:
        for name, ref in ws.tensors.items():
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
    if not path.is_dir():
        if not path.exists() and not path.is_symlink():
            raise CheckpointNotFoundError(
                f"{path} does not exist; pass a checkpoint file or a folder of them"
            )
        return [path]  # a file, FIFO or device: the reader says what it is
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
        unwrapped = _unwrap(path, pickled.obj)
        tensors = unwrapped.sets[0].tensors
        _check_materialised(path, unwrapped.sets[:1])
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
        raise CheckpointFormatError(_no_tensors(path, []))
    try:
        loaded = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointFormatError(f"{path} is not a valid safetensors file ({one_line(e)}); {FIX}") from e
    renamed, _ = _strip_prefixes(names)
    return {new: loaded[old] for new, old in zip(renamed, names, strict=True)}


# --- unwrapping -----------------------------------------------------------------------------------


def _is_tensor(value: object) -> bool:
    return isinstance(value, TensorRef)


@dataclass(frozen=True)
class _WeightSet:
    wrapper: str | None
    tensors: dict[str, TensorRef]
    stripped_prefixes: tuple[str, ...]


@dataclass(frozen=True)
class _Unwrapped:
    sets: tuple[_WeightSet, ...]  # the checkpoint's tensors first
    non_tensor_keys: tuple[str, ...]
    metadata: dict
    optimizer: object  # the optimizer state dict(s), if any


def _unwrap(path: Path, obj: object) -> _Unwrapped:
    """Find every weight set inside what a torch file holds; see the module docstring.

    Containers come from our unpickler (dicts, or our dict subclass with no methods of its own);
    they are still read through ``dict`` itself, never through methods of the objects.
    """
    if isinstance(obj, (list, tuple)):
        tensors = _sequence_tensors(obj)
        if not tensors:
            raise CheckpointFormatError(_no_tensors(path, []))
        first = {name.partition(".")[0] for name in tensors}
        extra = (f"{first.pop()}.",) if len(first) == 1 else ()  # [state_dict]: the one item's names
        return _Unwrapped((_weight_set(path, SEQUENCE_WRAPPER, tensors, extra),), (), {}, None)
    if not isinstance(obj, dict):
        kind = "Tensor" if _is_tensor(obj) else type(obj).__name__
        raise CheckpointFormatError(
            f"{path} holds a {kind}, not a dict of tensors; re-save it with torch.save(model.state_dict())"
        )
    top = dict(dict.items(obj))
    metadata: dict = {}
    if isinstance(top.get(_METADATA_KEY), dict):
        metadata = _plain(top.pop(_METADATA_KEY))
    lightning = any(k in top for k in _LIGHTNING_KEYS)
    sets: list[_WeightSet] = []
    used: set[str] = set()
    for key_path in WRAPPERS:
        value = _at(top, key_path)
        if isinstance(value, dict) and _holds_tensor(value) and key_path[0] not in used:
            extra = (_LIGHTNING_PREFIX,) if lightning and key_path == ("state_dict",) else ()
            tensors, others = _flat_tensors(path, value)
            if tensors:
                sets.append(_weight_set(path, ".".join(key_path), tensors, extra))
                used.add(key_path[0])
    if sets:
        others = [str(k) for k in top if k not in used]
    else:
        tensors, others = _flat_tensors(path, top)
        if not tensors:
            raise CheckpointFormatError(_no_tensors(path, list(top)))
        sets.append(_weight_set(path, None, tensors, ()))
    optimizer = next((top[k] for k in _OPTIMIZER_KEYS if k in top), None)
    return _Unwrapped(tuple(sets), tuple(others), metadata, optimizer)


def _at(top: dict, key_path: tuple[str, ...]) -> object:
    value: object = top
    for key in key_path:
        if not isinstance(value, dict):
            return None
        value = dict.get(value, key)
    return value


def _weight_set(
    path: Path, wrapper: str | None, flat: dict[str, TensorRef], extra: tuple[str, ...]
) -> _WeightSet:
    renamed, stripped = _strip_prefixes(list(flat), extra)
    if len(set(renamed)) != len(renamed):  # flattening made "a.b" twice
        raise CheckpointFormatError(f"{path} holds the same tensor name twice after flattening nested dicts")
    return _WeightSet(wrapper, dict(zip(renamed, flat.values(), strict=True)), stripped)


def _flat_tensors(path: Path, chosen: dict) -> tuple[dict[str, TensorRef], list[str]]:
    """The tensors of one dict (nested tensor trees flattened to dotted names) and its other keys."""
    flat: dict[str, TensorRef] = {}
    others: list[str] = []
    for key, value in dict.items(chosen):
        if _is_tensor(value):
            flat[str(key)] = value
        elif isinstance(value, dict) and _is_tensor_tree(value):
            _flatten(str(key), value, flat)
        else:
            others.append(str(key))
    return flat, others


def _sequence_tensors(obj: list | tuple) -> dict[str, TensorRef]:
    """The tensors of a file that holds a list or tuple (a list of per-layer state dicts, as some
    packages save), in order, named by their positions and keys (``0.1.0.weight``). Dicts that are not
    pure tensor trees (constructor kwargs, metadata) are left out. Iterative, each container once, at
    most ``_MAX_DEPTH`` deep: the same guards as for nested dicts."""
    out: dict[str, TensorRef] = {}
    seen: set[int] = set()
    stack: list[tuple[str, object, int]] = [("", obj, 0)]
    while stack:
        name, node, depth = stack.pop()
        if _is_tensor(node):
            out[name] = node
        elif isinstance(node, dict):
            if id(node) not in seen and _is_tensor_tree(node):
                _flatten(name, node, out)
            seen.add(id(node))
        elif isinstance(node, (list, tuple)) and id(node) not in seen and depth < _MAX_DEPTH:
            seen.add(id(node))
            items = [(f"{name}.{i}" if name else str(i), item) for i, item in enumerate(node)]
            stack.extend((n, item, depth + 1) for n, item in reversed(items))
    return out


def _plain(value: dict) -> dict:
    """A JSON-like copy of a metadata dict from a pickle (numpy values unwrapped, our dicts made plain)."""
    out = {}
    for node in _dict_nodes(value):
        if node is None:
            return {}
    for k, v in dict.items(value):
        if isinstance(v, dict):
            v = _plain(v)
        elif isinstance(v, NumpyValue):
            v = v.value.tolist() if hasattr(v.value, "tolist") else v.value
        out[k] = v
    return out


def _dict_nodes(value: dict) -> Iterator[dict | None]:
    """Every dict nested in ``value`` (itself included), each once, depth-first, iteratively.

    Yields None for a dict reached a second time (shared or cyclic) or deeper than ``_MAX_DEPTH``:
    a hostile pickle can make dicts that contain themselves or share children (2**depth paths for
    a few bytes), so nothing here may recurse or revisit.
    """
    seen: set[int] = set()
    stack: list[tuple[dict, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen or depth > _MAX_DEPTH:
            yield None
            continue
        seen.add(id(node))
        yield node
        stack.extend((v, depth + 1) for v in dict.values(node) if isinstance(v, dict))


def _holds_tensor(value: dict) -> bool:
    """Any tensor in a nested dict."""
    return any(node is not None and any(map(_is_tensor, dict.values(node))) for node in _dict_nodes(value))


def _is_tensor_tree(value: dict) -> bool:
    """A nested dict with string keys whose leaves are all tensors (and at least one).

    It must be a tree at most ``_MAX_DEPTH`` deep: a sub-dict reached twice (shared or cyclic)
    makes it not one, so that flattening stays linear in the file's size.
    """
    if not value:
        return False
    return all(
        node is not None
        and all(isinstance(k, str) and (isinstance(v, dict) or _is_tensor(v)) for k, v in dict.items(node))
        for node in _dict_nodes(value)
    )


def _flatten(prefix: str, value: dict, out: dict[str, TensorRef]) -> None:
    for k, v in dict.items(value):
        name = f"{prefix}.{k}"
        if _is_tensor(v):
            out[name] = v
        else:
            _flatten(name, v, out)


def _strip_prefixes(names: list[str], extra: tuple[str, ...] = ()) -> tuple[list[str], tuple[str, ...]]:
    """Remove ``module.`` / ``_orig_mod.`` (and ``extra``) while every name starts with one (in any nesting)."""
    stripped: list[str] = []
    while names:
        prefix = next((p for p in (*_PREFIXES, *extra) if all(n.startswith(p) for n in names)), None)
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
    except (json.JSONDecodeError, RecursionError, ValueError):
        decoded = None
    if not isinstance(decoded, dict):
        logger.warning(
            "%s: __metadata__['%s'] is not a JSON object; returning the raw metadata", path, _METADATA_KEY
        )
        return dict(raw)
    return decoded
