"""ckpttool._atomic.atomic_write: all or nothing, and one-line OutputErrors."""

from __future__ import annotations

import errno
import os

import pytest

from ckpttool._atomic import atomic_write
from ckpttool.errors import InvalidArgumentError, OutputError


def test_writes_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.bin"
    with atomic_write(path) as f:
        f.write(b"abc")
        temps = [p.name for p in tmp_path.iterdir()]
        assert not path.exists()
        assert len(temps) == 1 and temps[0].startswith(".out.bin.") and temps[0].endswith(".tmp")
    assert path.read_bytes() == b"abc"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_text_mode_and_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with atomic_write("report.json", "w") as f:
        f.write('{"ok": true}\n')
    assert (tmp_path / "report.json").read_text() == '{"ok": true}\n'


def test_writer_raising_midway_keeps_the_old_file(tmp_path):
    path = tmp_path / "init.pth"
    path.write_bytes(b"old contents")
    with pytest.raises(KeyError, match="boom"):
        with atomic_write(path) as f:
            f.write(b"new, half written")
            raise KeyError("boom")
    assert path.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["init.pth"]


def test_os_error_while_writing_becomes_output_error(tmp_path):
    path = tmp_path / "init.pth"
    path.write_bytes(b"old")
    with pytest.raises(OutputError) as err:
        with atomic_write(path) as f:
            f.write(b"x")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(err.value) == (
        f"cannot write {path}: No space left on device (ENOSPC); "
        "check that its folder exists, is writable and has free space"
    )
    assert isinstance(err.value.__cause__, OSError)
    assert path.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1


def test_folder_that_is_a_regular_file(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    path = blocker / "out.pth"
    with pytest.raises(OutputError) as err:
        with atomic_write(path) as f:
            f.write(b"x")
    assert str(err.value) == (
        f"cannot write {path}: Not a directory (ENOTDIR); check that its folder exists, is writable and has free space"
    )


def test_missing_folder(tmp_path):
    path = tmp_path / "missing" / "out.pth"
    with pytest.raises(OutputError, match=r"No such file or directory \(ENOENT\)"):
        with atomic_write(path):
            pass
    assert not path.parent.exists()


def test_permissions_new_file_follow_umask_existing_file_kept(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "new") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o640
    existing = tmp_path / "existing"
    existing.write_bytes(b"x")
    existing.chmod(0o600)
    with atomic_write(existing) as f:
        f.write(b"y")
    assert existing.stat().st_mode & 0o777 == 0o600


def test_bad_mode():
    with pytest.raises(InvalidArgumentError, match="mode must be one of"):
        with atomic_write("x", "ab"):
            pass
