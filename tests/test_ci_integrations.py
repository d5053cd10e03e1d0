"""The ready-made CI integrations: the pre-commit hook (tried for real with ``pre-commit try-repo``,
which installs the light package into its own venv) and the GitHub Action's definition."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"})


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_pre_commit_hook_fails_a_random_pretrained_file_and_passes_a_correct_one(tmp_path):
    pytest.importorskip("pre_commit")
    repo = tmp_path / "project"
    repo.mkdir()
    _git(repo, "init", "-q")
    gen = torch.Generator().manual_seed(0)
    weights = {"blocks.0.fc.weight": torch.randn(64, 32, generator=gen) * 0.02, "blocks.0.fc.bias": torch.zeros(64)}
    (repo / "init_model").mkdir()
    bad = repo / "init_model" / "vit_cifar10_pretrained_init.pth.tar"
    torch.save(weights, bad)
    _git(repo, "add", ".")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PRE_COMMIT_HOME"] = str(tmp_path / "pre-commit-home")

    def try_repo() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pre_commit", "try-repo", str(REPO), "ckpttool-verify",
                               "--all-files"], cwd=repo, capture_output=True, text=True, env=env, timeout=600)

    r = try_repo()
    assert r.returncode == 1, r.stdout + r.stderr
    assert "random (expected pretrained)" in r.stdout, r.stdout
    bad.rename(repo / "init_model" / "vit_cifar10_random_init.pth.tar")
    _git(repo, "add", "-A")
    r = try_repo()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Passed" in r.stdout


def test_hook_and_action_definitions():
    hooks = (REPO / ".pre-commit-hooks.yaml").read_text()
    assert "- id: ckpttool-verify" in hooks and "language: python" in hooks and "entry: ckpttool verify" in hooks
    action = (REPO / "action.yml").read_text()
    for needle in ("using: composite", "paths:", "manifest:", "expect:", "--format github", "GITHUB_ACTION_PATH"):
        assert needle in action, needle
    readme = (REPO / "README.md").read_text()
    assert "id: ckpttool-verify" in readme and "action.yml" in readme


def test_action_verify_step_writes_sarif_for_upload(tmp_path):
    """The action's own shell step, run as GitHub runs it (bash -e -o pipefail), with `sarif:` set:
    annotations on stdout, exit 1, and a SARIF file naming the failing checkpoint."""
    import json

    import yaml

    from ckpttool.saving import save_checkpoint

    action = yaml.safe_load((REPO / "action.yml").read_text())
    (step,) = [s for s in action["runs"]["steps"] if s.get("name") == "Verify"]
    folder = tmp_path / "init_model"
    folder.mkdir()
    torch.manual_seed(0)
    save_checkpoint(folder / "tiny_pretrained_init.safetensors", {f"blocks.{i}.w": torch.randn(32, 32) for i in range(3)})
    script = tmp_path / "step.sh"
    script.write_text(step["run"])
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "CKPT_PATHS": "init_model/", "CKPT_MANIFEST": "", "CKPT_EXPECT": "auto", "CKPT_SARIF": "ckpttool.sarif",
           "CKPT_LFS_OIDS": "false"}
    r = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.startswith("::error file=init_model/tiny_pretrained_init.safetensors,")
    (result,) = json.loads((tmp_path / "ckpttool.sarif").read_text())["runs"][0]["results"]
    assert result["ruleId"] == "verdict-mismatch"
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == \
        "init_model/tiny_pretrained_init.safetensors"
