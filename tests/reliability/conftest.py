"""Fixtures of the reliability suite: one fork server for every crash/concurrency test."""

from __future__ import annotations

import pytest
from _crash import Zygote, candidates


@pytest.fixture(scope="session")
def zygote(tmp_path_factory):
    """The warm fork server (imports torch/timm/ckpttool once, ~3 s) shared by the process tests."""
    folder = tmp_path_factory.mktemp("zygote")
    with Zygote(folder / "zygote.log") as z:
        yield z


@pytest.fixture(scope="session")
def versions(zygote, tmp_path_factory) -> dict:
    """sha256 of the two complete versions (A/B) each crash-tested operation alternates between."""
    return candidates(zygote, tmp_path_factory.mktemp("candidates"))
