"""ckpttool.manifest: the init folder's MANIFEST.json and check_manifest (what `verify --manifest` runs)."""

from __future__ import annotations

import json
from pathlib import Path

import _init_fixtures as fx
import pytest

from ckpttool.errors import ManifestError
from ckpttool.hashing import file_sha256
from ckpttool.manifest import (
    ManifestEntry,
    check_manifest,
    read_manifest,
    update_manifest,
)

# shared fixtures (pytest finds them as module attributes)
_no_network = fx._no_network
random_weights = fx.random_weights
trained_weights = fx.trained_weights


def _pin(folder: Path, name: str, source: Path, expected: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(source.read_bytes())
    update_manifest(folder / "MANIFEST.json", ManifestEntry(
        path=Path(name).as_posix(), sha256=file_sha256(path), size=path.stat().st_size,
        expected_verdict=expected, provenance={"note": "test"}))
    return path


@pytest.fixture
def pinned(tmp_path, random_weights) -> Path:
    folder = tmp_path / "init_model"
    folder.mkdir()
    _pin(folder, "b_random_init.safetensors", random_weights, "random")
    _pin(folder, "sub/a_random_init.safetensors", random_weights, "random")
    return folder


def test_check_passes_on_untouched_files(pinned):
    check = check_manifest(pinned / "MANIFEST.json")
    assert check.passed
    assert check.checked == ("b_random_init.safetensors", "sub/a_random_init.safetensors")
    assert check.missing == () and check.unlisted == ()
    assert check_manifest(pinned).passed  # a folder works too


def test_manifest_file_is_sorted_stable_json(pinned):
    text = (pinned / "MANIFEST.json").read_text()
    doc = json.loads(text)
    assert doc["format"] == "ckpttool-init-manifest" and doc["version"] == 1
    assert list(doc["files"]) == sorted(doc["files"])
    assert text.endswith("}\n")
    assert text == json.dumps(doc, indent=2, sort_keys=True) + "\n"


def test_missing_sha_mismatch_and_verdict_mismatch_fail_sorted(pinned, trained_weights, random_weights):
    (pinned / "sub" / "a_random_init.safetensors").unlink()
    # same tensors, other bytes: a sha256 mismatch whose verdict still matches
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(random_weights)), str(pinned / "b_random_init.safetensors"), metadata={"x": "1"})
    # recorded as random, is trained: a verdict mismatch (and a sha256 mismatch)
    _pin(pinned, "c.safetensors", random_weights, "random")
    (pinned / "c.safetensors").write_bytes(trained_weights.read_bytes())
    check = check_manifest(pinned / "MANIFEST.json")
    assert not check.passed
    assert check.missing == ("sub/a_random_init.safetensors",)
    assert [m.path for m in check.sha256_mismatches] == ["b_random_init.safetensors", "c.safetensors"]
    assert check.sha256_mismatches[0].actual == file_sha256(pinned / "b_random_init.safetensors")
    assert [(m.path, m.expected) for m in check.verdict_mismatches] == [("c.safetensors", "random")]
    assert check.verdict_mismatches[0].actual != "random"
    d = check.to_dict()
    assert d["passed"] is False and d["missing"] == ["sub/a_random_init.safetensors"]
    assert d["verdict_mismatches"][0]["reason"]


def test_unreadable_file_is_a_verdict_mismatch(pinned):
    (pinned / "b_random_init.safetensors").write_bytes(b"not a checkpoint")
    check = check_manifest(pinned / "MANIFEST.json")
    assert [(m.path, m.actual) for m in check.verdict_mismatches] == [("b_random_init.safetensors", "unreadable")]


def test_unlisted_files_are_listed_but_do_not_fail(pinned, random_weights):
    (pinned / "zz_extra.pth").write_bytes(b"x")
    (pinned / "aa_extra.safetensors").write_bytes(random_weights.read_bytes())
    (pinned / ".x.pth.tar.abc.tmp").write_bytes(b"temp")  # an interrupted write's temp: ignored
    (pinned / "notes.txt").write_text("not a checkpoint name")
    (pinned / "backup_old").mkdir()
    (pinned / "backup_old" / "old.pth.tar").write_bytes(b"x")
    check = check_manifest(pinned / "MANIFEST.json")
    assert check.passed
    assert check.unlisted == ("aa_extra.safetensors", "zz_extra.pth")


@pytest.mark.parametrize(("content", "pattern"), [
    (b"{not json", "not valid JSON"),
    (b'{"format": "other", "version": 1, "files": {}}', "not a ckpttool-init-manifest document"),
    (b'{"format": "ckpttool-init-manifest", "version": 9, "files": {}}', "unsupported version 9"),
    (b'{"format": "ckpttool-init-manifest", "version": 1, "files": []}', "'files' is not an object"),
    (b'{"format": "ckpttool-init-manifest", "version": 1, "files": {"a": {"size": 1}}}', "entry 'a' is malformed"),
])
def test_corrupted_manifest_is_manifest_error_and_never_rewritten(tmp_path, content, pattern):
    path = tmp_path / "MANIFEST.json"
    path.write_bytes(content)
    with pytest.raises(ManifestError, match=pattern) as info:
        read_manifest(path)
    assert info.value.exit_code == 2 and "left unchanged" in str(info.value)
    with pytest.raises(ManifestError):
        update_manifest(path, ManifestEntry("x", "0" * 64, 1, "random"))
    with pytest.raises(ManifestError):
        check_manifest(path)
    assert path.read_bytes() == content


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        check_manifest(tmp_path / "MANIFEST.json")
    assert read_manifest(tmp_path / "MANIFEST.json", missing_ok=True).entries == ()


def test_update_replaces_the_entry_for_the_same_path(tmp_path):
    m = tmp_path / "MANIFEST.json"
    update_manifest(m, ManifestEntry("a.pth.tar", "1" * 64, 1, "random"))
    update_manifest(m, ManifestEntry("b.pth.tar", "2" * 64, 2, "pretrained"))
    update_manifest(m, ManifestEntry("a.pth.tar", "3" * 64, 3, "pretrained"))
    entries = read_manifest(m).entries
    assert [(e.path, e.sha256[0], e.size) for e in entries] == [("a.pth.tar", "3", 3), ("b.pth.tar", "2", 2)]
