"""`verify --manifest` reads only regular files inside the manifest's folder, and finds the same
files as folder mode (finding 10 of the hardening round 2, the parts outside the runner).

A manifest that came with a repository used to make `verify --manifest` hash (and report the sha256
of) any file on the machine: ``/home/u/.ssh/id_rsa``, ``../../secret``, or a symlink in the folder.
Lexically hostile keys now make the manifest corrupted (one ``error:`` line, exit 2); a listed path
that resolves outside the folder, or is a FIFO, is counted unreadable without being read or hashed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import _attacks as A
import pytest
from _cli import cli

from ckpttool.errors import ManifestError
from ckpttool.manifest import ManifestEntry, check_manifest, update_manifest

SECRET = b"-----BEGIN PRIVATE KEY----- not for the report"
SECRET_SHA = hashlib.sha256(SECRET).hexdigest()


@pytest.fixture
def setup(tmp_path) -> tuple[Path, Path]:
    """(the manifest's folder, a secret file outside it)."""
    folder = tmp_path / "repo" / "init_model"
    folder.mkdir(parents=True)
    secret = tmp_path / "id_rsa"
    secret.write_bytes(SECRET)
    return folder, secret


def _manifest(folder: Path, files: dict[str, str]) -> Path:
    doc = {"format": "ckpttool-init-manifest", "version": 1,
           "files": {k: {"sha256": "0" * 64, "size": 1, "expected_verdict": v} for k, v in files.items()}}
    path = folder / "MANIFEST.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("key", ["ABSOLUTE", "../../id_rsa", "sub/../../../id_rsa", ""])
def test_keys_outside_the_folder_make_a_corrupted_manifest(capsys, setup, key):
    folder, secret = setup
    key = str(secret) if key == "ABSOLUTE" else key
    manifest = _manifest(folder, {key: "pretrained"})
    with pytest.raises(ManifestError, match="is not a relative path inside the manifest's folder"):
        check_manifest(manifest)
    code, out, err = cli(capsys, "verify", "--manifest", str(manifest), "--format", "json")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: manifest {manifest} is corrupted: entry")
    assert SECRET_SHA not in err


def test_a_symlink_leading_out_is_unreadable_and_never_hashed(capsys, setup):
    folder, secret = setup
    (folder / "leak.pth").symlink_to(secret)
    manifest = _manifest(folder, {"leak.pth": "pretrained"})
    check = check_manifest(manifest)
    assert not check.passed and check.checked == () and check.sha256_mismatches == ()
    (mismatch,) = check.verdict_mismatches
    assert mismatch.actual == "unreadable" and "outside the manifest's folder" in mismatch.reason
    code, out, _ = cli(capsys, "verify", "--manifest", str(manifest), "--format", "json")
    assert code == 1 and SECRET_SHA not in out


def test_a_symlink_that_stays_inside_is_followed(setup, tmp_path):
    folder, _ = setup
    (folder / "real.bin").write_bytes(b"x")
    (folder / "alias.pth").symlink_to("real.bin")
    update_manifest(folder / "MANIFEST.json", ManifestEntry(
        "alias.pth", hashlib.sha256(b"x").hexdigest(), 1, "unreadable"))
    check = check_manifest(folder / "MANIFEST.json")
    assert check.checked == ("alias.pth",) and check.sha256_mismatches == ()


def test_a_listed_fifo_does_not_hang(setup):
    folder, _ = setup
    os.mkfifo(folder / "pipe.pth")
    manifest = _manifest(folder, {"pipe.pth": "random"})
    with A.time_bound(20):
        check = check_manifest(manifest)
    (mismatch,) = check.verdict_mismatches
    assert mismatch.actual == "unreadable" and "it is a FIFO" in mismatch.reason


def test_a_fifo_as_the_manifest_itself_does_not_hang(capsys, setup):
    folder, _ = setup
    os.mkfifo(folder / "MANIFEST.json")
    with A.time_bound(20):
        code, _, err = cli(capsys, "verify", "--manifest", str(folder / "MANIFEST.json"))
    assert code == 2 and err.count("\n") == 1 and "it is a FIFO" in err


def test_sha256_that_is_not_hex_is_a_corrupted_manifest(setup):
    folder, _ = setup
    path = folder / "MANIFEST.json"
    path.write_text(json.dumps({"format": "ckpttool-init-manifest", "version": 1, "files": {
        "a.pth": {"sha256": "\x1b[2J" * 16, "size": 1, "expected_verdict": "random"}}}))
    with pytest.raises(ManifestError, match="is not 64 lowercase hex digits"):
        check_manifest(path)


def test_unlisted_files_are_found_with_folder_mode_suffixes(setup):
    """Folder mode matches suffixes case-insensitively; the manifest's unlisted check did not."""
    from ckpttool.loading import find_checkpoints

    folder, _ = setup
    for name in ("B.PTH", "c.Safetensors", "d.PTH.TAR", "e.txt"):
        (folder / name).write_bytes(b"x")
    manifest = _manifest(folder, {})
    found = sorted(p.name for p in find_checkpoints(folder))
    assert found == ["B.PTH", "c.Safetensors", "d.PTH.TAR"]
    assert check_manifest(manifest).unlisted == tuple(found)
