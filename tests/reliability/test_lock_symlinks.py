"""Lock and temp files never follow a planted symlink (finding 8 of the hardening round 2).

A symlink named like a lock file (``.NAME.lock``) used to make ``open(O_CREAT)`` create -- or, with
a FIFO there, block on -- whatever it pointed at. Locks are now opened with ``O_NOFOLLOW`` and must be
regular files; atomic writes go through ``mkstemp`` (``O_EXCL | O_NOFOLLOW``) and replace, never
write through, a symlink at the destination.
"""

from __future__ import annotations

import os

import _attacks as A
import pytest

from ckpttool._atomic import atomic_write
from ckpttool.cli import main
from ckpttool.errors import OutputError
from ckpttool.locking import file_lock, lock_path_for


def test_a_symlinked_lock_is_refused_and_its_target_never_created(tmp_path):
    victim = tmp_path / "elsewhere" / "created_by_lock"
    victim.parent.mkdir()
    guarded = tmp_path / "a.pth"
    lock_path_for(guarded).symlink_to(victim)
    with pytest.raises(OutputError, match=r"it is a symlink .* not followed here") as err:
        with file_lock(guarded):
            pass
    assert "\n" not in str(err.value)
    assert not victim.exists()


def test_a_symlinked_lock_to_an_existing_file_leaves_it_alone(tmp_path):
    victim = tmp_path / "bashrc"
    victim.write_text("echo safe\n")
    before = os.stat(victim)
    guarded = tmp_path / "a.pth"
    lock_path_for(guarded).symlink_to(victim)
    with pytest.raises(OutputError, match="symlink"):
        with file_lock(guarded):
            pass
    after = os.stat(victim)
    assert victim.read_text() == "echo safe\n" and after.st_mtime_ns == before.st_mtime_ns


def test_a_fifo_lock_is_refused_without_hanging(tmp_path):
    guarded = tmp_path / "a.pth"
    os.mkfifo(lock_path_for(guarded))
    with A.time_bound(20), pytest.raises(OutputError, match="it is a FIFO"):
        with file_lock(guarded):
            pass


def test_backup_through_the_cli_with_a_planted_manifest_lock(capsys, tmp_path):
    (tmp_path / "a.pth").write_bytes(b"weights")
    (tmp_path / "backup_old").mkdir()
    victim = tmp_path / "victim"
    (tmp_path / "backup_old" / ".MANIFEST.json.lock").symlink_to(victim)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["backup", str(tmp_path / "a.pth")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: cannot use lock file") and err.count("\n") == 1
    assert not victim.exists()


def test_atomic_write_replaces_a_symlinked_destination_instead_of_writing_through_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    dest = tmp_path / "out.json"
    dest.symlink_to(victim)
    with atomic_write(dest, "w") as f:
        f.write("{}")
    assert victim.read_text() == "untouched"
    assert not dest.is_symlink() and dest.read_text() == "{}"
