"""`ckpttool backup PATH...`, `ckpttool backup list`, `ckpttool restore` through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import _init_fixtures as fx
import pytest

# shared fixtures (pytest finds them as module attributes)
_no_network = fx._no_network
random_weights = fx.random_weights


def run(capsys, *args: str) -> tuple[int, str, str]:
    from ckpttool.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(args))
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


@pytest.fixture
def init_dir(tmp_path, random_weights) -> Path:
    folder = tmp_path / "init_model"
    folder.mkdir()
    (folder / "a_random_init.safetensors").write_bytes(random_weights.read_bytes())
    (folder / "b.bin").write_bytes(b"not a checkpoint")
    return folder


def test_backup_paths_then_list_then_restore(capsys, init_dir):
    a, b = init_dir / "a_random_init.safetensors", init_dir / "b.bin"
    code, stdout, err = run(capsys, "backup", str(a), str(b), "--reason", "before regenerating", "--format", "json")
    assert code == 0, err
    records = json.loads(stdout)["backups"]
    assert [r["verdict"] for r in records] == ["random", "unreadable"]
    assert all(r["reason"] == "before regenerating" for r in records)

    code, stdout, err = run(capsys, "backup", "list", "--root", str(init_dir), "--format", "json")
    assert code == 0, err
    listed = json.loads(stdout)
    assert [r["id"] for r in listed["backups"]] == [r["id"] for r in records]

    code, stdout, _ = run(capsys, "backup", "list", "--root", str(init_dir))
    assert code == 0 and records[0]["id"] in stdout and "before regenerating" in stdout

    original = a.read_bytes()
    a.write_bytes(b"overwritten by hand")
    code, stdout, err = run(capsys, "restore", records[0]["id"], "--root", str(init_dir))
    assert code == 0, err
    assert a.read_bytes() == original
    assert "backed up the replaced file as" in stdout and f"restored {records[0]['id']}" in stdout


def test_backup_text_output_and_move(capsys, init_dir):
    a = init_dir / "a_random_init.safetensors"
    code, stdout, err = run(capsys, "backup", str(a), "--move")
    assert code == 0, err
    assert stdout.startswith("moved ") and "verdict random" in stdout
    assert not a.exists()


def test_restore_to_another_path_json(capsys, init_dir, tmp_path):
    a = init_dir / "a_random_init.safetensors"
    code, stdout, _ = run(capsys, "backup", str(a), "--format", "json")
    rec = json.loads(stdout)["backups"][0]
    dest = tmp_path / "elsewhere" / "copy.safetensors"
    code, stdout, err = run(capsys, "restore", rec["id"], "--root", str(init_dir), "--to", str(dest), "--format", "json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["target"] == str(dest) and doc["replaced_backup"] is None and not doc["unchanged"]
    assert dest.read_bytes() == a.read_bytes()


def test_errors_are_one_line_exit_2(capsys, init_dir):
    code, _, err = run(capsys, "backup", str(init_dir / "nope.pth.tar"))
    assert code == 2 and err.startswith("error: cannot back up") and err.count("\n") == 1
    code, _, err = run(capsys, "restore", "nosuchid", "--root", str(init_dir))
    assert code == 2 and "no backup 'nosuchid'" in err
    code, _, err = run(capsys, "backup", "list", "--root", str(init_dir / "empty"))
    assert code == 2 and "no backup folder" in err
    code, _, err = run(capsys, "backup")
    assert code == 2


def test_corrupted_backup_manifest_exit_2_left_byte_identical(capsys, init_dir):
    a = init_dir / "a_random_init.safetensors"
    assert run(capsys, "backup", str(a))[0] == 0
    manifest = init_dir / "backup_old" / "MANIFEST.json"
    manifest.write_text('{"format": "ckpttool-backup-manifest", "version": 1, "backups": [{"id": 1}]}')
    before = manifest.read_bytes()
    for args in (["backup", str(a)], ["backup", "list", "--root", str(init_dir)]):
        code, _, err = run(capsys, *args)
        assert code == 2
        assert err.startswith(f"error: backup manifest {manifest} is corrupted") and err.count("\n") == 1
    assert manifest.read_bytes() == before
