"""Open a checkpoint safely and lazily: named tensors as numpy arrays, one at a time. Torch is never imported.

Formats are told apart by content and read by ``ckpttool.formats`` (``formats.dispatch`` picks the
reader): safetensors, torch zip (``torch.save`` default; ``.pth.tar`` is one too) and legacy torch
pickles, the last two through our own restricted unpickler after a static scan (there is no unsafe
switch). Which weight sets a torch file holds, and under which names, is ``ckpttool.weight_sets``;
conversion to torch tensors is ``ckpttool.torch_state``. This module builds the ``Checkpoint``.

Example:
    >>> with load_checkpoint("init_model/vit_small_cifar10_pretrained_init.pth.tar") as ckpt:  # doctest: +SKIP
    ...     for info, array in ckpt.iter_arrays():
    ...         print(info.name, info.dtype, array.std())
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ckpttool.errors import CheckpointFormatError, CheckpointNotFoundError, InvalidArgumentError
from ckpttool.formats import SAFETENSORS, detect_format, release_view
from ckpttool.formats.dispatch import check_materialised, open_pickled
from ckpttool.formats.dtypes import TORCH_DTYPES
from ckpttool.formats.safetensors import SafetensorsFile
from ckpttool.formats.stored import StoredValues
from ckpttool.formats.torch_tensors import TensorRef
from ckpttool.sharded import INDEX_SUFFIXES, index_naming, is_shard_index, load_sharded, split_indexed
from ckpttool.verdict.optimizer_state import params_without_optimizer_state
from ckpttool.weight_sets import METADATA_KEY, WeightSet, no_tensors, strip_prefixes, unwrap

logger = logging.getLogger(__name__)

CHUNK_BYTES = 4 << 20
"""Largest piece of a tensor ``Checkpoint.raw_chunks`` hands out (fits in cache-sized work)."""

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pth.tar", ".pt", ".bin", ".ckpt")


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
        shards: for a sharded model (``path`` is its index, see ``ckpttool.sharded``), the shard files
            its tensors are read from, in order; else ``()``.
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
        raw: Callable[[Any], np.ndarray] | None = None,
        view: Callable[[Any], tuple[np.ndarray, np.ndarray | None]] | None = None,
        shards: tuple[Path, ...] = (),
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
        self._raw = raw
        self._view = view  # source -> (stored values as a view of the mapped file, that mapping)
        self._close = close
        self._select = select
        self.shards = shards

    def array(self, name: str) -> np.ndarray:
        """Read one tensor: float32 for every float dtype, the numpy dtype for int/bool.

        Only that tensor is read. The array is a fresh copy, writable, of the tensor's shape.

        Raises:
            InvalidArgumentError: no tensor has that name.
        """
        return self._reader(self._read)(self._source(name))

    def raw(self, name: str) -> np.ndarray:
        """One tensor's stored values in its own dtype (bfloat16 / float8 as their uint16 / uint8 bits),
        a fresh C-ordered array in native byte order; only that tensor is read.

        Raises:
            InvalidArgumentError: no tensor has that name.
        """
        return self._reader(self._raw)(self._source(name))

    def nbytes(self, name: str) -> int:
        """Bytes of one tensor's stored values (what ``raw`` returns)."""
        self._source(name)  # the clear error for an unknown name
        info = self._infos[name]
        return info.numel * np.dtype(TORCH_DTYPES[info.dtype].raw).itemsize

    def raw_chunks(self, name: str, max_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
        """One tensor's stored values (as ``raw``) in C order, as consecutive 1-D chunks of at most
        ``max_bytes`` (native byte order), so that a tensor of any size is read in bounded memory:
        each chunk's mapped pages are released when the next is asked for. A chunk is valid until
        then (copy it to keep it).

        Raises:
            InvalidArgumentError: no tensor has that name.
        """
        view, base = self.stored_view(name)
        native = view.dtype.newbyteorder("=")
        if view.size == 0:
            return
        step = max(1, max_bytes // view.dtype.itemsize)
        if view.flags.c_contiguous and view.dtype == native:
            flat = view.reshape(-1)
            for i in range(0, flat.size, step):
                chunk = flat[i : i + step]
                yield chunk
                release_view(base, chunk)
            return
        # strided or big-endian (legacy files): C-ordered native copies, a block of leading rows at a time
        rows = view.reshape(view.shape[0], -1) if view.ndim > 1 else view.reshape(-1, 1)
        per = max(1, step // max(1, rows.shape[1]))
        for i in range(0, rows.shape[0], per):
            yield np.array(rows[i : i + per], dtype=native, order="C").reshape(-1)
        release_view(base, view)

    def stored_view(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """One tensor's stored values as a view into the mapped file, and that mapping (for a reader
        that keeps none, a fresh copy and None): what ``raw_chunks`` and ``values`` read. A sharded
        model (``ckpttool.sharded``) hands each tensor's view over from its shard through this.

        Raises:
            InvalidArgumentError: no tensor has that name.
        """
        source = self._source(name)
        if self._view is None:
            return self.raw(name), None
        return self._reader(self._view)(source)

    def values(self, name: str) -> StoredValues:
        """One tensor's values, widened only where indexed (``ckpttool.formats.stored``): what the
        statistics of a large tensor sample from. Its pages stay mapped until ``release(name)``."""
        view, base = self.stored_view(name)
        return StoredValues(view, TORCH_DTYPES[self._infos[name].dtype], base)

    def release(self, name: str) -> None:
        """Drop the mapped pages of one tensor (after sampling it through ``values``)."""
        if self._view is not None and self._read is not None:  # (without a mapping there is nothing to drop)
            view, base = self.stored_view(name)
            release_view(base, view)

    def _reader(self, read: Callable[[Any], np.ndarray] | None) -> Callable[[Any], np.ndarray]:
        if self._read is None or read is None:
            raise ValueError(f"checkpoint {self.path} is closed")
        return read

    def _source(self, name: str) -> Any:
        if name not in self._infos:
            some = ", ".join(list(self._infos)[:3])
            raise InvalidArgumentError(
                f"{self.path} has no tensor named {name!r} (it has {len(self._infos)}, e.g. {some}); "
                "list them with `ckpttool inspect`"
            )
        return self._sources[name]

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
            or legacy torch file. The format is told from the content, not the name. A shard index
            (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``...) opens the sharded
            model as one checkpoint (``ckpttool.sharded``).

    Returns:
        A ``Checkpoint`` (close it, or use ``with``).

    Raises:
        CheckpointNotFoundError: the path does not exist.
        ShardIndexError: an index that disagrees with its shards (see ``ckpttool.sharded``).
        CheckpointFormatError: empty, truncated, garbage, a header that lies, no tensors, or beyond
            a documented limit (``CheckpointLimitError``, see SECURITY.md).
        UnsafeCheckpointError: the pickle imports globals outside the allow-list, or builds
            something refused; nothing executed.

    Example:
        >>> with load_checkpoint("model.safetensors") as ckpt:  # doctest: +SKIP
        ...     ckpt.array("blocks.0.attn.qkv.weight").std()
    """
    path = Path(path)
    if is_shard_index(path):
        return load_sharded(path)
    fmt = detect_format(path)
    if fmt == SAFETENSORS:
        return _open_safetensors(path)
    return _open_torch(path, fmt)


def _open_safetensors(path: Path) -> Checkpoint:
    st = SafetensorsFile(path)
    names = [t.name for t in st.tensors]
    if not names:
        raise CheckpointFormatError(no_tensors(path, []))
    renamed, stripped = strip_prefixes(names)
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
        raw=st.copy,
        view=st.view,
        close=st.close,
    )


def _open_torch(path: Path, fmt: str) -> Checkpoint:
    pickled = open_pickled(path, fmt)
    try:
        unwrapped = unwrap(path, pickled.obj)
        check_materialised(path, [ws.tensors for ws in unwrapped.sets])
    except BaseException:
        pickled.close()
        raise
    closed = []

    def close() -> None:
        if not closed:
            closed.append(True)
            pickled.close()

    def build(chosen: WeightSet, owner: bool) -> Checkpoint:
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
            raw=pickled.raw,
            view=pickled.view,
            close=close if owner else (lambda: None),
            weight_sets=tuple(ws.wrapper for ws in unwrapped.sets),
            params_without_optimizer_state=optimizer,
            select=lambda wrapper: build(next(ws for ws in unwrapped.sets if ws.wrapper == wrapper), False),
        )

    return build(unwrapped.sets[0], True)


def _tensor_info(name: str, ref: TensorRef) -> TensorInfo:
    return TensorInfo(name, ref.shape, ref.dtype.name, ref.numel)


def find_checkpoints(path: str | Path) -> list[Path]:
    """The checkpoint files at ``path``: the file itself, or every one under a folder (recursive, sorted).
    A shard named by an index beside it stands for its model: the index is returned.

    Files are picked by suffix (``CHECKPOINT_SUFFIXES``, ``.pth.tar`` included, case-insensitive).
    A sharded model is one entry, its index (``INDEX_SUFFIXES``): the shards it names are left out;
    checkpoint files beside it that it does not name stay (``ckpttool.sharded.outside_indexes``).
    Below the folder, ``backup_old/`` folders (old files kept on purpose, often under misleading
    names) and hidden folders are skipped; pass such a folder itself to check it.

    Raises:
        CheckpointNotFoundError: the path does not exist, or the folder holds no checkpoint file.
        ShardIndexError: an index under the folder is unreadable (which files are its shards is unknown).

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
        return [index_naming(path) or path]  # a file, FIFO or device: the reader says what it is
    found = sorted(
        p
        for p in path.rglob("*")
        if p.name.lower().endswith(CHECKPOINT_SUFFIXES + INDEX_SUFFIXES) and p.is_file()
        and not _skipped_below(path, p)
    )
    if not found:
        raise CheckpointNotFoundError(
            f"no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)}) under {path}; "
            "pass a folder that holds some, or a file"
        )
    return split_indexed(found)


def _skipped_below(root: Path, file: Path) -> bool:
    folders = file.relative_to(root).parts[:-1]
    return any(f == "backup_old" or f.startswith(".") for f in folders)


def _decode_metadata(path: Path, raw: dict[str, str]) -> dict:
    """The ``ckpttool`` entry decoded from JSON when present (as written by save_checkpoint), else ``raw``."""
    if METADATA_KEY not in raw:
        return dict(raw)
    try:
        decoded = json.loads(raw[METADATA_KEY])
    except (json.JSONDecodeError, RecursionError, ValueError):
        decoded = None
    if not isinstance(decoded, dict):
        logger.warning(
            "%s: __metadata__['%s'] is not a JSON object; returning the raw metadata", path, METADATA_KEY
        )
        return dict(raw)
    return decoded
