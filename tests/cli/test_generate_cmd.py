"""`ckpttool generate` through the real entry point (ckpttool.cli.main), plus a few subprocesses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import _init_fixtures as fx
import pytest
from _init_fixtures import ARCH, REPO_ID, TAG, TINY_KWARGS_JSON

REPO = Path(__file__).resolve().parents[2]
TINY = ["--arch", f"{ARCH}.{TAG}", "--img-size", "32", "--patch-size", "4", "--model-kwargs", TINY_KWARGS_JSON]

# shared fixtures (pytest finds them as module attributes)
_no_network = fx._no_network
offline_hub = fx.offline_hub
random_weights = fx.random_weights
trained_weights = fx.trained_weights


def run(capsys, *args: str) -> tuple[int, str, str]:
    from ckpttool.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(args))
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_generate_pretrained_from_offline_cache_reports_origins(capsys, offline_hub, tmp_path):
    out = tmp_path / "init" / "x.pth.tar"
    code, stdout, err = run(capsys, "generate", *TINY, "--dataset", "cifar100", "--init", "pretrained",
                            "--out", str(out))
    assert code == 0, err
    assert "resampled" in stdout and "fresh" in stdout
    assert "patch_embed.proj.weight" in stdout and "pos_embed" in stdout and "head.weight (head)" in stdout
    assert "verdict: pretrained" in stdout
    assert f"wrote {out}" in stdout
    from ckpttool.hashing import file_sha256

    assert f"sha256 {file_sha256(out)}" in stdout
    assert f"hub {REPO_ID}/model.safetensors" in stdout


def test_generate_json(capsys, tmp_path):
    out = tmp_path / "r.pth.tar"
    code, stdout, err = run(capsys, "generate", *TINY, "--dataset", "cifar10", "--init", "random", "--seed", "3",
                            "--weight-init", "jax", "--out", str(out), "--format", "json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["path"] == str(out) and doc["verdict"]["verdict"] == "random"
    assert doc["origins"] == {"pretrained": 0, "resampled": 0, "fresh": 32}
    assert doc["source"] == {"kind": "random", "seed": 3, "weight_init": "jax"}
    assert doc["manifest"] == str(tmp_path / "MANIFEST.json")


def test_random_weights_for_pretrained_exit_1_with_evidence(capsys, random_weights, tmp_path):
    out = tmp_path / "x.pth.tar"
    code, stdout, err = run(capsys, "generate", *TINY, "--dataset", "cifar100", "--init", "pretrained",
                            "--weights-file", str(random_weights), "--out", str(out))
    assert code == 1
    line = _one_error_line(err)
    assert re.match(r"error: --init pretrained built weights whose verdict is (random|partial) ", line)
    assert re.search(r"^verdict: (random|partial) - ", err, re.M) and "what was built (not written)" in err
    assert not out.exists() and stdout == ""


@pytest.mark.parametrize(("args", "message"), [
    (["--arch", "vit_smal", "--dataset", "cifar10", "--init", "random"],
     "error: unknown architecture 'vit_smal'; did you mean vit_small"),
    (["--arch", "vit_small_patch16_224.nope", "--dataset", "cifar10", "--init", "pretrained"],
     "error: unknown pretrained tag 'nope' for vit_small_patch16_224"),
    ([*TINY, "--dataset", "cifar1000", "--init", "random"], "error: unknown dataset 'cifar1000'"),
    ([*TINY, "--num-classes", "0", "--init", "random"], "error: --num-classes must be >= 1, got 0"),
    ([*TINY, "--dataset", "cifar10"], "error: pass --init pretrained or --init random"),
    (["--dataset", "cifar10", "--init", "random"], "error: pass --arch (e.g. vit_small), or --all"),
    (["--all", "--arch", "vit_small"], "error: --all generates every arch x dataset"),
    ([*TINY[:2], "--dataset", "cifar10", "--init", "random", "--model-kwargs", "[1]"],
     "error: --model-kwargs must be a JSON object"),
])
def test_bad_input_exit_2_one_line(capsys, tmp_path, args, message):
    code, stdout, err = run(capsys, "generate", *args, "--out-dir", str(tmp_path))
    assert code == 2
    assert _one_error_line(err).startswith(message)
    assert list(tmp_path.iterdir()) == []


def test_missing_cache_exit_2_nothing_written(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    code, _, err = run(capsys, "generate", *TINY, "--dataset", "cifar10", "--init", "pretrained",
                       "--out-dir", str(tmp_path / "init"))
    assert code == 2
    line = _one_error_line(err)
    assert REPO_ID in line and "run once with network access" in line and "--weights-file" in line
    assert not (tmp_path / "init").exists()


def test_existing_file_needs_force(capsys, tmp_path):
    out = tmp_path / "r.pth.tar"
    args = ["generate", *TINY, "--dataset", "cifar10", "--init", "random", "--out", str(out)]
    assert run(capsys, *args)[0] == 0
    code, _, err = run(capsys, *args)
    assert code == 2
    assert _one_error_line(err) == f"error: {out} exists; pass --force to replace it (the old file is backed up first)"
    code, stdout, err = run(capsys, *args, "--force")
    assert code == 0, err
    assert "replaced file backed up as" in stdout


def test_unwritable_destination_exit_2(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(capsys, "generate", *TINY, "--dataset", "cifar10", "--init", "random",
                       "--out", str(blocker / "x.pth.tar"))
    assert code == 2
    assert "a path component is a file" in _one_error_line(err)


def test_subprocess_end_to_end_errors_are_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "ckpttool", "generate", *TINY, "--dataset", "cifar10", "--init", "pretrained",
         "--out-dir", str(tmp_path / "init")],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: pretrained weights ")
    assert "Traceback" not in proc.stderr


def test_all_builds_the_matrix(capsys, tmp_path):
    # --model-kwargs shrinks every arch of the matrix (vit_base too) so this stays fast
    code, stdout, err = run(capsys, "generate", "--all", "--init", "random", "--img-size", "32", "--patch-size", "4",
                            "--model-kwargs", TINY_KWARGS_JSON, "--out-dir", str(tmp_path), "--format", "json")
    assert code == 0, err
    names = [Path(f["path"]).name for f in json.loads(stdout)["files"]]
    assert names == [f"vit_{s}_{d}_random_init.pth.tar" for s in ("tiny", "small", "base")
                     for d in ("cifar10", "cifar100")]
    from ckpttool.manifest import check_manifest

    check = check_manifest(tmp_path / "MANIFEST.json")
    assert check.passed and len(check.checked) == 6
