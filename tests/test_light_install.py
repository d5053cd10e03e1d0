"""The light install: verify, inspect, backup, restore, verify --manifest and runs work without torch.

Two levels: in this environment, each command runs in a child that must never import torch
(checked through ``sys.modules``); and (slow) the core package alone is installed into a fresh
venv without torch, where the same commands run on torch zip, legacy and safetensors files written
here, and ``verify --format json`` prints byte-for-byte what the full install prints.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

from ckpttool.hashing import file_sha256
from ckpttool.manifest import ManifestEntry, update_manifest
from ckpttool.verify import judge_file

REPO = Path(__file__).resolve().parents[1]
# the core dependencies as pyproject.toml declares them (markers included: pip evaluates them)
CORE = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
# Build our wheel with this environment's setuptools when it has one (fast, offline); else pip fetches it.
_NO_ISOLATION = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []

# Runs the CLI in-process in a child, then reports its exit code and whether torch got imported.
_CHILD = """
import json, sys
from ckpttool.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A folder of checkpoints in the three formats, written by the full environment, and a manifest."""
    folder = tmp_path_factory.mktemp("light")
    gen = torch.Generator().manual_seed(0)
    sd = {"blocks.0.fc.weight": torch.randn(64, 32, generator=gen) * 0.02, "blocks.0.fc.bias": torch.zeros(64),
          "norm.weight": torch.ones(32), "head.weight": torch.randn(10, 32, generator=gen) * 0.02}
    torch.save(sd, folder / "zip_random_init.pth.tar")
    torch.save({"state_dict": sd, "epoch": 3}, folder / "legacy_random_init.pt", _use_new_zipfile_serialization=False)
    save_file(sd, folder / "st_random_init.safetensors")
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        entry = ManifestEntry(path.name, file_sha256(path), path.stat().st_size, judge_file(path).verdict)
        update_manifest(folder / "MANIFEST.json", entry)
    return folder


def _commands(folder: Path) -> list[list[str]]:
    return [
        ["verify", str(folder)],
        ["verify", str(folder / "zip_random_init.pth.tar"), "--format", "json"],
        ["inspect", str(folder / "legacy_random_init.pt"), "--format", "json"],
        ["inspect", str(folder / "st_random_init.safetensors")],
        ["verify", "--manifest", str(folder / "MANIFEST.json")],
        ["runs", "--root", str(folder), "--format", "json"],
    ]


def test_core_commands_never_import_torch(files, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(files, work)
    for args in [*_commands(work), ["backup", str(work / "zip_random_init.pth.tar"), "--root", str(work)]]:
        r = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, cwd=REPO,
                           timeout=120)
        result = json.loads(r.stdout.splitlines()[-1])
        assert result == {"code": 0, "torch": False}, (args, r.stderr)
    backups = subprocess.run([sys.executable, "-m", "ckpttool", "backup", "list", "--root", str(work), "--format", "json"],
                             capture_output=True, text=True, cwd=REPO, check=True).stdout
    record = json.loads(backups)["backups"][0]["id"]
    r = subprocess.run([sys.executable, "-c", _CHILD, "restore", record, "--root", str(work)],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert json.loads(r.stdout.splitlines()[-1])["torch"] is False, r.stderr


def _clean_env() -> dict[str, str]:
    """This environment minus what would let the venv see the checkout or the full install."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def _light_venv(root: Path) -> Path:
    """A fresh venv with the core package and its core dependencies only (pip may use its cache)."""
    wheels = root / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *_NO_ISOLATION, "-w",
                    str(wheels), str(REPO)], check=True, capture_output=True)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(py), "install", "-q"]
    env = _clean_env()
    subprocess.run([*pip, "--no-deps", *wheels.glob("ckpttool-*.whl")], check=True, capture_output=True, env=env)
    subprocess.run([*pip, *CORE], check=True, capture_output=True, env=env)
    return py


@pytest.mark.slow
def test_core_package_alone_in_a_fresh_venv(files, tmp_path):
    py = _light_venv(tmp_path)
    env = _clean_env()
    assert subprocess.run([str(py), "-c", "import torch"], capture_output=True, env=env).returncode != 0

    def light(*args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess:
        # the console script, as users run it (not `python -m`, which imports more of importlib)
        return subprocess.run([str(py.parent / "ckpttool"), *args], capture_output=True, text=True, env=env,
                              cwd=cwd, timeout=300)

    origin = subprocess.run([str(py), "-c", "import ckpttool; print(ckpttool.__file__)"], capture_output=True,
                            text=True, env=env, cwd=tmp_path).stdout
    assert str(tmp_path / "venv") in origin  # the installed copy, not the checkout
    for args in _commands(files):
        r = light(*args)
        assert r.returncode == 0, (args, r.stderr)
    full = subprocess.run([sys.executable, "-m", "ckpttool", "verify", str(files), "--format", "json"],
                          capture_output=True, text=True, cwd=REPO)
    assert light("verify", str(files), "--format", "json").stdout == full.stdout  # byte-for-byte
    work = tmp_path / "work"
    shutil.copytree(files, work)
    r = light("backup", str(work / "st_random_init.safetensors"), "--root", str(work), "--format", "json")
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)["backups"][0]["id"]
    (work / "st_random_init.safetensors").write_bytes(b"garbage")
    r = light("restore", record, "--root", str(work))
    assert r.returncode == 0, r.stderr
    assert file_sha256(work / "st_random_init.safetensors") == file_sha256(files / "st_random_init.safetensors")
    r = light("generate", "--help")
    assert r.returncode == 0
    r = light("generate", "--arch", "vit_tiny", "--dataset", "cifar10", "--init", "random",
              "--out", str(tmp_path / "x.pth"))
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and len(r.stderr.splitlines()) == 1, r.stderr
    assert "pip install 'ckpttool[torch]'" in r.stderr
