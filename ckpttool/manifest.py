"""The lock manifest of an init folder (``init_model/MANIFEST.json``) and its check.

The manifest is tracked in git while the binaries are not. Per file (key: the path relative to the
manifest's folder) it records the sha256, the size, the verdict the file must keep, and the
provenance ``generate`` stored in the file, and its weights digest (``ckpttool.digest``: what a
training script loading it with its own code compares against). CI runs ``ckpttool verify --manifest``, which calls
:func:`check_manifest`.

Policy (also in ``init_model/README.md``): the check fails on a listed file that is missing, a
sha256 that differs, or a verdict that differs from the recorded one (an unreadable file counts as
a verdict mismatch). Checkpoint files present in the folder but not listed are reported as a
warning and do not fail the check: an experiment folder may hold scratch files, and what CI pins is
the listed set. ``backup_old/``, dot-files and temp files are never considered; other files are found
by the same suffixes, case-insensitive, as ``verify``'s folder mode.

A sharded model is pinned file by file: its index (whose entry holds the model's verdict, judged
over all shards) and every shard it names (checked by sha256 and size only; the index carries no
hashes, so a shard the manifest does not list leaves the weights unpinned and fails the check).

A manifest can arrive with a repository, so its keys are hostile: an absolute key, a ``..``
component or a sha256 that is not 64 hex digits makes it a corrupted manifest, and a listed path that
resolves (through symlinks) outside the manifest's folder, or that is not a regular file, is never
read or hashed: it counts as unreadable, a verdict mismatch.

A manifest that cannot be parsed is a :class:`ManifestError`; it is never rewritten.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ckpttool.errors import CkptError, ManifestError

MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = "ckpttool-init-manifest"
MANIFEST_VERSION = 1
# Folders next to the manifest that never hold pinned files.
_IGNORED_DIRS = ("backup_old",)
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ManifestEntry:
    """One pinned file."""

    path: str  # relative to the manifest's folder, '/'-separated
    sha256: str  # hex digest of the whole file
    size: int  # bytes
    expected_verdict: str  # "pretrained" | "random" | "partial" | ...: what check_manifest must see again
    provenance: Mapping[str, Any] = field(default_factory=dict)  # generate's metadata (plain types)
    # ckpttool.digest of the file's tensors (first weight set): what a training script that loads the
    # file with its own code compares against. None in manifests written before it existed.
    weights_digest: str | None = None

    def to_dict(self) -> dict:
        out = {
            "sha256": self.sha256,
            "size": self.size,
            "expected_verdict": self.expected_verdict,
            "provenance": dict(self.provenance),
        }
        if self.weights_digest is not None:
            out["weights_digest"] = self.weights_digest
        return out


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest: entries sorted by path."""

    path: Path
    entries: tuple[ManifestEntry, ...] = ()

    def get(self, rel_path: str) -> ManifestEntry | None:
        return next((e for e in self.entries if e.path == rel_path), None)

    def with_entry(self, entry: ManifestEntry) -> Manifest:
        """A copy with ``entry`` added or replacing the one with the same path."""
        rest = [e for e in self.entries if e.path != entry.path]
        return Manifest(self.path, tuple(sorted([*rest, entry], key=lambda e: e.path)))

    def to_dict(self) -> dict:
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "files": {e.path: e.to_dict() for e in self.entries},
        }


@dataclass(frozen=True)
class HashMismatch:
    path: str
    expected: str
    actual: str

    def to_dict(self) -> dict:
        return {"path": self.path, "expected": self.expected, "actual": self.actual}


@dataclass(frozen=True)
class VerdictMismatch:
    path: str
    expected: str
    actual: str  # a verdict, or "unreadable"
    reason: str  # the verdict's one-sentence evidence, or why the file could not be read

    def to_dict(self) -> dict:
        return {"path": self.path, "expected": self.expected, "actual": self.actual, "reason": self.reason}


@dataclass(frozen=True)
class ManifestCheck:
    """Result of :func:`check_manifest`; every list sorted by path (a diff, like model_signing's)."""

    manifest: Path
    checked: tuple[str, ...]  # listed files that exist and were checked
    missing: tuple[str, ...]  # listed, not on disk -> fails
    sha256_mismatches: tuple[HashMismatch, ...]  # -> fails
    verdict_mismatches: tuple[VerdictMismatch, ...]  # -> fails
    unlisted: tuple[str, ...]  # on disk, not listed -> warning only
    # Listed files that are Git LFS pointers (content not fetched); with ``lfs_oids_checked`` their
    # pointer's oid and size were compared with the entry instead of the content (verdict not checked),
    # otherwise they count as unreadable.
    lfs_pointers: tuple[str, ...] = ()
    lfs_oids_checked: bool = False
    # Shards of a listed sharded model that the manifest does not list: its weights are not pinned -> fails
    unpinned_shards: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not (self.missing or self.sha256_mismatches or self.verdict_mismatches or self.unpinned_shards)

    def to_dict(self) -> dict:
        return {
            "manifest": str(self.manifest),
            "passed": self.passed,
            "checked": list(self.checked),
            "missing": list(self.missing),
            "sha256_mismatches": [m.to_dict() for m in self.sha256_mismatches],
            "verdict_mismatches": [m.to_dict() for m in self.verdict_mismatches],
            "unlisted": list(self.unlisted),
            "lfs_pointers": list(self.lfs_pointers),
            "lfs_oids_checked": self.lfs_oids_checked,
            "unpinned_shards": list(self.unpinned_shards),
        }


def manifest_path_for(path: str | Path) -> Path:
    """The manifest that pins ``path``: ``MANIFEST.json`` in the same folder."""
    return Path(path).parent / MANIFEST_NAME


def read_manifest(path: str | Path, *, missing_ok: bool = False) -> Manifest:
    """Parse a manifest.

    Args:
        path: the MANIFEST.json file.
        missing_ok: return an empty manifest when the file does not exist (generate creates it).

    Raises:
        ManifestError: missing (unless ``missing_ok``), not JSON, or not in the expected shape.
    """
    from ckpttool._files import open_regular

    path = Path(path)
    try:
        with os.fdopen(open_regular(path, action="cannot read manifest"), "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        if missing_ok:
            return Manifest(path)
        raise ManifestError(f"manifest {path} does not exist; create it with `ckpttool generate`") from None
    except CkptError as e:  # a folder, a FIFO, a device: never read
        raise ManifestError(str(e)) from e
    except OSError as e:
        raise ManifestError(f"cannot read manifest {path}: {e.strerror or e}") from e
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise _corrupt(path, f"not valid JSON ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise _corrupt(path, f"not a {MANIFEST_FORMAT} document")
    if doc.get("version") != MANIFEST_VERSION:
        raise _corrupt(path, f"unsupported version {doc.get('version')!r} (this ckpttool reads {MANIFEST_VERSION})")
    files = doc.get("files")
    if not isinstance(files, dict):
        raise _corrupt(path, "'files' is not an object")
    from ckpttool._files import is_relative_inside

    entries = []
    for rel, item in files.items():
        if not is_relative_inside(rel):
            raise _corrupt(path, f"entry {rel!r} is not a relative path inside the manifest's folder "
                                 "(absolute paths and '..' are refused)")
        try:
            sha = _str(item["sha256"])
            if not _SHA256.fullmatch(sha):
                raise ValueError(f"sha256 {sha[:80]!r} is not 64 lowercase hex digits")
            weights = item.get("weights_digest")
            if weights is not None and not _SHA256.fullmatch(_str(weights)):
                raise ValueError(f"weights_digest {str(weights)[:80]!r} is not 64 lowercase hex digits")
            entries.append(ManifestEntry(
                path=str(rel),
                sha256=sha,
                size=int(item["size"]),
                expected_verdict=_str(item["expected_verdict"]),
                provenance=dict(item.get("provenance") or {}),
                weights_digest=weights,
            ))
        except (KeyError, TypeError, ValueError) as e:
            raise _corrupt(path, f"entry {rel!r} is malformed ({type(e).__name__}: {e})") from e
    return Manifest(path, tuple(sorted(entries, key=lambda e: e.path)))


def save_manifest(manifest: Manifest) -> None:
    """Write ``manifest`` atomically (sorted keys, trailing newline: stable git diffs)."""
    from ckpttool._atomic import atomic_write

    text = json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n"
    with atomic_write(manifest.path) as f:
        f.write(text.encode("utf-8"))


def update_manifest(manifest_path: str | Path, entry: ManifestEntry) -> Manifest:
    """Add or replace ``entry`` under the manifest's lock; creates the manifest if missing.

    Raises:
        ManifestError: the existing manifest is corrupted (it is left byte-identical).
    """
    from ckpttool.locking import file_lock

    manifest_path = Path(manifest_path)
    with file_lock(manifest_path):
        updated = read_manifest(manifest_path, missing_ok=True).with_entry(entry)
        save_manifest(updated)
    return updated


def check_manifest(manifest_path: str | Path, *, lfs_oids: bool = False) -> ManifestCheck:
    """Check every file the manifest lists, and list checkpoint files it does not.

    Args:
        manifest_path: ``init_model/MANIFEST.json`` (or a folder holding one).
        lfs_oids: a listed file that is a Git LFS pointer (a checkout without the LFS content) is
            checked by its pointer instead: the oid must equal the entry's sha256 and the size its
            size. Its verdict cannot be checked without the content. Off, a pointer is unreadable.

    Returns:
        A :class:`ManifestCheck`; ``passed`` is False on a missing file, a sha256 mismatch or a
        verdict that differs from the recorded one. Unlisted files are a warning only.

    Raises:
        ManifestError: the manifest is missing or unreadable.

    Example:
        >>> check = check_manifest("init_model/MANIFEST.json")  # doctest: +SKIP
        >>> check.passed, check.missing
        (True, ())
    """
    from ckpttool.errors import LfsPointerError
    from ckpttool.formats.lfs_pointer import read_lfs_pointer
    from ckpttool.verify import judge_file

    manifest_path = Path(manifest_path)
    if manifest_path.is_dir():
        manifest_path = manifest_path / MANIFEST_NAME
    manifest = read_manifest(manifest_path)
    folder = manifest_path.parent
    shards = _listed_shards(manifest, folder)
    checked, missing, hashes, verdicts, pointers = [], [], [], [], []
    for entry in manifest.entries:
        file = folder / entry.path
        try:
            actual_sha = _confined_sha256(file, folder)
        except FileNotFoundError:
            missing.append(entry.path)
            continue
        except CkptError as e:  # outside the folder, or not a regular file: never read, never hashed
            verdicts.append(VerdictMismatch(entry.path, entry.expected_verdict, "unreadable", str(e)))
            continue
        checked.append(entry.path)
        pointer = read_lfs_pointer(file) if lfs_oids else None
        if pointer is not None:  # the pointer names the content's sha256 and size: compare those
            pointers.append(entry.path)
            if (pointer.oid, pointer.size) != (entry.sha256, entry.size):
                size = "" if pointer.size == entry.size else f" (size {pointer.size}, expected {entry.size})"
                hashes.append(HashMismatch(entry.path, entry.sha256, pointer.oid + size))
            continue
        if actual_sha != entry.sha256:
            hashes.append(HashMismatch(entry.path, entry.sha256, actual_sha))
        if entry.path in shards:  # judged once, as its model, through the index's entry
            continue
        try:
            verdict = judge_file(file)
            actual, reason = verdict.verdict, verdict.reason
        except LfsPointerError as e:
            pointers.append(entry.path)
            actual, reason = "unreadable", str(e)
        except CkptError as e:  # unreadable/unsafe: it cannot have the recorded verdict
            actual, reason = "unreadable", str(e)
        if actual != entry.expected_verdict:
            verdicts.append(VerdictMismatch(entry.path, entry.expected_verdict, actual, reason))
    listed = {e.path for e in manifest.entries}
    unpinned = sorted(p for p in shards if p not in listed)
    unlisted = sorted(p for p in _checkpoint_files(folder) if p not in listed and p not in shards)
    return ManifestCheck(
        manifest=manifest_path,
        checked=tuple(sorted(checked)),
        missing=tuple(sorted(missing)),
        sha256_mismatches=tuple(sorted(hashes, key=lambda m: m.path)),
        verdict_mismatches=tuple(sorted(verdicts, key=lambda m: m.path)),
        unlisted=tuple(unlisted),
        lfs_pointers=tuple(sorted(pointers)),
        lfs_oids_checked=lfs_oids,
        unpinned_shards=tuple(unpinned),
    )


def _listed_shards(manifest: Manifest, folder: Path) -> set[str]:
    """The shard files (manifest keys) of every listed shard index that can be read; an unreadable
    index is judged, and fails, as its own entry."""
    from ckpttool.sharded import is_shard_index, read_shard_index

    out: set[str] = set()
    for entry in manifest.entries:
        if not is_shard_index(entry.path):
            continue
        try:
            index = read_shard_index(folder / entry.path)
        except CkptError:
            continue
        base = PurePosixPath(entry.path).parent
        out.update((base / name).as_posix() for name in index.shards)
    return out


def _confined_sha256(file: Path, folder: Path) -> str:
    """sha256 of a listed file that resolves inside ``folder`` and is a regular file.

    Raises:
        FileNotFoundError: it does not exist (a CheckpointNotFoundError).
        InvalidArgumentError: it resolves outside ``folder``, or is a folder, FIFO, device or socket.
    """
    from ckpttool._files import copy_and_hash, is_below, open_regular
    from ckpttool.errors import InvalidArgumentError

    if not is_below(file, folder):
        raise InvalidArgumentError(
            f"{file} resolves to {os.path.realpath(file)}, outside the manifest's folder {folder}; "
            "it was not read; a manifest pins only files inside its folder")
    with os.fdopen(open_regular(file, action="cannot check"), "rb") as f:
        return copy_and_hash(f)[0]


def _checkpoint_files(folder: Path) -> list[str]:
    from ckpttool.loading import CHECKPOINT_SUFFIXES  # one suffix list for folder and manifest mode
    from ckpttool.sharded import INDEX_SUFFIXES

    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in _IGNORED_DIRS and not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(CHECKPOINT_SUFFIXES + INDEX_SUFFIXES):
                continue
            found.append((Path(dirpath) / name).relative_to(folder).as_posix())
    return found


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _corrupt(path: Path, what: str) -> ManifestError:
    return ManifestError(f"manifest {path} is corrupted: {what}; it was left unchanged; "
                         f"fix it or restore it from git (`git checkout -- {path.name}`)")
