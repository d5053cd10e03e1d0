"""Run records never write through a planted symlink (hardening, finding 8's class)."""

from __future__ import annotations

import pytest

from ckpttool.errors import InvalidArgumentError
from pruning_runner.records import METRICS, RunFolder


def test_metrics_are_not_appended_through_a_planted_symlink(tmp_path):
    target = tmp_path / "victim.txt"
    target.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / METRICS).symlink_to(target)
    with pytest.raises(InvalidArgumentError, match="symlink"):
        RunFolder(run).append_metrics({"state": 0, "epoch": 0})
    assert target.read_text() == "precious\n"


def test_metrics_append_normally(tmp_path):
    records = RunFolder(tmp_path)
    records.append_metrics({"state": 0, "epoch": 0})
    records.append_metrics({"state": 0, "epoch": 1})
    assert [m["epoch"] for m in records.read_metrics()] == [0, 1]
