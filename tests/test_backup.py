"""ckpttool.backup: content-addressed backups, restore, never overwriting. Real files, no mocks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import _init_fixtures as fx
import pytest

from ckpttool.backup import (
    backup_file,
    find_backup,
    list_backups,
    resolve_backup_dir,
    restore_backup,
)
from ckpttool.errors import CheckpointNotFoundError, InvalidArgumentError, ManifestError, OutputError
from ckpttool.hashing import file_sha256

# shared fixtures (pytest finds them as module attributes)
_no_network = fx._no_network
random_weights = fx.random_weights
trained_weights = fx.trained_weights


@pytest.fixture
def init_dir(tmp_path, trained_weights) -> Path:
    folder = tmp_path / "init_model"
    folder.mkdir()
    (folder / "a.safetensors").write_bytes(trained_weights.read_bytes())
    return folder


def test_backup_copies_verifies_and_records(init_dir):
    src = init_dir / "a.safetensors"
    before = src.read_bytes()
    rec = backup_file(src, reason="suspected random init")
    assert src.read_bytes() == before  # a copy: the original is untouched
    bdir = init_dir / "backup_old"
    assert rec.backup_dir == bdir
    assert rec.sha256 == file_sha256(src) and rec.size == len(before)
    assert rec.verdict == "pretrained" and rec.reason == "suspected random init" and not rec.moved
    assert rec.original_path == str(src.absolute())
    assert rec.created_utc.endswith("Z") and rec.id.endswith(rec.sha256[:8])
    assert (bdir / rec.object_path).read_bytes() == before
    view = bdir / rec.view_path
    assert view.name == "a.safetensors" and os.path.samefile(view, bdir / rec.object_path)
    doc = json.loads((bdir / "MANIFEST.json").read_text())
    assert doc["backups"] == [rec.to_dict()]


def test_same_content_twice_is_recorded_twice_and_stored_once(init_dir):
    src = init_dir / "a.safetensors"
    r1 = backup_file(src, reason="one")
    r2 = backup_file(src, reason="two")
    assert r1.id != r2.id and r1.sha256 == r2.sha256
    assert [r.reason for r in list_backups(init_dir / "backup_old")] == ["one", "two"]
    assert len(list((init_dir / "backup_old" / "objects").iterdir())) == 1
    assert r1.view_path != r2.view_path  # two views, both links to the one object


def test_backup_never_overwrites_existing_object_or_view(init_dir):
    src = init_dir / "a.safetensors"
    r1 = backup_file(src)
    obj = init_dir / "backup_old" / r1.object_path
    stat = obj.stat()
    r2 = backup_file(src)
    assert obj.stat().st_ino == stat.st_ino and obj.stat().st_mtime_ns == stat.st_mtime_ns
    assert (init_dir / "backup_old" / r1.view_path).is_file()
    assert (init_dir / "backup_old" / r2.view_path).is_file()


def test_damaged_object_is_reported_and_left_alone(init_dir):
    src = init_dir / "a.safetensors"
    r1 = backup_file(src)
    obj = init_dir / "backup_old" / r1.object_path
    os.chmod(obj, 0o644)
    obj.write_bytes(b"bit rot")
    with pytest.raises(OutputError, match="is damaged"):
        backup_file(src)
    assert obj.read_bytes() == b"bit rot"
    assert len(list_backups(init_dir / "backup_old")) == 1
    with pytest.raises(OutputError, match="has sha256 .* it is damaged; nothing was restored"):
        restore_backup(r1.id, root=init_dir)


def test_move_removes_original_only_after_the_copy(init_dir):
    src = init_dir / "a.safetensors"
    content = src.read_bytes()
    rec = backup_file(src, move=True)
    assert not src.exists() and rec.moved
    assert (init_dir / "backup_old" / rec.object_path).read_bytes() == content


def test_unreadable_file_is_backed_up_with_verdict_unreadable(init_dir):
    junk = init_dir / "notes.txt"
    junk.write_text("hello")
    assert backup_file(junk).verdict == "unreadable"


def test_missing_file_and_root_option(init_dir, tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no such file"):
        backup_file(init_dir / "nope.pth.tar")
    rec = backup_file(init_dir / "a.safetensors", root=tmp_path / "elsewhere")
    assert rec.backup_dir == tmp_path / "elsewhere" / "backup_old"
    assert resolve_backup_dir(init_dir / "a.safetensors") == init_dir / "backup_old"


def test_restore_round_trip_is_byte_identical_and_backs_up_what_it_replaces(init_dir, random_weights):
    target = init_dir / "a.safetensors"
    original = target.read_bytes()
    rec = backup_file(target, reason="before replacing")
    target.write_bytes(random_weights.read_bytes())
    replaced_sha = file_sha256(target)
    with open(target, "rb") as reader:  # a run that opened the file before the restore
        result = restore_backup(rec.id, root=init_dir)
        assert reader.read() == random_weights.read_bytes()  # unaffected: the file was renamed over
    assert target.read_bytes() == original
    assert result.replaced is not None and result.replaced.reason == "replaced by restore"
    assert result.replaced.sha256 == replaced_sha and result.replaced.verdict == "random"
    assert not result.unchanged
    again = restore_backup(rec.id, root=init_dir)
    assert again.unchanged and again.replaced is None


def test_restore_by_path_prefix_and_to(init_dir, tmp_path):
    rec = backup_file(init_dir / "a.safetensors")
    by_path = find_backup(init_dir / "backup_old" / rec.view_path)
    assert by_path.sha256 == rec.sha256
    dest = tmp_path / "copy" / "restored.safetensors"
    result = restore_backup(rec.id[:12], to=dest, root=init_dir)
    assert dest.read_bytes() == (init_dir / "a.safetensors").read_bytes()
    assert result.target == dest
    with pytest.raises(CheckpointNotFoundError, match="no backup 'zzz'"):
        restore_backup("zzz", root=init_dir)
    with pytest.raises(InvalidArgumentError, match="not inside a backup_old folder"):
        restore_backup(init_dir / "a.safetensors")


def test_ambiguous_prefix(init_dir):
    backup_file(init_dir / "a.safetensors")
    backup_file(init_dir / "a.safetensors")
    with pytest.raises(InvalidArgumentError, match="ambiguous"):
        find_backup("2", root=init_dir)


def test_corrupted_backup_manifest_is_reported_and_left_byte_identical(init_dir):
    rec = backup_file(init_dir / "a.safetensors")
    manifest = init_dir / "backup_old" / "MANIFEST.json"
    manifest.write_bytes(manifest.read_bytes()[:-20])
    before = manifest.read_bytes()
    objects_before = sorted(os.listdir(init_dir / "backup_old"))
    with pytest.raises(ManifestError, match="is corrupted .* left unchanged"):
        backup_file(init_dir / "a.safetensors")
    with pytest.raises(ManifestError):
        restore_backup(rec.id, root=init_dir)
    with pytest.raises(ManifestError):
        list_backups(init_dir / "backup_old")
    assert manifest.read_bytes() == before
    assert sorted(os.listdir(init_dir / "backup_old")) == objects_before
