"""Backups never widen access and only copy regular files (finding 7 of the hardening round 2).

The tests run as root in CI, where permission checks never deny anything, so they assert mode bits
rather than access: an object keeps its source's bits minus write, a new ``backup_old`` is 0700, a
restored file gets the object's bits plus owner write. Symlinks and FIFOs are refused by name
(within a time bound: a FIFO that is opened for reading blocks forever).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import _attacks as A
import pytest
from _cli import cli

from ckpttool.backup import backup_file, find_backup, restore_backup
from ckpttool.errors import InvalidArgumentError


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(autouse=True)
def _usual_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize(("source_mode", "object_mode"), [(0o600, 0o400), (0o640, 0o440), (0o644, 0o444),
                                                          (0o755, 0o555)])
def test_object_keeps_the_source_bits_minus_write_and_backup_old_is_0700(tmp_path, source_mode, object_mode):
    src = tmp_path / "init_model" / "secret_init.pth"
    src.parent.mkdir()
    src.write_bytes(b"weights " + bytes([source_mode & 0xFF]))
    os.chmod(src, source_mode)
    rec = backup_file(src)
    assert mode(rec.object_file) == object_mode
    assert mode(tmp_path / "init_model" / "backup_old") == 0o700
    assert mode(tmp_path / "init_model" / "backup_old" / rec.view_path) == object_mode  # the same inode


def test_an_existing_backup_old_keeps_its_mode(tmp_path):
    (tmp_path / "backup_old").mkdir(mode=0o750)
    (tmp_path / "a.pth").write_bytes(b"x")
    backup_file(tmp_path / "a.pth")
    assert mode(tmp_path / "backup_old") == 0o750


def test_restore_gives_the_object_bits_plus_owner_write(tmp_path):
    src = tmp_path / "a.pth"
    src.write_bytes(b"v1")
    os.chmod(src, 0o600)
    rec = backup_file(src, move=True)
    restore_backup(rec.id, root=tmp_path)
    assert src.read_bytes() == b"v1" and mode(src) == 0o600
    # a world-readable file replaced by a private backup does not stay world-readable
    src.write_bytes(b"v2")
    os.chmod(src, 0o644)
    restore_backup(rec.id, root=tmp_path)
    assert src.read_bytes() == b"v1" and mode(src) == 0o600


def test_a_symlink_is_refused_and_the_real_file_can_be_backed_up(capsys, tmp_path):
    private = tmp_path / "root_only" / "id_rsa"
    private.parent.mkdir()
    private.write_bytes(b"private key")
    os.chmod(private, 0o600)
    folder = tmp_path / "init_model"
    folder.mkdir()
    link = folder / "vit_pretrained_init.pth"
    link.symlink_to(private)

    code, out, err = cli(capsys, "backup", str(link))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: cannot back up {link}: it is a symlink (to {private})")
    assert "back up the real file it points to" in err
    assert not (folder / "backup_old" / "objects").exists()

    code, _, err = cli(capsys, "backup", str(private), "--root", str(folder))  # the user names the real file
    assert code == 0, err
    (obj,) = (folder / "backup_old" / "objects").iterdir()
    assert obj.read_bytes() == b"private key" and mode(obj) == 0o400


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_non_regular_files_are_refused_without_hanging(capsys, tmp_path, kind):
    path = tmp_path / "weights.pth"
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    with A.time_bound(20):
        code, _, err = cli(capsys, "backup", str(path))
    assert code == 2 and err.count("\n") == 1
    if kind == "fifo":
        assert err.startswith(f"error: cannot back up {path}: it is a FIFO")
    else:  # a folder is backed up model by model (a sharded model as one): this one holds none
        assert err.startswith(f"error: no checkpoint files (.safetensors, .pth, .pth.tar, .pt, .bin, .ckpt) under {path}")


def test_looking_up_a_fifo_inside_backup_old_does_not_hang(tmp_path):
    (tmp_path / "a.pth").write_bytes(b"x")
    backup_file(tmp_path / "a.pth")
    fifo = tmp_path / "backup_old" / "pipe"
    os.mkfifo(fifo)
    with A.time_bound(20), pytest.raises(InvalidArgumentError, match="it is a FIFO"):
        find_backup(fifo)
