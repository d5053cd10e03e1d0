"""A `backup_old/MANIFEST.json` that came with a repository cannot make `restore` read or write
outside its folder (finding 6 of the hardening round 2).

Every hostile record is either refused when the manifest is read (a corrupted manifest: one
``error:`` line, exit 2) or refused by `restore` (the recorded target is outside the root, inside
``backup_old``, a symlink); in every case no file outside the test's folders is created or changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from _cli import cli

from ckpttool.backup import backup_file, list_backups, restore_backup
from ckpttool.errors import InvalidArgumentError, ManifestError


@pytest.fixture
def store(tmp_path) -> tuple[Path, dict]:
    """init_model/ with one real backup; returns (root, the manifest document to tamper with)."""
    root = tmp_path / "repo" / "init_model"
    root.mkdir(parents=True)
    (root / "a.pth").write_bytes(b"weights v1")
    backup_file(root / "a.pth")
    doc = json.loads((root / "backup_old" / "MANIFEST.json").read_text())
    return root, doc


def _tamper(root: Path, doc: dict, **fields) -> str:
    record = {**doc["backups"][0], **fields}
    (root / "backup_old" / "MANIFEST.json").write_text(json.dumps({**doc, "backups": [record]}))
    return record["id"]


def test_absolute_original_path_outside_the_root_is_not_restored_there(capsys, store, tmp_path):
    root, doc = store
    victim = tmp_path / "home" / ".bashrc"  # where a hostile manifest wants the content to go
    victim.parent.mkdir()
    victim.write_text("echo safe\n")
    record_id = _tamper(root, doc, original_path=str(victim))

    code, out, err = cli(capsys, "restore", record_id, "--root", str(root))
    assert code == 2 and out == ""
    assert err.startswith(f"error: backup {record_id} was recorded from {victim}, which is outside")
    assert "pass --to PATH" in err and err.count("\n") == 1
    assert victim.read_text() == "echo safe\n"

    # the user can still choose the target explicitly
    dest = tmp_path / "chosen.pth"
    code, _, err = cli(capsys, "restore", record_id, "--root", str(root), "--to", str(dest))
    assert code == 0, err
    assert dest.read_bytes() == b"weights v1"


@pytest.mark.parametrize("where", ["symlinked-folder", "inside-backup_old", "dotdot"])
def test_recorded_paths_that_resolve_outside_the_root_or_into_the_store_are_refused(store, tmp_path, where):
    root, doc = store
    outside = tmp_path / "outside"
    outside.mkdir()
    if where == "symlinked-folder":  # below the root by name, outside it on disk
        (root / "link").symlink_to(outside)
        target = root / "link" / "a.pth"
    elif where == "inside-backup_old":  # would overwrite the store's own manifest
        target = root / "backup_old" / "MANIFEST.json"
    else:
        target = Path(f"{root}/../../outside/a.pth")
    record_id = _tamper(root, doc, original_path=str(target))
    manifest = (root / "backup_old" / "MANIFEST.json").read_bytes()
    with pytest.raises(InvalidArgumentError, match="outside|backup folder"):
        restore_backup(record_id, root=root)
    assert list(outside.iterdir()) == []
    assert (root / "backup_old" / "MANIFEST.json").read_bytes() == manifest  # not restored over


def test_object_path_with_dotdot_is_a_corrupted_manifest_and_nothing_is_read(capsys, store, tmp_path):
    root, doc = store
    secret = tmp_path / "secret.key"
    secret.write_bytes(b"private key")
    sha = hashlib.sha256(b"private key").hexdigest()
    rel = os.path.relpath(secret, root / "backup_old")  # ../../../secret.key, hash matching
    record_id = _tamper(root, doc, sha256=sha, object_path=rel, original_path=str(root / "leak.pth"))
    manifest = root / "backup_old" / "MANIFEST.json"
    before = manifest.read_bytes()

    code, out, err = cli(capsys, "restore", record_id, "--root", str(root))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: backup manifest {manifest} is corrupted")
    assert f"record 1: object_path {rel!r} is not objects/<its sha256>" in err
    assert not (root / "leak.pth").exists() and manifest.read_bytes() == before


def test_object_symlinked_out_of_the_store_is_not_read(store, tmp_path):
    root, doc = store
    secret = tmp_path / "secret.key"
    secret.write_bytes(b"private key")
    sha = hashlib.sha256(b"private key").hexdigest()
    (root / "backup_old" / "objects" / sha).symlink_to(secret)
    record_id = _tamper(root, doc, sha256=sha, object_path=f"objects/{sha}", original_path=str(root / "leak.pth"))
    with pytest.raises(InvalidArgumentError, match="it is a symlink"):
        restore_backup(record_id, root=root)
    assert not (root / "leak.pth").exists()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("sha256", "A" * 64, "is not 64 lowercase hex digits"),
    ("sha256", ["x"], "sha256 is list, not str"),
    ("original_path", "relative/a.pth", "is not an absolute path"),
    ("original_path", "/x\u0000y", "is not an absolute path"),
    ("view_path", "../../etc/passwd", "view_path '../../etc/passwd' is not a relative path"),
    ("view_path", "/etc/passwd", "is not a relative path"),
    ("size", "10", "size is str, not int"),
    ("size", -1, "size -1 is negative"),
    ("id", 7, "id is int, not str"),
    ("verdict", {"x": 1}, "verdict is dict"),
    ("moved", "yes", "moved is str, not bool"),
])
def test_hostile_fields_are_a_corrupted_manifest(store, field, value, message):
    root, doc = store
    _tamper(root, doc, **{field: value})
    with pytest.raises(ManifestError, match="is corrupted") as err:
        list_backups(root / "backup_old")
    assert message in str(err.value)


def test_restore_never_writes_through_a_symlinked_target(capsys, store, tmp_path):
    root, _ = store
    rec = list_backups(root / "backup_old")[0]
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    (root / "a.pth").unlink()
    (root / "a.pth").symlink_to(victim)  # the recorded path is now a symlink leading out
    code, _, err = cli(capsys, "restore", rec.id, "--root", str(root))
    assert code == 2 and "which is outside" in err and err.count("\n") == 1
    # a symlink given with --to, or one that stays inside the root, is refused as a symlink
    inside = root / "other.pth"
    inside.write_text("inside")
    (root / "a.pth").unlink()
    (root / "a.pth").symlink_to(inside)
    for args in (["--to", str(root / "a.pth")], []):
        code, _, err = cli(capsys, "restore", rec.id, "--root", str(root), *args)
        assert code == 2 and "it is a symlink" in err and err.count("\n") == 1
    assert victim.read_text() == "untouched" and inside.read_text() == "inside"
    assert (root / "a.pth").is_symlink()
