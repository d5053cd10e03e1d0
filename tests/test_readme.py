"""The README's quick start is what CI runs, and every command it documents exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _quick_start_commands():
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_quick_start_has_two_commands_and_ci_runs_the_test_one():
    demo, tests = _quick_start_commands()
    assert demo.endswith("ckpttool demo")
    assert "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci, "the README's test command and .ci/run differ"


def test_every_cli_command_is_documented_and_registered():
    from ckpttool.cli._root import cli

    registered = set(cli.list_commands(None))
    assert registered == {"generate", "inspect", "verify", "backup", "restore", "run-prune", "runs", "demo"}
    for name in registered:
        assert f"ckpttool {name}" in README, name
