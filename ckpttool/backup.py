"""Backup and restore of init files, content-addressed, with a manifest. Nothing is ever overwritten.

Layout, under a root folder (by default the folder of the file being backed up, i.e. ``init_model``)::

    <root>/backup_old/
        MANIFEST.json                 every backup record, oldest first (atomic rewrite under a lock)
        objects/<sha256>              the content, stored once however often it is backed up
        <UTC timestamp>/<file name>   a hard link to the object, for people browsing the folder

A sharded model (a shard index, ``model.safetensors.index.json``...) is one record: the record is its
index, ``parts`` its shards (each stored as an object too, the view folder holding them beside the
index), its verdict that of the stored copies judged as one model. A restore checks every stored copy,
stages every file as a temp beside its destination and renames them into place only when all are
written (the index last), so a failure leaves the old model whole.

The same content backed up twice is recorded twice and stored once. Before a record is appended the
stored object is read back and its sha256 compared; restore checks it again before writing.

A ``backup_old`` folder can arrive with a repository, so its manifest is hostile input: every record
is checked when read (``object_path`` must be exactly ``objects/<sha256>``, ``original_path``
absolute, ``view_path`` relative without ``..``), a record that is not is a corrupted manifest, and
``restore`` writes only below the root that holds ``backup_old`` unless ``to=`` names the target.
Backups never widen access: ``backup_old`` is created 0700, an object keeps its source's permission
bits minus write, and only regular files are backed up (a symlink is refused; pass the real file).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import stat
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from ckpttool._files import copy_and_hash, describe_kind, is_below, is_relative_inside, open_regular
from ckpttool.errors import (
    CheckpointNotFoundError,
    CkptError,
    InvalidArgumentError,
    ManifestError,
    OutputError,
)

BACKUP_DIR = "backup_old"
BACKUP_MANIFEST = "MANIFEST.json"
BACKUP_FORMAT = "ckpttool-backup-manifest"
BACKUP_VERSION = 1
DEFAULT_ROOT = Path("init_model")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class BackupPart:
    """One shard of a sharded model's backup (the record itself is the model's index)."""

    name: str  # the shard's file name as the index names it, relative to the index's folder
    sha256: str
    size: int
    object_path: str  # relative to the backup folder: "objects/<sha256>"

    def to_dict(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "size": self.size, "object_path": self.object_path}

    @classmethod
    def from_dict(cls, d: object) -> BackupPart:
        """A part read from a manifest, every field checked (the manifest may be hostile)."""
        if not isinstance(d, dict):
            raise TypeError(f"a part is a JSON object, not {type(d).__name__}")
        name, sha, size = _field(d, "name", str), _checked_sha(d), _field(d, "size", int)
        if not is_relative_inside(name) or "\\" in name:
            raise ValueError(f"part name {_show(name)} is not a relative path inside the model's folder")
        if size < 0:
            raise ValueError(f"size {size} is negative")
        return cls(name, sha, size, _checked_object_path(d, sha))


@dataclass(frozen=True)
class BackupRecord:
    """One backup: what was saved, from where, why, and where its content lives."""

    id: str  # "<UTC timestamp>-<sha256[:8]>", unique within one backup folder
    original_path: str  # absolute path of the file that was backed up
    sha256: str  # of the content
    size: int  # bytes
    verdict: str | None  # verdict at backup time; "unreadable" when it is not a checkpoint
    reason: str  # free text: "replaced by generate", "replaced by restore", the user's --reason
    created_utc: str  # ISO 8601, UTC
    object_path: str  # relative to the backup folder: "objects/<sha256>"
    view_path: str | None  # relative to the backup folder: "<timestamp>/<name>" (hard link), if made
    moved: bool = False  # the original was removed after the copy was verified (--move)
    backup_dir: Path | None = None  # the backup folder holding it (not stored in the manifest)
    # A sharded model: the record is its index (sha256, size, object), these are its shards.
    parts: tuple[BackupPart, ...] = ()

    @property
    def object_file(self) -> Path:
        return (self.backup_dir or Path(".")) / self.object_path

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "original_path": self.original_path,
            "sha256": self.sha256,
            "size": self.size,
            "verdict": self.verdict,
            "reason": self.reason,
            "created_utc": self.created_utc,
            "object_path": self.object_path,
            "view_path": self.view_path,
            "moved": self.moved,
            **({"parts": [p.to_dict() for p in self.parts]} if self.parts else {}),
        }

    @classmethod
    def from_dict(cls, d: dict, backup_dir: Path) -> BackupRecord:
        """A record read from a manifest, every field checked (the manifest may be hostile).

        Raises:
            ValueError, KeyError, TypeError: a field is missing, of the wrong type, or unsafe.
        """
        if not isinstance(d, dict):
            raise TypeError(f"a record is a JSON object, not {type(d).__name__}")
        sha = _checked_sha(d)
        object_path = _checked_object_path(d, sha)
        parts = _field(d, "parts", list, [])
        original = _field(d, "original_path", str)
        if not original.startswith("/") or "\0" in original:
            raise ValueError(f"original_path {_show(original)} is not an absolute path")
        view = d.get("view_path")
        if view is not None and not is_relative_inside(view):
            raise ValueError(f"view_path {_show(view)} is not a relative path inside the backup folder")
        size = _field(d, "size", int)
        if size < 0:
            raise ValueError(f"size {size} is negative")
        verdict = d.get("verdict")
        if verdict is not None and not isinstance(verdict, str):
            raise TypeError(f"verdict is {type(verdict).__name__}, not a string")
        return cls(
            id=_field(d, "id", str), original_path=original, sha256=sha, size=size, verdict=verdict,
            reason=_field(d, "reason", str, ""), created_utc=_field(d, "created_utc", str),
            object_path=object_path, view_path=view, moved=_field(d, "moved", bool, False),
            backup_dir=backup_dir, parts=tuple(BackupPart.from_dict(p) for p in parts),
        )


@dataclass(frozen=True)
class RestoreResult:
    """What :func:`restore_backup` did."""

    record: BackupRecord  # the backup that was restored
    target: Path  # where it was written
    replaced: BackupRecord | None  # backup of the file it replaced, if one was there and differed
    unchanged: bool  # the target already held exactly this content: nothing was written
    # A sharded model: backups of existing shard files it replaced that the replaced index did not name
    replaced_shards: tuple[BackupRecord, ...] = ()

    def to_dict(self) -> dict:
        return {
            "restored": self.record.to_dict(),
            "target": str(self.target),
            "replaced_backup": self.replaced.to_dict() if self.replaced else None,
            "replaced_shard_backups": [r.to_dict() for r in self.replaced_shards],
            "unchanged": self.unchanged,
        }


def resolve_backup_dir(path: str | Path | None = None, *, root: str | Path | None = None) -> Path:
    """The backup folder used for ``path``: ``<root>/backup_old``, root defaulting to path's folder.

    Without ``path`` and ``root`` it is ``init_model/backup_old`` relative to the working directory.
    """
    if root is not None:
        return Path(root) / BACKUP_DIR
    if path is not None:
        return Path(path).absolute().parent / BACKUP_DIR
    return DEFAULT_ROOT / BACKUP_DIR


def list_backups(backup_dir: str | Path) -> list[BackupRecord]:
    """Every record in ``backup_dir``'s manifest, oldest first; [] when there is no manifest yet.

    Raises:
        ManifestError: the manifest is corrupted (left untouched).
    """
    return _read_records(Path(backup_dir))


def backup_file(path: str | Path, *, reason: str = "", move: bool = False,
                root: str | Path | None = None) -> BackupRecord:
    """Copy (or move) ``path`` into the backup folder and record it.

    Args:
        path: the file to back up; a shard index is backed up with every shard it names, as one record.
        reason: why, stored in the record.
        move: remove the original once the stored copy is verified.
        root: folder holding ``backup_old``; default: the file's own folder.

    Returns:
        The new :class:`BackupRecord`.

    The stored object keeps ``path``'s permission bits minus write; a new ``backup_old`` is 0700.

    Raises:
        CheckpointNotFoundError: ``path`` does not exist.
        InvalidArgumentError: ``path`` is a symlink (pass the real file), a folder, a FIFO or a device.
        ManifestError: the backup manifest is corrupted (nothing is stored, the manifest is untouched).
        OutputError: the copy could not be written or did not verify.

    Example:
        >>> rec = backup_file("init_model/vit_small_cifar10_pretrained_init.pth.tar",
        ...                   reason="suspected random init")  # doctest: +SKIP
        >>> rec.id
        '20260117T085012Z-1a2b3c4d'
    """
    return _backup(Path(path), reason=reason, move=move, root=root, with_shards=True)


def _backup(path: Path, *, reason: str, move: bool, root: str | Path | None, with_shards: bool) -> BackupRecord:
    """``backup_file``; ``with_shards=False`` stores a shard index as a plain file (a damaged one that
    a restore replaces)."""
    from ckpttool.locking import file_lock

    with ExitStack() as stack:
        # the descriptors, not the paths, are what gets copied: a file swapped after the check is not read
        src = _open_source(path, stack)
        # a shard index: its shards, backed up with it as one unit
        shards = _open_shards(path, src, stack) if with_shards else []
        backup_dir = resolve_backup_dir(path, root=root)
        ensure_folder(backup_dir, mode=0o700)
        manifest = backup_dir / BACKUP_MANIFEST
        with file_lock(manifest):
            records = _read_records(backup_dir)  # a corrupted manifest stops us before anything is stored
            sha, size = _store_object(src, path, backup_dir, permissions=_readonly(src))
            parts = tuple(_store_part(name, f, path, backup_dir) for name, f in shards)
            record = _append_record(backup_dir, records, path, sha, size, reason=reason, move=move, parts=parts)
    if move:
        for p in (path, *(path.parent / name for name, _ in shards)):
            try:
                p.unlink()
            except OSError as e:
                raise OutputError(f"backed up {path} as {record.id} but could not remove {p}: {e.strerror or e}") from e
    return record


def _open_source(path: Path, stack: ExitStack) -> BinaryIO:
    fd = open_regular(path, action="cannot back up", follow_symlinks=False,
                      symlink_hint="; back up the real file it points to")
    return stack.enter_context(os.fdopen(fd, "rb"))


def _open_shards(path: Path, src: BinaryIO, stack: ExitStack) -> list[tuple[str, BinaryIO]]:
    """For a shard index: every shard it names, opened (the index parsed from the bytes being backed up)."""
    from ckpttool.sharded import MAX_INDEX_BYTES, is_shard_index, parse_shard_index

    if not is_shard_index(path):
        return []
    index = parse_shard_index(path, src.read(MAX_INDEX_BYTES + 1))
    src.seek(0)
    return [(name, _open_source(index.shard_path(name), stack)) for name in index.shards]


def _store_part(name: str, src: BinaryIO, index: Path, backup_dir: Path) -> BackupPart:
    sha, size = _store_object(src, index.parent / name, backup_dir, permissions=_readonly(src))
    return BackupPart(name, sha, size, f"objects/{sha}")


def _readonly(f: BinaryIO) -> int:
    return os.fstat(f.fileno()).st_mode & 0o555


def find_backup(id_or_path: str | Path, *, root: str | Path | None = None) -> BackupRecord:
    """Look a backup up by id, or by a path inside a ``backup_old`` folder (object or view link).

    Raises:
        CheckpointNotFoundError: no such backup.
        InvalidArgumentError: the id is ambiguous, or the path is outside ``backup_old`` or not a regular file.
    """
    text = str(id_or_path)
    candidate = Path(text)
    if candidate.exists():
        backup_dir = next((p for p in candidate.absolute().parents if p.name == BACKUP_DIR), None)
        if backup_dir is None:
            raise InvalidArgumentError(
                f"{candidate} is not inside a {BACKUP_DIR} folder; pass a backup id (see `ckpttool backup list`)")
        with os.fdopen(open_regular(candidate, action="cannot look up backup"), "rb") as f:
            sha, _ = copy_and_hash(f)
        matches = [r for r in _read_records(backup_dir) if r.sha256 == sha]
        if matches:
            return matches[-1]
        raise CheckpointNotFoundError(f"{candidate} is not a recorded backup in {backup_dir / BACKUP_MANIFEST}")
    backup_dir = resolve_backup_dir(root=root)
    records = _read_records(backup_dir)
    exact = [r for r in records if r.id == text]
    if not exact:  # a unique prefix is enough, like git
        exact = [r for r in records if r.id.startswith(text)]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise InvalidArgumentError(f"backup id {text!r} is ambiguous ({len(exact)} matches in {backup_dir}); give more of it")
    raise CheckpointNotFoundError(
        f"no backup {text!r} in {backup_dir}; list them with `ckpttool backup list --root {backup_dir.parent}`")


def restore_backup(id_or_path: str | Path, *, to: str | Path | None = None,
                   root: str | Path | None = None) -> RestoreResult:
    """Put a backup back in place, atomically, backing up whatever it replaces first.

    The content is copied to a temp file and renamed over the target: a process that has the old
    file open keeps reading the old content. Without ``to`` the target is the recorded path, which
    must lie below the folder holding ``backup_old`` (a manifest that came with a repository cannot
    send a restore elsewhere); ``to`` names any target. The target is never inside ``backup_old``,
    a symlink, or anything but a regular file. A new file gets the stored copy's permissions plus
    owner write; a replaced file keeps its own, narrowed to those. A sharded model's shards go beside
    its index (``to`` names the index); all its files are renamed into place only once every one is
    written, the index last.

    Args:
        id_or_path: a backup id (or unique prefix), or a path inside ``backup_old``.
        to: where to write; default: the path it was backed up from.
        root: folder holding ``backup_old`` when ``id_or_path`` is an id; default ``init_model``.

    Raises:
        CheckpointNotFoundError: no such backup; InvalidArgumentError: the target is outside the
        root (pass ``to``), inside ``backup_old``, a symlink or not a regular file; OutputError: the
        stored copy is missing or fails its sha256 check, or writing failed (the target is untouched).
    """
    from ckpttool._atomic import atomic_write
    from ckpttool.locking import file_lock

    record = find_backup(id_or_path, root=root)
    target = _restore_target(record, to)
    # (destination, recorded sha256, stored object): the file, or a sharded model's index and its shards
    files = [(target, record.sha256, record.object_file)]
    for part in record.parts:
        dest = target.parent / part.name
        _check_destination(record, dest, confined=to is None)
        files.append((dest, part.sha256, _part_file(record, part)))
    _check_store_folder(record.object_file.parent)
    with ExitStack() as stack:
        sources = [_open_stored(record, obj, sha, stack) for _, sha, obj in files]  # each checked
        for dest, _, _ in files:
            ensure_folder(dest.parent)
        with file_lock(target):
            existing = [_lstat(dest) for dest, _, _ in files]
            same = [st is not None and _holds(dest, st, sha) for (dest, sha, _), st in zip(files, existing, strict=True)]
            if all(same):
                return RestoreResult(record, target, None, unchanged=True)
            replaced = _backup_replaced(target) if existing[0] and not same[0] else None
            covered = {target, *(target.parent / p.name for p in replaced.parts)} if replaced else set()
            replaced_shards = tuple(backup_file(dest, reason="replaced by restore")
                                    for (dest, _, _), st, ok in zip(files, existing, same, strict=True)
                                    if st is not None and not ok and dest not in covered)
            # every file staged as a temp beside its destination; renamed into place only once all are
            # written and checked, the index last (an ExitStack unwinds in reverse); any failure removes them all
            with ExitStack() as writes:
                for (dest, sha, _), src, st in zip(files, sources, existing, strict=True):
                    permissions = (os.fstat(src.fileno()).st_mode & 0o777) | 0o200
                    if st is not None:
                        permissions &= st.st_mode & 0o777
                    out = writes.enter_context(atomic_write(dest, permissions=permissions))
                    src.seek(0)
                    if copy_and_hash(src, out)[0] != sha:  # changed under us: abort, the temps are removed
                        raise OutputError(f"backup {record.id} changed while being restored; nothing was restored")
    return RestoreResult(record, target, replaced, unchanged=False, replaced_shards=replaced_shards)


def _backup_replaced(target: Path) -> BackupRecord:
    """Back up what a restore replaces: a sharded model as a unit, or, when its index is damaged or
    names shards that are gone (often why it is being restored), the index alone as a file."""
    from ckpttool.errors import ShardIndexError

    try:
        return backup_file(target, reason="replaced by restore")
    except (ShardIndexError, CheckpointNotFoundError, InvalidArgumentError):
        return _backup(target, reason="replaced by restore", move=False, root=None, with_shards=False)


def _open_stored(record: BackupRecord, source: Path, sha: str, stack: ExitStack) -> BinaryIO:
    """A stored object, opened and checked against its recorded sha256."""
    try:
        fd = open_regular(source, action=f"backup {record.id}: cannot read stored copy", follow_symlinks=False)
    except CheckpointNotFoundError as e:
        raise OutputError(f"backup {record.id}: stored copy {source} is missing; nothing was restored") from e
    src = stack.enter_context(os.fdopen(fd, "rb"))
    actual, _ = copy_and_hash(src)
    if actual != sha:
        raise OutputError(f"backup {record.id}: stored copy {source} has sha256 {actual}, recorded "
                          f"{sha}; it is damaged; nothing was restored")
    return src


def _holds(dest: Path, st: os.stat_result, sha: str) -> bool:
    """Whether the existing regular file ``dest`` already holds content ``sha`` (refuses anything else)."""
    _check_restore_target(dest, st)
    with os.fdopen(open_regular(dest, action="cannot restore over", follow_symlinks=False), "rb") as f:
        return copy_and_hash(f)[0] == sha


# -- internals ------------------------------------------------------------------------------------

def _read_records(backup_dir: Path) -> list[BackupRecord]:
    manifest = backup_dir / BACKUP_MANIFEST
    try:
        with os.fdopen(open_regular(manifest, action="cannot read backup manifest"), "rb") as f:
            raw = f.read()
    except CheckpointNotFoundError:
        return []
    except (CkptError, OSError) as e:
        raise ManifestError(str(e) if isinstance(e, CkptError) else
                            f"cannot read backup manifest {manifest}: {e.strerror or e}") from e
    try:
        doc = json.loads(raw.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != BACKUP_FORMAT:
            raise ValueError(f"not a {BACKUP_FORMAT} document")
        if doc.get("version") != BACKUP_VERSION:
            raise ValueError(f"unsupported version {_show(doc.get('version'))}")
        backups = doc["backups"]
        if not isinstance(backups, list):
            raise TypeError(f"'backups' is {type(backups).__name__}, not a list")
        records = []
        for i, d in enumerate(backups, 1):
            try:
                records.append(BackupRecord.from_dict(d, backup_dir))
            except (ValueError, KeyError, TypeError) as e:
                raise type(e)(f"record {i}: {e.args[0] if e.args else e}") from e
        return records
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise ManifestError(
            f"backup manifest {manifest} is corrupted ({type(e).__name__}: {e}); it was left unchanged and "
            f"nothing was backed up or restored; repair it (the stored copies are in {backup_dir / 'objects'})"
        ) from e


def _write_records(backup_dir: Path, records: list[BackupRecord]) -> None:
    from ckpttool._atomic import atomic_write

    doc = {"format": BACKUP_FORMAT, "version": BACKUP_VERSION, "backups": [r.to_dict() for r in records]}
    with atomic_write(backup_dir / BACKUP_MANIFEST) as f:
        f.write((json.dumps(doc, indent=2) + "\n").encode("utf-8"))


def _checked_sha(d: dict) -> str:
    sha = _field(d, "sha256", str)
    if not _SHA256.fullmatch(sha):
        raise ValueError(f"sha256 {_show(sha)} is not 64 lowercase hex digits")
    return sha


def _checked_object_path(d: dict, sha: str) -> str:
    object_path = _field(d, "object_path", str)
    if object_path != f"objects/{sha}":
        raise ValueError(f"object_path {_show(object_path)} is not objects/<its sha256>")
    return object_path


def _field(d: dict, key: str, kind: type, *default: object):
    """``d[key]``, which must be a ``kind`` (bool is not an int here); ``default`` when given and absent."""
    value = d.get(key, *default) if default else d[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{key} is {type(value).__name__}, not {kind.__name__}")
    return value


def _show(value: object, limit: int = 80) -> str:
    """A hostile value, quoted and cut, for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _restore_target(record: BackupRecord, to: str | Path | None) -> Path:
    """Where a restore writes; refuses a recorded path outside the root and anything inside backup_old."""
    target = Path(record.original_path) if to is None else Path(to)
    _check_destination(record, target, confined=to is None)
    return target


def _check_destination(record: BackupRecord, dest: Path, *, confined: bool) -> None:
    backup_dir = record.backup_dir or resolve_backup_dir()
    root = backup_dir.absolute().parent
    if confined and not is_below(dest, root):
        raise InvalidArgumentError(
            f"backup {record.id} was recorded from {dest}, which is outside {root} (the folder holding "
            f"{BACKUP_DIR}); nothing was restored; pass --to PATH to choose where it goes")
    if is_below(dest, backup_dir):
        raise InvalidArgumentError(f"cannot restore into the backup folder {backup_dir} itself ({dest}); "
                                   "choose a target outside it")


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _check_restore_target(target: Path, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise InvalidArgumentError(
            f"cannot restore over {target}: it is a symlink (to {os.path.realpath(target)}); nothing was "
            "restored; pass --to with the real file")
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgumentError(
            f"cannot restore over {target}: it is {describe_kind(st.st_mode)}, not a regular file")


def _check_store_folder(objects: Path) -> None:
    """objects/ must be a real folder of the store, not a symlink leading elsewhere."""
    st = _lstat(objects)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{objects} is not a folder (a symlink or a file); backups are stored only in a "
                          "real objects/ folder; move it aside")


def _hash_stored(final: Path) -> str:
    with os.fdopen(open_regular(final, action="cannot read stored backup", follow_symlinks=False), "rb") as f:
        return copy_and_hash(f)[0]


def _store_object(src: BinaryIO, path: Path, backup_dir: Path, *, permissions: int) -> tuple[str, int]:
    """Copy ``src`` into objects/ unless that content is already there; verify; return (sha, size)."""
    from ckpttool._atomic import atomic_write

    objects = backup_dir / "objects"
    _check_store_folder(objects)
    ensure_folder(objects)
    sha, size = copy_and_hash(src)
    final = objects / sha
    if _lstat(final) is not None:
        if _hash_stored(final) != sha:
            raise OutputError(f"stored backup object {final} is damaged (sha256 differs from its name); "
                              "it was left as it is; move it aside and retry")
        return sha, size
    src.seek(0)
    with atomic_write(final, permissions=permissions) as out:
        if copy_and_hash(src, out)[0] != sha:
            raise OutputError(f"{path} changed while it was being backed up; nothing was stored; retry")
    if _hash_stored(final) != sha:  # read back what landed on disk before reporting success
        raise OutputError(f"the stored copy {final} does not match {path} after writing; check the disk")
    return sha, size


def _append_record(backup_dir: Path, records: list[BackupRecord], path: Path, sha: str, size: int, *,
                   reason: str, move: bool, parts: tuple[BackupPart, ...] = ()) -> BackupRecord:
    """Record a stored object (the caller holds the manifest's lock)."""
    record = BackupRecord(
        id="", original_path=str(path.absolute()), sha256=sha, size=size, verdict=None, reason=reason,
        created_utc="", object_path=f"objects/{sha}", view_path=None, moved=move, backup_dir=backup_dir,
        parts=parts,
    )
    verdict = _verdict_of(record)  # the verdict of exactly what was stored
    now = _dt.datetime.now(_dt.timezone.utc)
    stamp = now.strftime("%Y%m%dT%H%M%S.%fZ")
    record = replace(
        record, id=_unique_id(f"{now.strftime('%Y%m%dT%H%M%SZ')}-{sha[:8]}", {r.id for r in records}),
        verdict=verdict, created_utc=now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        view_path=_link_view(backup_dir, stamp, [(path.name, sha), *((p.name, p.sha256) for p in parts)]),
    )
    _write_records(backup_dir, [*records, record])
    return record


def _link_view(backup_dir: Path, stamp: str, files: list[tuple[str, str]]) -> str | None:
    """Hard links ``<stamp>/<name>`` to each stored object (a sharded model's shards beside its index,
    so the view folder is itself the model); the first one's path, or None without hard links."""
    folder = backup_dir / stamp
    for i in range(100):
        candidate = folder if i == 0 else backup_dir / f"{stamp}-{i}"
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            if any(os.path.lexists(candidate / name) for name, _ in files):
                continue
            for name, sha in files:
                (candidate / name).parent.mkdir(parents=True, exist_ok=True)
                os.link(backup_dir / "objects" / sha, candidate / name)  # fails if it exists: never overwrites
            return (candidate / files[0][0]).relative_to(backup_dir).as_posix()
        except FileExistsError:
            continue
        except OSError:  # no hard links on this filesystem: the objects alone are the backup
            return None
    return None


def _unique_id(base: str, taken: set[str]) -> str:
    if base not in taken:
        return base
    i = 1
    while f"{base}-{i}" in taken:
        i += 1
    return f"{base}-{i}"


def _verdict_of(record: BackupRecord) -> str:
    """The verdict of a record's stored objects (a sharded model: its stored index and shards, as one)."""
    from ckpttool.sharded import load_sharded
    from ckpttool.verify import judge_checkpoint, judge_file

    try:
        if not record.parts:
            return judge_file(record.object_file).verdict
        objects = {p.name: _part_file(record, p) for p in record.parts}
        with load_sharded(record.object_file, shard_files=objects) as ckpt:
            return judge_checkpoint(ckpt)[1].verdict
    except CkptError:
        return "unreadable"


def _part_file(record: BackupRecord, part: BackupPart) -> Path:
    return (record.backup_dir or Path(".")) / part.object_path


def ensure_folder(folder: Path, *, mode: int = 0o777) -> None:
    """Create ``folder`` (and parents) or raise OutputError naming why it cannot be used.

    ``mode`` applies to ``folder`` itself when it is created (minus the umask); parents get the default.
    """
    try:
        folder.mkdir(mode=mode, parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise OutputError(f"cannot create folder {folder}: a path component is a file; choose another location") from e
    except OSError as e:
        raise OutputError(f"cannot create folder {folder}: {e.strerror or e}") from e
    if not folder.is_dir():
        raise OutputError(f"cannot use {folder}: it is not a folder")


__all__ = [
    "BACKUP_DIR",
    "BackupRecord",
    "RestoreResult",
    "backup_file",
    "ensure_folder",
    "find_backup",
    "list_backups",
    "resolve_backup_dir",
    "restore_backup",
]
