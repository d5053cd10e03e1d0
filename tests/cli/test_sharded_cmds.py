"""Sharded models through the CLI: `verify` (every format), `inspect` and `backup` / `restore` take the
folder or its index; each way an index and its shards can disagree is one `error:` line, exit 2."""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import _init_fixtures as fx
import pytest
from _run import run_cli
from _shards import SAFETENSORS_INDEX, load_tensors, save_file, save_shards, write_index

_no_network = fx._no_network
trained_weights = fx.trained_weights

SHARDS = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]


@pytest.fixture(scope="module")
def template(tmp_path_factory, trained_weights) -> Path:
    """The trained ViT in three shards (embeddings, body, head) and a stray full copy beside them."""
    folder = tmp_path_factory.mktemp("sharded") / "vit_pretrained"
    save_shards(folder, load_tensors(trained_weights),
                groups=[["patch_embed.", "cls_token", "pos_embed"], ["blocks.", "norm."], ["head."]])
    return folder


@pytest.fixture
def folder(tmp_path, template) -> Path:
    shutil.copytree(template, tmp_path / template.name)
    return tmp_path / template.name


def one_error(r) -> str:
    """The contract for a refused model: exit 2, exactly one `error:` line, no traceback, nothing judged."""
    assert r.code == 2, (r.out, r.err)
    lines = [ln for ln in r.err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and r.err.count("\n") == 1, r.err
    assert "PASS" not in r.out and "FAIL " not in r.out
    return lines[0]


def _edit_map(folder: Path, edit) -> None:
    index = folder / SAFETENSORS_INDEX
    weight_map = json.loads(index.read_text())["weight_map"]
    edit(weight_map)
    write_index(index, weight_map)


def _add_to_shard(folder: Path, shard: str, name: str, source: str, source_name: str) -> None:
    tensors = load_tensors(folder / shard)
    tensors[name] = load_tensors(folder / source)[source_name]
    save_file(tensors, folder / shard)


def _drop_from_shard(folder: Path, shard: str, name: str) -> None:
    tensors = load_tensors(folder / shard)
    del tensors[name]
    save_file(tensors, folder / shard)


BROKEN = {
    "missing shard": (
        lambda f: (f / SHARDS[1]).unlink(),
        "error: shard index {i} names 1 shard file(s) that are not in {f}: 'model-00002-of-00003.safetensors'; "
        "the model is incomplete; download or restore the missing shards"),
    "unlisted tensor in a shard": (
        lambda f: _add_to_shard(f, SHARDS[2], "extra.weight", SHARDS[2], "head.weight"),
        "error: shard 'model-00003-of-00003.safetensors' holds 1 tensor(s) that {i} does not list: "
        "'extra.weight'; the index and the shards are from different saves"),
    "tensor in two shards": (
        lambda f: _add_to_shard(f, SHARDS[2], "cls_token", SHARDS[0], "cls_token"),
        "error: tensor 'cls_token' is in two shards of {i}: 'model-00001-of-00003.safetensors' and "
        "'model-00003-of-00003.safetensors'; which one is the model's is not defined; re-save the model"),
    "listed tensor not in its shard": (
        lambda f: _drop_from_shard(f, SHARDS[2], "head.bias"),
        "error: {i} lists 1 tensor(s) in shard 'model-00003-of-00003.safetensors' that it does not hold: "
        "'head.bias'; the shard is incomplete or from another save"),
    "tensor in another shard than listed": (
        lambda f: _edit_map(f, lambda m: m.update({"head.bias": SHARDS[0]})),
        "error: {i} maps tensor 'head.bias' to shard 'model-00001-of-00003.safetensors', but it is in "
        "'model-00003-of-00003.safetensors'; the index and the shards are from different saves"),
    "index not JSON": (
        lambda f: (f / SAFETENSORS_INDEX).write_text('{"weight_map": {'),
        "error: shard index {i} is not valid JSON (JSONDecodeError); re-download it or restore it"),
    "no weight_map": (
        lambda f: (f / SAFETENSORS_INDEX).write_text('{"metadata": {}}'),
        "error: shard index {i} has no 'weight_map' object of tensor names to shard files; it is not a "
        "sharded checkpoint's index"),
    "non-string shard": (
        lambda f: _edit_map(f, lambda m: m.update({"head.bias": 3})),
        "error: shard index {i} maps tensor 'head.bias' to a int, not a shard file name"),
    "absolute shard path": (
        lambda f: _edit_map(f, lambda m: m.update({"head.bias": "/etc/passwd"})),
        "error: shard index {i} names shard file '/etc/passwd', which is not a relative path inside its folder "
        "(absolute paths, '..' and '\\' are refused); nothing was read"),
    "shard path with ..": (
        lambda f: _edit_map(f, lambda m: m.update({"head.bias": "../x/model.safetensors"})),
        "error: shard index {i} names shard file '../x/model.safetensors', which is not a relative path inside "
        "its folder (absolute paths, '..' and '\\' are refused); nothing was read"),
    "index as its own shard": (
        lambda f: _edit_map(f, lambda m: m.update({"head.bias": SAFETENSORS_INDEX})),
        "error: shard index {i} names 'model.safetensors.index.json', a shard index, as a shard file; "
        "nothing was read"),
    "hostile name": (
        lambda f: _edit_map(f, lambda m: m.update({"x\x1b[2K\n::error::forged": SHARDS[0]})),
        "error: {i} lists 1 tensor(s) in shard 'model-00001-of-00003.safetensors' that it does not hold: "
        "'x\\x1b[2K\\n::error::forged'; the shard is incomplete or from another save"),
}


@pytest.mark.parametrize("case", list(BROKEN))
@pytest.mark.parametrize("given", ["folder", "index"])
def test_an_index_that_disagrees_with_its_shards_is_one_error_line(capsys, folder, case, given):
    breaks, message = BROKEN[case]
    breaks(folder)
    index = folder / SAFETENSORS_INDEX
    r = run_cli(capsys, "verify", str(folder if given == "folder" else index))
    assert one_error(r) == message.format(i=index, f=folder)


def test_mixed_shard_formats_are_refused(capsys, folder):
    import torch

    shard = folder / SHARDS[2]
    torch.save(dict(load_tensors(shard)), shard)
    line = one_error(run_cli(capsys, "verify", str(folder / SAFETENSORS_INDEX)))
    assert line == (f"error: the shards of {folder / SAFETENSORS_INDEX} are in different formats (safetensors, "
                    "torch-zip); a model's shards are saved one way")


def test_verify_folder_text_reports_the_model_once_and_the_stray_file(capsys, folder, trained_weights):
    shutil.copy(trained_weights, folder / "stray.safetensors")
    r = run_cli(capsys, "verify", str(folder), "--expect", "pretrained")
    assert r.code == 0, r.err
    assert r.out.count("PASS") == 2 and "2/2 passed" in r.out
    assert f"sharded model: 3 shards ({', '.join(SHARDS)}); the sha256 is the index file's" in r.out
    assert "not part of the indexed model (model.safetensors.index.json): judged on its own" in r.out


@pytest.mark.parametrize("fmt", ["json", "junit", "github", "sarif"])
def test_every_format_names_the_shards(capsys, folder, fmt):
    from ckpttool.hashing import file_sha256

    shutil.copy(folder / SHARDS[2], folder / "stray.safetensors")  # the head alone: inconclusive
    r = run_cli(capsys, "verify", str(folder), "--format", fmt, "--expect", "pretrained")
    index = folder / SAFETENSORS_INDEX
    if fmt == "json":
        doc = json.loads(r.out)
        model = next(f for f in doc["files"] if f["path"] == str(index))
        assert model["sha256"] == file_sha256(index) and model["passed"]
        assert model["shards"] == [{"path": str(folder / s), "sha256": file_sha256(folder / s),
                                    "size": (folder / s).stat().st_size} for s in SHARDS]
        stray = next(f for f in doc["files"] if f["path"].endswith("stray.safetensors"))
        assert stray["not_in_index"] == [str(index)] and stray["shards"] == []
    elif fmt == "junit":
        outs = [c.find("system-out").text for c in ET.fromstring(r.out).iter("testcase")]
        assert any("sharded model: 3 shards" in o for o in outs)
        assert any("not part of the indexed model" in o for o in outs)
    elif fmt == "github":
        (stray,) = [ln for ln in r.out.splitlines() if "stray.safetensors" in ln]
        assert "not part of the indexed model (model.safetensors.index.json)" in stray
        assert any("sharded model: 3 shards" in ln for ln in r.out.splitlines())
    else:
        doc = json.loads(r.out)
        (result,) = doc["runs"][0]["results"]  # only the stray file fails
        assert result["properties"]["notInIndex"] == [str(index)]


def test_sarif_lists_the_shards_of_a_failing_model(capsys, folder):
    r = run_cli(capsys, "verify", str(folder), "--format", "sarif", "--expect", "random")
    (result,) = json.loads(r.out)["runs"][0]["results"]
    assert [Path(s["path"]).name for s in result["properties"]["shards"]] == SHARDS


def test_verify_manifest_of_a_sharded_folder(capsys, folder):
    from ckpttool.hashing import file_sha256

    entries = {p.name: {"sha256": file_sha256(p), "size": p.stat().st_size, "expected_verdict": "pretrained"}
               for p in folder.iterdir()}
    del entries[SHARDS[2]]
    (folder / "MANIFEST.json").write_text(json.dumps({"format": "ckpttool-init-manifest", "version": 1,
                                                      "files": entries}))
    r = run_cli(capsys, "verify", "--manifest", str(folder / "MANIFEST.json"))
    assert r.code == 1, r.err
    assert f"  shard not pinned   {SHARDS[2]}: its model's index is listed, this shard is not" in r.out


def test_inspect_takes_the_folder_or_the_index(capsys, folder):
    r = run_cli(capsys, "inspect", str(folder), "--format", "json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["path"] == str(folder / SAFETENSORS_INDEX)
    assert [Path(s["path"]).name for s in doc["shards"]] == SHARDS
    assert {t["name"] for t in doc["tensors"]} >= {"cls_token", "blocks.1.mlp.fc2.weight", "head.weight"}
    r = run_cli(capsys, "inspect", str(folder / SAFETENSORS_INDEX), "--top", "1")
    assert r.code == 0 and "sharded model, sha256 of the index; 3 shards: model-00001-of-00003.safetensors" in r.out
    shutil.copy(folder / SHARDS[0], folder / "stray.safetensors")
    line = one_error(run_cli(capsys, "inspect", str(folder)))
    assert line == (f"error: inspect reads one model, and {folder} holds 2 (model.safetensors.index.json, "
                    "stray.safetensors); pass one of them")


def test_backup_the_folder_then_restore_by_id(capsys, folder):
    r = run_cli(capsys, "backup", str(folder), "--format", "json")
    assert r.code == 0, r.err
    (rec,) = json.loads(r.out)["backups"]
    assert rec["verdict"] == "pretrained" and [p["name"] for p in rec["parts"]] == SHARDS
    for s in SHARDS:
        os.remove(folder / s)
    r = run_cli(capsys, "restore", rec["id"], "--root", str(folder))
    assert r.code == 0, r.err
    assert f"with its 3 shards beside it: {', '.join(SHARDS)}" in r.out
    r = run_cli(capsys, "verify", str(folder), "--expect", "pretrained")
    assert r.code == 0 and "1/1 passed" in r.out


def test_shards_given_alone_stand_for_their_model(capsys, folder):
    """As the pre-commit hook passes them: the changed shard files, perhaps several of one model."""
    r = run_cli(capsys, "verify", str(folder / SHARDS[2]), str(folder / SHARDS[0]), "--format", "json",
                "--expect", "pretrained")
    assert r.code == 0, r.err
    (model,) = json.loads(r.out)["files"]  # once, as its index; the head's shard alone is inconclusive
    assert model["path"] == str(folder / SAFETENSORS_INDEX) and len(model["shards"]) == 3
    r = run_cli(capsys, "inspect", str(folder / SHARDS[1]), "--format", "json")
    assert json.loads(r.out)["path"] == str(folder / SAFETENSORS_INDEX)
