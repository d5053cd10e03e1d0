"""Sharded checkpoints: an index (``model.safetensors.index.json``...) and its shard files, opened as ONE
``Checkpoint`` whose tensors are every shard's tensors.

Big models are saved in shards (``model-00001-of-00003.safetensors``...) beside an index whose
``weight_map`` maps each tensor name to the shard holding it (transformers, diffusers, timm and
``huggingface_hub.split_torch_state_dict_into_shards`` all write this shape). A shard alone is not a
model: one may hold only the embeddings, another only the head, so the verdict, the head and input
layer search and the weights digest see the whole model. The composite is a plain
``ckpttool.loading.Checkpoint`` that delegates each tensor to its shard's own reader, so every
consumer works unchanged.

What is checked (each a ``ShardIndexError``, one line, before anything is judged): the index is JSON
with a ``weight_map`` object of names to shard file names; every shard name stays inside the
index's folder (no absolute path, no ``..``, no backslash); every named shard exists and is a
regular file (a symlink is followed, as in the Hugging Face cache whose snapshot entries are
symlinks into its blob store, wherever it points, but only to a regular file); each shard holds
exactly the tensors the index maps to it; no tensor is in two shards; a shard holds one weight set
(a torch shard with EMA copies beside its weights is refused: transformers would not load it either);
all shards have one format.

Names: each shard is unwrapped as a single file is, then ``module.`` / ``_orig_mod.`` are stripped
only when every name of every shard carries them, so that the model's names do not depend on how
it was cut. Tensor order: shards in their numbered order (``-00001-of-00003``), else in the order the
index first names them; each shard in its own order.

Identity: the model's ``sha256`` is the index file's; the shards are listed with their own sha256
and size (:class:`ShardFile`). The index carries no hashes, so it is the shard list that pins the
weights' bytes (manifests and backups record every file).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ckpttool.errors import CkptError, ShardIndexError

if TYPE_CHECKING:
    from ckpttool.loading import Checkpoint

INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json", ".pt.index.json")
# A 70B model's index is a few hundred KB; this bounds what a hostile one can make us parse.
MAX_INDEX_BYTES = 64 * 1024 * 1024
_NUMBERED = re.compile(r"-(\d+)-of-(\d+)\.[^/]*$")
_SHOWN = 3  # names quoted in one message


@dataclass(frozen=True)
class ShardIndex:
    """A parsed index: which shard file holds each tensor."""

    path: Path  # the index file
    weight_map: Mapping[str, str]  # tensor name as stored -> shard file name, relative to the index's folder
    shards: tuple[str, ...]  # the shard file names, in reading order
    metadata: Mapping  # the index's "metadata" object (transformers: total_size), else {}

    def shard_path(self, name: str) -> Path:
        return self.path.parent / name


@dataclass(frozen=True)
class ShardFile:
    """One shard of a model, as reported: its path, sha256 and size in bytes."""

    path: Path
    sha256: str
    size: int

    def to_dict(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "size": self.size}


def is_shard_index(path: str | Path) -> bool:
    """Whether ``path`` is named like a shard index (``*.safetensors.index.json``, ``*.bin.index.json``,
    ``*.pt.index.json``).

    Example:
        >>> is_shard_index("model.safetensors.index.json"), is_shard_index("model.safetensors")
        (True, False)
    """
    return Path(path).name.lower().endswith(INDEX_SUFFIXES)


def read_shard_index(path: str | Path) -> ShardIndex:
    """Parse and check an index file (hostile input: nothing it names is opened here).

    Raises:
        CheckpointNotFoundError: the index does not exist.
        ShardIndexError: not a regular file, beyond ``MAX_INDEX_BYTES``, not JSON, no ``weight_map``
            object, a non-string shard name, or a shard name that leaves the index's folder.

    Example:
        >>> read_shard_index("model.safetensors.index.json").shards  # doctest: +SKIP
        ('model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors')
    """
    from ckpttool._files import open_regular
    from ckpttool.errors import CheckpointNotFoundError

    path = Path(path)
    try:
        with os.fdopen(open_regular(path, action="cannot read shard index"), "rb") as f:
            raw = f.read(MAX_INDEX_BYTES + 1)
    except CheckpointNotFoundError:
        raise
    except CkptError as e:  # a folder, FIFO, device
        raise ShardIndexError(str(e)) from e
    except OSError as e:
        raise ShardIndexError(f"cannot read shard index {path}: {e.strerror or e}") from e
    return parse_shard_index(path, raw)


def parse_shard_index(path: Path | str, raw: bytes) -> ShardIndex:
    """:func:`read_shard_index` of bytes already read (``path`` names it in messages; a local one also
    locates its shards, a hub one, ``hf://ORG/REPO/NAME``, only names it)."""
    if len(raw) > MAX_INDEX_BYTES:
        raise ShardIndexError(f"shard index {path} is larger than {MAX_INDEX_BYTES >> 20} MiB; "
                              "an index lists names only, this is not one")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ShardIndexError(f"shard index {path} is not valid JSON ({type(e).__name__}); "
                              "re-download it or restore it") from e
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ShardIndexError(f"shard index {path} has no 'weight_map' object of tensor names to shard files; "
                              "it is not a sharded checkpoint's index")
    order: dict[str, None] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str):
            raise ShardIndexError(f"shard index {path} maps tensor {_show(name)} to a {type(shard).__name__}, "
                                  "not a shard file name")
        if shard not in order:
            _check_shard_name(path, shard)
            order[shard] = None
    shards = list(order)
    if all(_NUMBERED.search(s) for s in shards):  # model-00002-of-00003: by number, not by tensor name
        shards.sort(key=lambda s: int(_NUMBERED.search(s)[1]))
    metadata = doc.get("metadata")
    return ShardIndex(path, weight_map, tuple(shards), metadata if isinstance(metadata, dict) else {})


def load_sharded(path: str | Path, *, shard_files: Mapping[str, Path] | None = None) -> Checkpoint:
    """Open a sharded model as one ``Checkpoint`` (``path``: its index; ``shards``: the shard files).

    Args:
        path: the index file.
        shard_files: where to read a shard from instead of beside the index, by the name the index
            uses (a backup reads its content-addressed copies this way).

    Raises:
        ShardIndexError: see the module docstring; CheckpointFormatError / UnsafeCheckpointError:
            a shard is unreadable or unsafe (the message names it).

    Example:
        >>> with load_sharded("llama/model.safetensors.index.json") as ckpt:  # doctest: +SKIP
        ...     len(ckpt.shards), len(ckpt.tensors)
        (2, 291)
    """
    from ckpttool.loading import load_checkpoint

    index = read_shard_index(path)
    files = [Path((shard_files or {}).get(s) or index.shard_path(s)) for s in index.shards]
    _check_shard_files(index, files)
    opened: list[Checkpoint] = []
    try:
        for name, file in zip(index.shards, files, strict=True):
            ckpt = load_checkpoint(file)
            opened.append(ckpt)
            if len(ckpt.weight_sets) > 1:
                raise ShardIndexError(
                    f"shard {_show(name)} of {index.path} holds {len(ckpt.weight_sets)} weight sets "
                    f"({', '.join(map(str, ckpt.weight_sets))}); a sharded model is read with one weight set per "
                    "shard; re-save each shard with its model weights only")
        return _join(index, opened, tuple(files))
    except BaseException:
        for ckpt in opened:
            ckpt.close()
        raise


def hash_files(paths: Sequence[Path], *, hashes: bool = True) -> tuple[ShardFile, ...]:
    """sha256 and size of each file, each from one read of the same descriptor (``hashes=False``: the
    size alone, sha256 ``""``)."""
    from ckpttool._files import copy_and_hash, open_regular

    out = []
    for p in paths:
        with os.fdopen(open_regular(p, action="cannot hash shard"), "rb") as f:
            sha, size = copy_and_hash(f) if hashes else ("", os.fstat(f.fileno()).st_size)
        out.append(ShardFile(p, sha, size))
    return tuple(out)


def split_indexed(files: Sequence[Path]) -> list[Path]:
    """``files`` without the shards that an index among them names: each sharded model once, as its index.

    Raises:
        ShardIndexError: an index among them is unreadable (what it holds cannot be told apart).
    """
    named: set[str] = set()
    for f in files:
        if is_shard_index(f):
            index = read_shard_index(f)
            named.update(os.path.normpath(index.shard_path(s)) for s in index.shards)
    return [f for f in files if os.path.normpath(f) not in named]


def index_naming(file: Path) -> Path | None:
    """The shard index beside ``file`` that names it as a shard, if any: a shard passed on its own is
    judged as part of its model (a pre-commit hook passes the changed shard files). An unreadable
    index beside it is passed over here; it is refused when it, or its folder, is given."""
    file = Path(file)
    if is_shard_index(file) or not file.parent.is_dir():
        return None
    for index in sorted(p for p in file.parent.iterdir() if is_shard_index(p) and p.is_file()):
        try:
            names = read_shard_index(index).shards
        except CkptError:
            continue
        if file.name in names:
            return index
    return None


def outside_indexes(files: Sequence[Path]) -> dict[Path, tuple[Path, ...]]:
    """For each checkpoint file among ``files`` that sits beside an index among them (which, after
    :func:`split_indexed`, does not name it), those indexes: it is not part of their model."""
    by_folder: dict[Path, list[Path]] = {}
    for f in files:
        if is_shard_index(f):
            by_folder.setdefault(Path(f).parent, []).append(Path(f))
    return {Path(f): tuple(by_folder[Path(f).parent]) for f in files
            if not is_shard_index(f) and Path(f).parent in by_folder}


# -- internals ------------------------------------------------------------------------------------

def _check_shard_name(index: Path, shard: str) -> None:
    parts = PurePosixPath(shard).parts
    if (not shard or "\0" in shard or "\\" in shard or shard.startswith("/") or ".." in parts
            or parts in ((), (".",))):
        raise ShardIndexError(
            f"shard index {index} names shard file {_show(shard)}, which is not a relative path inside its "
            "folder (absolute paths, '..' and '\\' are refused); nothing was read")
    if is_shard_index(shard):  # an index as its own shard (or another's) would be opened without end
        raise ShardIndexError(f"shard index {index} names {_show(shard)}, a shard index, as a shard file; "
                              "nothing was read")


def _check_shard_files(index: ShardIndex, files: list[Path]) -> None:
    """Every shard exists and is (or links to) a regular file; all missing ones named in one line."""
    missing, odd = [], []
    for name, file in zip(index.shards, files, strict=True):
        try:
            st = os.stat(file)  # follows a symlink: what it points to is what gets read
        except FileNotFoundError:
            missing.append(name)
            continue
        except OSError as e:
            odd.append(f"{_show(name)} ({e.strerror or e})")
            continue
        if not stat.S_ISREG(st.st_mode):
            from ckpttool._files import describe_kind

            odd.append(f"{_show(name)} ({describe_kind(st.st_mode)})")
    if missing:
        raise ShardIndexError(
            f"shard index {index.path} names {len(missing)} shard file(s) that are not in {index.path.parent}: "
            f"{_names(missing)}; the model is incomplete; download or restore the missing shards")
    if odd:
        raise ShardIndexError(f"shard index {index.path} names shard(s) that are not regular files: "
                              f"{', '.join(odd[:_SHOWN])}; nothing was read")


def _join(index: ShardIndex, shards: list[Checkpoint], files: tuple[Path, ...]) -> Checkpoint:
    from ckpttool.loading import Checkpoint
    from ckpttool.weight_sets import DEFAULT_PREFIXES, strip_prefixes

    formats = {c.format for c in shards}
    if len(formats) > 1:
        raise ShardIndexError(f"the shards of {index.path} are in different formats ({', '.join(sorted(formats))}); "
                              "a model's shards are saved one way")
    entries = []  # (stored name, shard checkpoint, name in the shard)
    held = []  # (shard name, the stored names it holds)
    for name, ckpt in zip(index.shards, shards, strict=True):
        prefix = "".join(ckpt.stripped_prefixes)  # the shard's own stripping, undone: names as stored
        mine = [(prefix + t.name, ckpt, t) for t in ckpt.tensors]
        entries += mine
        held.append((name, [e[0] for e in mine]))
    check_shard_contents(index, held)
    extra = tuple(p for p in shards[0].stripped_prefixes
                  if p not in DEFAULT_PREFIXES and all(p in c.stripped_prefixes for c in shards))
    names, stripped = strip_prefixes([e[0] for e in entries], extra)
    from ckpttool.loading import TensorInfo

    infos = tuple(TensorInfo(new, t.shape, t.dtype, t.numel) for new, (_, _, t) in zip(names, entries, strict=True))
    sources = {new: (ckpt, t.name) for new, (_, ckpt, t) in zip(names, entries, strict=True)}
    wrappers = {c.wrapper for c in shards}
    non_tensor = tuple(dict.fromkeys(k for c in shards for k in c.non_tensor_keys))

    def close() -> None:
        for c in shards:
            c.close()

    return Checkpoint(
        path=index.path,
        format=shards[0].format,
        wrapper=wrappers.pop() if len(wrappers) == 1 else None,
        stripped_prefixes=stripped,
        non_tensor_keys=non_tensor,
        metadata=dict(index.metadata),
        tensors=infos,
        sources=sources,
        read=lambda src: src[0].array(src[1]),
        raw=lambda src: src[0].raw(src[1]),
        view=lambda src: src[0].stored_view(src[1]),  # raw_chunks / values / release: bounded memory per shard
        close=close,
        shards=files,
    )


def check_shard_contents(index: ShardIndex, held: Sequence[tuple[str, Sequence[str]]]) -> None:
    """The tensors the shards hold (``(shard name, stored names)``, in the index's shard order) against
    the index: none in two shards, each listed for the shard that holds it, none listed but absent.

    Raises:
        ShardIndexError: the first disagreement, in that order, shard by shard.
    """
    where: dict[str, str] = {}  # stored name -> shard it is in
    for name, names in held:
        for stored in names:
            if stored in where:
                raise ShardIndexError(f"tensor {_show(stored)} is in two shards of {index.path}: "
                                      f"{_show(where[stored])} and {_show(name)}; which one is the model's is "
                                      "not defined; re-save the model")
            where[stored] = name
        _check_listed(index, name, list(names))
    absent = [n for n in index.weight_map if n not in where]
    if absent:
        shard = index.weight_map[absent[0]]
        absent = [n for n in absent if index.weight_map[n] == shard]
        raise ShardIndexError(
            f"{index.path} lists {len(absent)} tensor(s) in shard {_show(shard)} that it does not hold: "
            f"{_names(absent)}; the shard is incomplete or from another save")


def _check_listed(index: ShardIndex, shard: str, held: list[str]) -> None:
    """Everything the shard holds is mapped to it (what it lacks is told once all shards are read)."""
    unlisted = [n for n in held if n not in index.weight_map]
    if unlisted:
        raise ShardIndexError(
            f"shard {_show(shard)} holds {len(unlisted)} tensor(s) that {index.path} does not list: "
            f"{_names(unlisted)}; the index and the shards are from different saves")
    elsewhere = [n for n in held if index.weight_map[n] != shard]
    if elsewhere:
        n = elsewhere[0]
        raise ShardIndexError(
            f"{index.path} maps tensor {_show(n)} to shard {_show(index.weight_map[n])}, but it is in "
            f"{_show(shard)}; the index and the shards are from different saves")


def _show(value: object, limit: int = 80) -> str:
    """A hostile name, quoted and cut, for a message (the CLI escapes control characters on output)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(_show(n) for n in names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
