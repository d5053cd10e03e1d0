import json
import os
import pickle
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from _run import run_cli

from ckpttool.saving import save_checkpoint


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A random ViT under a 'random' name and under a misleading 'pretrained' name, and a trained ResNet."""
    import timm
    import torch
    from _trained import trained_resnet

    d = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, depth=2, num_classes=10)
    save_checkpoint(d / "vit_tiny_cifar10_random_init.pth.tar", vit.state_dict())
    save_checkpoint(d / "vit_tiny_cifar10_pretrained_init.safetensors", vit.state_dict())
    model, _ = trained_resnet()
    save_checkpoint(d / "resnet_digits_pretrained.safetensors", model.state_dict())
    return d


def test_random_named_random_passes(capsys, files):
    r = run_cli(capsys, "verify", str(files / "vit_tiny_cifar10_random_init.pth.tar"))
    assert r.code == 0, r.err
    assert "PASS" in r.out and "random (expected random)" in r.out
    assert "1/1 passed" in r.out and r.err == ""


def test_the_incident_is_caught_exit_1(capsys, files):
    r = run_cli(capsys, "verify", str(files / "vit_tiny_cifar10_pretrained_init.safetensors"))
    assert r.code == 1
    assert "FAIL" in r.out and "random (expected pretrained)" in r.out


def test_json_shape(capsys, files):
    r = run_cli(capsys, "verify", str(files), "--format", "json")
    assert r.code == 1
    doc = json.loads(r.out)
    assert doc["passed"] is False and doc["errors"] == []
    by_name = {os.path.basename(f["path"]): f for f in doc["files"]}
    assert set(by_name) == {
        "resnet_digits_pretrained.safetensors",
        "vit_tiny_cifar10_pretrained_init.safetensors",
        "vit_tiny_cifar10_random_init.pth.tar",
    }
    res = by_name["resnet_digits_pretrained.safetensors"]
    assert res["verdict"] == "pretrained" and res["passed"] and res["expected"] == "pretrained"
    assert res["head"] == ["fc.bias", "fc.weight"] or sorted(res["head"]) == ["fc.bias", "fc.weight"]
    for key in ("path", "verdict", "expected", "passed", "sha256", "tensors_total", "tensors_trained",
                "tensors_init_like", "untouched_groups", "head", "rules"):
        assert key in res
    assert by_name["vit_tiny_cifar10_pretrained_init.safetensors"]["passed"] is False


def test_expect_any_and_rule(capsys, files):
    f = str(files / "vit_tiny_cifar10_pretrained_init.safetensors")
    assert run_cli(capsys, "verify", f, "--expect", "any").code == 0
    r = run_cli(capsys, "verify", f, "--expect", "any", "--rule", "blocks.0.attn.qkv.weight:std>0.05")
    assert r.code == 1 and "rule FAILED" in r.out and "blocks.0.attn.qkv.weight=" in r.out


def test_include_head_changes_counts(capsys, files):
    f = str(files / "resnet_digits_pretrained.safetensors")
    a = json.loads(run_cli(capsys, "verify", f, "--format", "json").out)["files"][0]
    b = json.loads(run_cli(capsys, "verify", f, "--format", "json", "--include-head").out)["files"][0]
    assert b["head_included"] and not a["head_included"]
    assert b["tensors_total"] == a["tensors_total"] + 2


def test_a_reinitialised_stem_is_partial_and_the_tensors_that_show_it_are_named(capsys, tmp_path):
    """The stem is an input layer, counted only on evidence of its own: here its BatchNorms never ran
    while every other one did. Text, JSON and GitHub all name it."""
    from _trained import trained_resnet

    from ckpttool.verdict import _calibration as cal

    model, _ = trained_resnet()
    f = tmp_path / "resnet_stem_reset_pretrained.safetensors"
    save_checkpoint(f, cal.reinit_modules(model, ["conv1", "bn1"]).state_dict())
    r = run_cli(capsys, "verify", str(f))
    assert r.code == 1 and "partial (expected pretrained)" in r.out
    assert "untouched: stem" in r.out and "at init: bn1.running_mean (BatchNorm never ran)" in r.out
    doc = json.loads(run_cli(capsys, "verify", str(f), "--format", "json").out)["files"][0]
    assert doc["verdict"] == "partial" and doc["untouched_groups"] == ["stem"] and doc["uncounted_groups"] == []
    assert {"name": "bn1.running_mean", "why": "BatchNorm never ran"} in doc["untouched_tensors"]
    gh = run_cli(capsys, "verify", str(f), "--format", "github")
    assert gh.code == 1 and gh.out.startswith("::error file=") and "stem" in gh.out


def test_junit_and_github(capsys, files):
    r = run_cli(capsys, "verify", str(files), "--format", "junit")
    suite = ET.fromstring(r.out.split("\n", 1)[1])
    assert suite.get("tests") == "3" and suite.get("failures") == "1"
    r = run_cli(capsys, "verify", str(files), "--format", "github")
    lines = r.out.splitlines()
    assert len(lines) == 3
    assert sum(line.startswith("::error file=") for line in lines) == 1
    assert sum(line.startswith("::notice file=") for line in lines) == 2


def test_corrupt_is_exit_1(capsys, tmp_path):
    import torch

    save_checkpoint(tmp_path / "nan.safetensors", {"w": torch.full((16, 16), float("nan"))})
    r = run_cli(capsys, "verify", str(tmp_path / "nan.safetensors"))
    assert r.code == 1 and "corrupt" in r.out


def _assert_one_line(r, code=2):
    assert r.code == code, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert "Traceback" not in r.err


def test_bad_inputs_exit_2_one_line(capsys, tmp_path, files):
    import torch

    cases = {}
    cases["missing"] = tmp_path / "missing.pth"
    (tmp_path / "empty.pth").write_bytes(b"")
    cases["empty"] = tmp_path / "empty.pth"
    good_st = (files / "vit_tiny_cifar10_random_init.pth.tar").read_bytes()
    (tmp_path / "trunc.pth.tar").write_bytes(good_st[: len(good_st) // 2])
    cases["truncated zip"] = tmp_path / "trunc.pth.tar"
    st = (files / "resnet_digits_pretrained.safetensors").read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(st[: len(st) // 2])
    cases["truncated safetensors"] = tmp_path / "trunc.safetensors"
    (tmp_path / "noise.bin").write_bytes(os.urandom(4096))
    cases["random bytes"] = tmp_path / "noise.bin"
    (tmp_path / "huge.safetensors").write_bytes(struct.pack("<Q", 1 << 60) + b"{}")
    cases["huge header"] = tmp_path / "huge.safetensors"
    hdr = json.dumps({"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}).encode()
    (tmp_path / "past_end.safetensors").write_bytes(struct.pack("<Q", len(hdr)) + hdr + b"\0" * 64)
    cases["offsets past the end"] = tmp_path / "past_end.safetensors"
    torch.save({"epoch": 3, "note": "no tensors"}, tmp_path / "notensors.pth")
    cases["pickle without tensors"] = tmp_path / "notensors.pth"
    hdr = json.dumps({"__metadata__": {"a": "b"}}).encode()
    (tmp_path / "empty_st.safetensors").write_bytes(struct.pack("<Q", len(hdr)) + hdr)
    cases["checkpoint without tensors"] = tmp_path / "empty_st.safetensors"
    empty_dir = tmp_path / "nothing_here"
    empty_dir.mkdir()
    cases["folder without checkpoints"] = empty_dir
    before = sorted(p.name for p in tmp_path.iterdir())
    for what, path in cases.items():
        r = run_cli(capsys, "verify", str(path))
        _assert_one_line(r)
        assert str(path.name) in r.err or str(path) in r.err, (what, r.err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written anywhere


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_os_system_pickle_refused_and_not_run(capsys, tmp_path):
    import torch

    marker = tmp_path / "PWNED"
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"w": torch.zeros(2), "x": _Evil(marker)}, f, protocol=2)
    r = run_cli(capsys, "verify", str(tmp_path / "evil.pth"))
    _assert_one_line(r)
    assert "system" in r.err and "unsafe" in r.err
    assert not marker.exists()


def test_usage_errors_exit_2(capsys, files):
    _assert_one_line(run_cli(capsys, "verify"))
    _assert_one_line(run_cli(capsys, "verify", str(files), "--rule", "nonsense"))
    _assert_one_line(run_cli(capsys, "verify", str(files), "--expect", "maybe"))


def test_real_process_exit_codes_and_no_traceback(files, tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    ok = subprocess.run([sys.executable, "-m", "ckpttool", "verify", str(files / "vit_tiny_cifar10_random_init.pth.tar")],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "ckpttool", "verify", str(tmp_path / "nope.pth")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_verify_safetensors_does_not_import_torch(files):
    code = (
        "import sys; from ckpttool.cli import main\n"
        "try:\n main(['verify', '--expect', 'any', sys.argv[1]])\n"
        "except SystemExit as e:\n assert e.code == 0, e.code\n"
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'heavy import on the verify path'\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(files / "resnet_digits_pretrained.safetensors")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_a_small_silent_layer_is_reported_as_too_small_to_tell(capsys, tmp_path):
    """PP-OCRv4's detector in miniature: trained layers and one 12 x 48 1x1 conv that shows no
    training at a scale of its own. The file passes as pretrained; text, JSON and GitHub say which
    layer could not be told."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)

    def trained(shape):
        return torch.from_numpy((rng.normal(0, 0.1, shape) + 0.1 * np.outer(rng.normal(size=shape[0]),
                                                                            rng.normal(size=shape[1]))).astype(np.float32))

    sd = {f"blocks.{i}.fc.weight": trained((64, 64)) for i in range(3)}
    sd["neck.conv.weight"] = torch.from_numpy(rng.normal(0, 0.34, (12, 48, 1, 1)).astype(np.float32))
    sd["blocks.3.fc.weight"] = trained((64, 64))
    sd["head.weight"] = trained((10, 64))
    f = tmp_path / "det_pretrained.pth"
    torch.save(sd, f)
    r = run_cli(capsys, "verify", str(f))
    assert r.code == 0 and "pretrained (expected pretrained)" in r.out
    assert "too small to tell (no sign of training, not counted): neck" in r.out
    doc = json.loads(run_cli(capsys, "verify", str(f), "--format", "json").out)["files"][0]
    assert doc["inconclusive_groups"] == ["neck"] and doc["untouched_groups"] == []
    gh = run_cli(capsys, "verify", str(f), "--format", "github")
    assert gh.code == 0 and gh.out.startswith("::warning file=") and "small group" in gh.out


def test_every_suggestion_names_an_option_of_verify(capsys, tmp_path, monkeypatch):
    """A hub path that cannot be fetched (offline, empty cache) must not suggest `generate`'s
    --weights-file: each --option an error names is one of verify's."""
    import re

    from ckpttool.cli.verify_cmd import command

    options = {opt for p in command.params for opt in p.opts if opt.startswith("--")} | {"--help"}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    r = run_cli(capsys, "verify", "hf://timm/vit_small_patch16_224.augreg_in21k_ft_in1k/model.safetensors")
    _assert_one_line(r)
    assert r.err == ("error: pretrained weights timm/vit_small_patch16_224.augreg_in21k_ft_in1k/model.safetensors "
                     f"unavailable: HF_HUB_OFFLINE is set and the file is not in {tmp_path / 'empty-cache'}; run "
                     "once with network access to fill the cache, or pass a local copy of the file instead of the "
                     "hf:// path\n")
    pointer = tmp_path / "x_pretrained.pth"  # the Git LFS pointer's advice, and the manifest's hint
    pointer.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64 + b"\nsize 9\n")
    (tmp_path / "MANIFEST.json").write_text(json.dumps({"format": "ckpttool-init-manifest", "version": 1, "files": {
        pointer.name: {"sha256": "a" * 64, "size": 9, "expected_verdict": "pretrained"}}}))
    errs = r.err + run_cli(capsys, "verify", str(pointer)).err
    errs += run_cli(capsys, "verify", "--manifest", str(tmp_path / "MANIFEST.json")).err
    errs += run_cli(capsys, "verify", str(pointer), "--plot", str(tmp_path)).err
    errs += run_cli(capsys, "verify", str(tmp_path), "--plot", "x.png").err
    errs += run_cli(capsys, "verify", "--lfs-oids", str(pointer)).err
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", errs))
    assert "--lfs-oids" in named and named <= options, named - options
