"""Shared fixtures. Kept small and generic; torch is imported only by the fixtures that need it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def tmp_ckpt_dir(tmp_path: Path) -> Path:
    """An empty folder for checkpoint files written by the test."""
    folder = tmp_path / "ckpts"
    folder.mkdir()
    return folder


@pytest.fixture
def tiny_state_dict():
    """A few small float32 tensors with fixed values: a Linear-like weight/bias and a LayerNorm."""
    import torch

    gen = torch.Generator().manual_seed(0)
    return {
        "fc.weight": torch.randn(4, 3, generator=gen),
        "fc.bias": torch.randn(4, generator=gen),
        "norm.weight": torch.ones(4),
        "norm.bias": torch.zeros(4),
    }
