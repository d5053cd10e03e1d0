"""Backup and restore of init files, content-addressed, with a manifest. Nothing is ever overwritten.

Layout, under a root folder (by default the folder of the file being backed up, i.e. ``init_model``)::

    <root>/backup_old/
        MANIFEST.json                 every backup record, oldest first (atomic rewrite under a lock)
        objects/<sha256>              the content, stored once however often it is backed up
        <UTC timestamp>/<file name>   a hard link to the object, for people browsing the folder

The same content backed up twice is recorded twice and stored once. Before a record is appended the
stored object is read back and its sha256 compared; restore checks it again before writing.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ckpttool.errors import (
    CheckpointNotFoundError,
    CkptError,
    InvalidArgumentError,
    ManifestError,
    OutputError,
)
from ckpttool.hashing import file_sha256

BACKUP_DIR = "backup_old"
BACKUP_MANIFEST = "MANIFEST.json"
BACKUP_FORMAT = "ckpttool-backup-manifest"
BACKUP_VERSION = 1
DEFAULT_ROOT = Path("init_model")
_CHUNK = 1 << 20


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
        }

    @classmethod
    def from_dict(cls, d: dict, backup_dir: Path) -> BackupRecord:
        return cls(
            id=str(d["id"]), original_path=str(d["original_path"]), sha256=str(d["sha256"]),
            size=int(d["size"]), verdict=d.get("verdict"), reason=str(d.get("reason", "")),
            created_utc=str(d["created_utc"]), object_path=str(d["object_path"]),
            view_path=d.get("view_path"), moved=bool(d.get("moved", False)), backup_dir=backup_dir,
        )


@dataclass(frozen=True)
class RestoreResult:
    """What :func:`restore_backup` did."""

    record: BackupRecord  # the backup that was restored
    target: Path  # where it was written
    replaced: BackupRecord | None  # backup of the file it replaced, if one was there and differed
    unchanged: bool  # the target already held exactly this content: nothing was written

    def to_dict(self) -> dict:
        return {
            "restored": self.record.to_dict(),
            "target": str(self.target),
            "replaced_backup": self.replaced.to_dict() if self.replaced else None,
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
        path: the file to back up.
        reason: why, stored in the record.
        move: remove the original once the stored copy is verified.
        root: folder holding ``backup_old``; default: the file's own folder.

    Returns:
        The new :class:`BackupRecord`.

    Raises:
        CheckpointNotFoundError: ``path`` is not a file.
        ManifestError: the backup manifest is corrupted (nothing is stored, the manifest is untouched).
        OutputError: the copy could not be written or did not verify.

    Example:
        >>> rec = backup_file("init_model/vit_small_cifar10_pretrained_init.pth.tar",
        ...                   reason="suspected random init")  # doctest: +SKIP
        >>> rec.id
        '20260117T085012Z-1a2b3c4d'
    """
    from ckpttool.locking import file_lock

    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"cannot back up {path}: no such file")
    backup_dir = resolve_backup_dir(path, root=root)
    ensure_folder(backup_dir)
    manifest = backup_dir / BACKUP_MANIFEST
    with file_lock(manifest):
        records = _read_records(backup_dir)  # a corrupted manifest stops us before anything is stored
        sha, size = _store_object(path, backup_dir)
        verdict = _verdict_of(path)
        now = _dt.datetime.now(_dt.timezone.utc)
        stamp = now.strftime("%Y%m%dT%H%M%S.%fZ")
        record_id = _unique_id(f"{now.strftime('%Y%m%dT%H%M%SZ')}-{sha[:8]}", {r.id for r in records})
        view = _link_view(backup_dir, stamp, path.name, sha)
        record = BackupRecord(
            id=record_id, original_path=str(path.absolute()), sha256=sha, size=size, verdict=verdict,
            reason=reason, created_utc=now.isoformat(timespec="seconds").replace("+00:00", "Z"),
            object_path=f"objects/{sha}", view_path=view, moved=move, backup_dir=backup_dir,
        )
        _write_records(backup_dir, [*records, record])
    if move:
        try:
            path.unlink()
        except OSError as e:
            raise OutputError(f"backed up {path} as {record.id} but could not remove it: {e.strerror or e}") from e
    return record


def find_backup(id_or_path: str | Path, *, root: str | Path | None = None) -> BackupRecord:
    """Look a backup up by id, or by a path inside a ``backup_old`` folder (object or view link).

    Raises:
        CheckpointNotFoundError: no such backup.
    """
    text = str(id_or_path)
    candidate = Path(text)
    if candidate.exists():
        backup_dir = next((p for p in candidate.absolute().parents if p.name == BACKUP_DIR), None)
        if backup_dir is None:
            raise InvalidArgumentError(
                f"{candidate} is not inside a {BACKUP_DIR} folder; pass a backup id (see `ckpttool backup list`)")
        sha = file_sha256(candidate)
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
    file open keeps reading the old content.

    Args:
        id_or_path: a backup id (or unique prefix), or a path inside ``backup_old``.
        to: where to write; default: the path it was backed up from.
        root: folder holding ``backup_old`` when ``id_or_path`` is an id; default ``init_model``.

    Raises:
        CheckpointNotFoundError: no such backup; OutputError: the stored copy fails its sha256
        check, or writing failed (the target is untouched).
    """
    from ckpttool._atomic import atomic_write
    from ckpttool.locking import file_lock

    record = find_backup(id_or_path, root=root)
    source = record.object_file
    if not source.is_file():
        raise OutputError(f"backup {record.id}: stored copy {source} is missing; nothing was restored")
    actual = file_sha256(source)
    if actual != record.sha256:
        raise OutputError(f"backup {record.id}: stored copy {source} has sha256 {actual}, recorded "
                          f"{record.sha256}; it is damaged; nothing was restored")
    target = Path(to) if to is not None else Path(record.original_path)
    ensure_folder(target.parent)
    with file_lock(target):
        replaced = None
        if target.exists():
            if target.is_file() and file_sha256(target) == record.sha256:
                return RestoreResult(record, target, None, unchanged=True)
            replaced = backup_file(target, reason="replaced by restore")
        digest = hashlib.sha256()
        with atomic_write(target) as out, open(source, "rb") as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            if digest.hexdigest() != record.sha256:  # changed under us: abort, the temp is removed
                raise OutputError(f"backup {record.id} changed while being restored; nothing was restored")
    return RestoreResult(record, target, replaced, unchanged=False)


# -- internals ------------------------------------------------------------------------------------

def _read_records(backup_dir: Path) -> list[BackupRecord]:
    manifest = backup_dir / BACKUP_MANIFEST
    try:
        raw = manifest.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise ManifestError(f"cannot read backup manifest {manifest}: {e.strerror or e}") from e
    try:
        doc = json.loads(raw.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != BACKUP_FORMAT:
            raise ValueError(f"not a {BACKUP_FORMAT} document")
        if doc.get("version") != BACKUP_VERSION:
            raise ValueError(f"unsupported version {doc.get('version')!r}")
        return [BackupRecord.from_dict(d, backup_dir) for d in doc["backups"]]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ManifestError(
            f"backup manifest {manifest} is corrupted ({type(e).__name__}: {e}); it was left unchanged and "
            f"nothing was backed up or restored; repair it (the stored copies are in {backup_dir / 'objects'})"
        ) from e


def _write_records(backup_dir: Path, records: list[BackupRecord]) -> None:
    from ckpttool._atomic import atomic_write

    doc = {"format": BACKUP_FORMAT, "version": BACKUP_VERSION, "backups": [r.to_dict() for r in records]}
    with atomic_write(backup_dir / BACKUP_MANIFEST) as f:
        f.write((json.dumps(doc, indent=2) + "\n").encode("utf-8"))


def _store_object(path: Path, backup_dir: Path) -> tuple[str, int]:
    """Copy ``path`` into objects/ unless that content is already there; verify; return (sha, size)."""
    from ckpttool._atomic import atomic_write

    objects = backup_dir / "objects"
    ensure_folder(objects)
    sha = file_sha256(path)
    final = objects / sha
    if final.exists():
        if file_sha256(final) != sha:
            raise OutputError(f"stored backup object {final} is damaged (sha256 differs from its name); "
                              "it was left as it is; move it aside and retry")
        return sha, final.stat().st_size
    digest = hashlib.sha256()
    size = 0
    with atomic_write(final) as out, open(path, "rb") as src:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        if digest.hexdigest() != sha:
            raise OutputError(f"{path} changed while it was being backed up; nothing was stored; retry")
    if file_sha256(final) != sha:  # read back what landed on disk before reporting success
        raise OutputError(f"the stored copy {final} does not match {path} after writing; check the disk")
    os.chmod(final, 0o444)
    return sha, size


def _link_view(backup_dir: Path, stamp: str, name: str, sha: str) -> str | None:
    folder = backup_dir / stamp
    for i in range(100):
        candidate = folder if i == 0 else backup_dir / f"{stamp}-{i}"
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            os.link(backup_dir / "objects" / sha, candidate / name)  # fails if it exists: never overwrites
            return (candidate / name).relative_to(backup_dir).as_posix()
        except FileExistsError:
            continue
        except OSError:  # no hard links on this filesystem: the object alone is the backup
            return None
    return None


def _unique_id(base: str, taken: set[str]) -> str:
    if base not in taken:
        return base
    i = 1
    while f"{base}-{i}" in taken:
        i += 1
    return f"{base}-{i}"


def _verdict_of(path: Path) -> str:
    from ckpttool.verify import judge_file

    try:
        return judge_file(path).verdict
    except CkptError:
        return "unreadable"


def ensure_folder(folder: Path) -> None:
    """Create ``folder`` (and parents) or raise OutputError naming why it cannot be used."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
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
