"""Git LFS pointers at the command line: one line and exit 2 wherever a checkpoint is read, and checked
by oid against a manifest when asked (`verify --manifest --lfs-oids`)."""

from __future__ import annotations

import hashlib
import json

import pytest
from _run import run_cli

OID = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393"
POINTER = f"version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize 12345\n".encode()


def _pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_cli_one_line_exit_2(capsys, tmp_path, command):
    path = tmp_path / "init_pretrained.pth"
    path.write_bytes(POINTER)
    r = run_cli(capsys, command, str(path))
    assert r.code == 2
    lines = r.err.strip().splitlines()
    assert lines == [f"error: {path} is a Git LFS pointer (oid sha256:{OID}, size 12345 bytes), not the "
                     "checkpoint: its content was never fetched; run `git lfs pull` in the repository (in "
                     "GitHub Actions: actions/checkout with `lfs: true`)"]


@pytest.fixture
def pinned(tmp_path, tiny_state_dict):
    """A folder with one real checkpoint pinned in its manifest; returns (folder, file, its bytes)."""
    from ckpttool.manifest import ManifestEntry, update_manifest
    from ckpttool.saving import save_checkpoint
    from ckpttool.verify import judge_file

    folder = tmp_path / "init_model"
    folder.mkdir()
    f = folder / "tiny_init.safetensors"
    save_checkpoint(f, tiny_state_dict)
    data = f.read_bytes()
    update_manifest(folder / "MANIFEST.json", ManifestEntry(
        f.name, hashlib.sha256(data).hexdigest(), len(data), judge_file(f).verdict))
    return folder, f, data


def test_manifest_checks_a_pointer_by_oid_only_when_asked(capsys, pinned):
    folder, f, data = pinned
    manifest = str(folder / "MANIFEST.json")
    assert run_cli(capsys, "verify", "--manifest", manifest).code == 0  # the content itself
    f.write_bytes(_pointer(hashlib.sha256(data).hexdigest(), len(data)))  # a checkout without `lfs: true`

    r = run_cli(capsys, "verify", "--manifest", manifest)
    assert r.code == 1 and "is a Git LFS pointer" in r.out and "manifest FAILED" in r.out
    assert r.err == ("hint: 1 listed file(s) are Git LFS pointers without their content; fetch it, or add "
                     "--lfs-oids to check each pointer's oid against the manifest without the content\n")

    r = run_cli(capsys, "verify", "--manifest", manifest, "--lfs-oids")
    assert r.code == 0, r.out
    assert f"lfs pointer        {f.name}: checked by its oid (content not fetched, verdict not checked)" in r.out
    assert r.out.rstrip().endswith("manifest OK") and r.err == ""

    f.write_bytes(_pointer("0" * 64, len(data)))  # a pointer to other content
    r = run_cli(capsys, "verify", "--manifest", manifest, "--lfs-oids", "--format", "json")
    assert r.code == 1
    doc = json.loads(r.out)
    assert doc["sha256_mismatches"] == [{"path": f.name, "expected": hashlib.sha256(data).hexdigest(),
                                         "actual": "0" * 64}]
    assert doc["lfs_pointers"] == [f.name] and doc["lfs_oids_checked"] is True
    f.write_bytes(_pointer(hashlib.sha256(data).hexdigest(), len(data) + 1))  # same oid, other size
    r = run_cli(capsys, "verify", "--manifest", manifest, "--lfs-oids")
    assert r.code == 1 and f"(size {len(data) + 1}, expected {len(data)})" in r.out


def test_lfs_oids_needs_a_manifest(capsys, tmp_path):
    r = run_cli(capsys, "verify", str(tmp_path), "--lfs-oids")
    assert r.code == 2 and r.err == "error: --lfs-oids checks pointers against a manifest; add --manifest FILE\n"
