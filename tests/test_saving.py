"""ckpttool.saving.save_checkpoint and ckpttool.hashing.file_sha256."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from ckpttool.errors import CheckpointNotFoundError, InvalidArgumentError, OutputError
from ckpttool.hashing import file_sha256
from ckpttool.loading import load_checkpoint
from ckpttool.saving import save_checkpoint
from ckpttool.torch_state import load_state_dict

META = {"arch": "vit_tiny_patch16_224", "init": "pretrained", "num_classes": 10, "tags": ["a", "b"]}


@pytest.mark.parametrize(
    ("name", "fmt"), [("m.safetensors", "safetensors"), ("m.pth.tar", "torch-zip"), ("m.pth", "torch-zip")]
)
def test_round_trip_with_metadata(tmp_ckpt_dir, tiny_state_dict, name, fmt):
    sd = {**tiny_state_dict, "half": torch.arange(4).to(torch.bfloat16), "steps": torch.tensor(3)}
    path = tmp_ckpt_dir / name
    digest = save_checkpoint(path, sd, metadata=META)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    with load_checkpoint(path) as ckpt:
        assert ckpt.format == fmt
        assert ckpt.metadata == META
        assert [t.name for t in ckpt.tensors] == list(sd) or {t.name for t in ckpt.tensors} == set(sd)
        for key, tensor in sd.items():
            np.testing.assert_array_equal(
                ckpt.array(key), tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()
            )
    loaded = load_state_dict(path)
    assert loaded["half"].dtype == torch.bfloat16 and torch.equal(loaded["half"], sd["half"])


def test_torch_file_layout_loads_with_weights_only(tmp_ckpt_dir, tiny_state_dict):
    path = tmp_ckpt_dir / "m.pth"
    save_checkpoint(path, tiny_state_dict, metadata=META)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"state_dict", "ckpttool"} and raw["ckpttool"] == META


def test_safetensors_metadata_layout(tmp_ckpt_dir, tiny_state_dict):
    path = tmp_ckpt_dir / "m.safetensors"
    save_checkpoint(path, tiny_state_dict, metadata=META)
    with safe_open(path, framework="numpy") as f:
        assert json.loads(f.metadata()["ckpttool"]) == META


def test_without_metadata(tmp_ckpt_dir, tiny_state_dict):
    for name in ("m.safetensors", "m.pth"):
        save_checkpoint(tmp_ckpt_dir / name, tiny_state_dict)
        with load_checkpoint(tmp_ckpt_dir / name) as ckpt:
            assert ckpt.metadata in ({}, {"format": "pt"})


def test_shared_and_non_contiguous_tensors_save(tmp_ckpt_dir):
    base = torch.randn(4, 6)
    sd = {"emb.weight": base, "head.weight": base, "view": base[1:3], "t": base.t()}
    path = tmp_ckpt_dir / "tied.safetensors"
    save_checkpoint(path, sd)
    with load_checkpoint(path) as ckpt:
        np.testing.assert_array_equal(ckpt.array("t"), base.t().numpy())
        np.testing.assert_array_equal(ckpt.array("view"), base[1:3].numpy())
    assert sd["emb.weight"] is base  # the caller's dict is untouched


def test_replaces_existing_file(tmp_ckpt_dir, tiny_state_dict):
    path = tmp_ckpt_dir / "m.pth"
    path.write_bytes(b"old")
    save_checkpoint(path, tiny_state_dict)
    assert path.read_bytes()[:4] == b"PK\x03\x04"


@pytest.mark.parametrize(
    ("state_dict", "metadata", "match"),
    [
        ({}, None, "the state dict is empty"),
        ({"w": [1.0]}, None, "entries w are not str -> tensor"),
        ({"w": torch.ones(1)}, {"x": object()}, "metadata is not JSON-serialisable"),
        ({"w": torch.ones(1)}, ["x"], "metadata must be a dict, not list"),
    ],
)
def test_invalid_arguments(tmp_ckpt_dir, state_dict, metadata, match):
    with pytest.raises(InvalidArgumentError, match=match):
        save_checkpoint(tmp_ckpt_dir / "m.pth", state_dict, metadata=metadata)
    assert list(tmp_ckpt_dir.iterdir()) == []


def test_unwritable_destination(tmp_ckpt_dir, tiny_state_dict):
    blocker = tmp_ckpt_dir / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="Not a directory"):
        save_checkpoint(blocker / "m.safetensors", tiny_state_dict)


def test_file_sha256(tmp_path):
    path = tmp_path / "data"
    data = bytes(range(256)) * 5000  # spans more than one 1 MiB chunk
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").touch()
    assert file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        file_sha256(tmp_path / "missing")
