"""A full disk: a clean one-line error (exit 2), old files intact, no temp file left behind.

Real: a 1 MiB tmpfs mounted for the test (skipped where mounting is not allowed). Simulated, and
said so: a child process whose ``os.fsync`` fails with ENOSPC for temp files, the fallback that
runs everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import _attacks as A
import pytest

from ckpttool.backup import backup_file, list_backups
from ckpttool.hashing import file_sha256

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TINY = '{"depth": 2, "embed_dim": 64, "num_heads": 2}'
GENERATE = ["generate", "--arch", "vit_tiny_patch16_224", "--init", "random", "--img-size", "32", "--patch-size",
            "4", "--model-kwargs", TINY, "--dataset", "cifar10", "--force"]


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """Run the real CLI entry point (its error boundary included) in-process; (exit code, stderr)."""
    from ckpttool.cli._root import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code, capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in folder.rglob("*")
            if p.is_file() and not p.name.endswith(".lock")}


def temps(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_generate_backup_restore_on_a_full_tmpfs(tiny_disk, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = tiny_disk / "x.pth.tar"
    code, err = cli([*GENERATE, "--out", str(out), "--seed", "1"], capsys)
    assert code == 0, err
    before = file_sha256(out)
    manifest_before = (tiny_disk / "MANIFEST.json").read_bytes()
    # 444 KB file on a 1 MiB disk: the backup of the old file fits, the new file does not
    code, err = cli([*GENERATE, "--out", str(out), "--seed", "2"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: cannot write ") and "No space left on device (ENOSPC)" in lines[0]
    assert "Traceback" not in err
    assert file_sha256(out) == before
    assert (tiny_disk / "MANIFEST.json").read_bytes() == manifest_before
    assert temps(tiny_disk) == []
    records = list_backups(tiny_disk / "backup_old")
    assert all(file_sha256(r.object_file) == r.sha256 for r in records)

    # fill what is left, then back up and restore: nothing fits
    filler = tiny_disk / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    state = snapshot(tiny_disk)
    other = tiny_disk / "y.safetensors"
    for argv in (["backup", str(out), "--reason", "disk full"], ["restore", records[0].id, "--root", str(tiny_disk),
                                                                   "--to", str(other)]):
        code, err = cli(argv, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
        assert "No space left on device" in lines[0] or "ENOSPC" in lines[0], lines[0]
        after = snapshot(tiny_disk)
        assert {k: after[k] for k in state} == state  # the manifest too: nothing recorded, nothing half-written
        # a failed backup may leave a browsing link (a hard link to an object already stored), nothing else
        new = sorted(set(after) - set(state))
        assert all(k.startswith("backup_old/") and after[k] in state.values() for k in new), new
        assert temps(tiny_disk) == []


_ENOSPC_CHILD = r"""
import errno, os, sys
real_fsync = os.fsync
def full(fd):
    if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):  # every atomic_write temp file
        raise OSError(errno.ENOSPC, "No space left on device")
    return real_fsync(fd)
os.fsync = full
from ckpttool.cli._root import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("command", ["backup", "restore"])
def test_simulated_enospc_in_a_child_process(tmp_path, command):
    """SIMULATED: os.fsync raises ENOSPC for temp files in a real `ckpttool backup|restore` process."""
    init = tmp_path / "init_model"
    init.mkdir()
    a = init / "a.safetensors"
    a.write_bytes(A.valid_safetensors_bytes(1))
    record = backup_file(a, reason="first")
    a.write_bytes(A.valid_safetensors_bytes(2))  # now differs from the backup: restore must back it up first
    state = snapshot(tmp_path)
    argv = ["backup", str(a)] if command == "backup" else ["restore", record.id, "--root", str(init)]
    r = subprocess.run([sys.executable, "-c", _ENOSPC_CHILD, *argv], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "COLUMNS": "200"}, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: cannot write ") and "No space left on device (ENOSPC)" in lines[0]
    assert snapshot(tmp_path) == state
    assert temps(tmp_path) == []
    assert json.loads((init / "backup_old" / "MANIFEST.json").read_text())["backups"][0]["id"] == record.id
