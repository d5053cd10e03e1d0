"""The gate reads the init once: the bytes it hashes are the bytes it judges and the run is built from."""

import hashlib
import os
import shutil

import pytest
import torch
from conftest import base_options

from ckpttool.errors import CheckpointFormatError
from ckpttool.torch_state import load_state_dict
from pruning_runner import gate
from pruning_runner.checkpoint import load_tensors
from pruning_runner.config import resolve_config
from pruning_runner.loop import run_pruning


def test_an_init_replaced_after_its_verdict_is_never_trained_from(trained_init, random_init, tmp_path, monkeypatch):
    init = tmp_path / "vit_pretrained_init.safetensors"
    shutil.copyfile(trained_init, init)
    verified_sha = hashlib.sha256(init.read_bytes()).hexdigest()
    decide = gate.decide_gate

    def replaced_right_after_the_verdict(*args, **kwargs):  # a concurrent `generate --force` lands here
        shutil.copyfile(random_init, tmp_path / "new.safetensors")
        os.replace(tmp_path / "new.safetensors", init)
        return decide(*args, **kwargs)

    monkeypatch.setattr(gate, "decide_gate", replaced_right_after_the_verdict)
    cfg = resolve_config(None, base_options(init, tmp_path / "run", allow_random=False, states=1, epochs=1))
    result = run_pruning(cfg)
    assert hashlib.sha256(init.read_bytes()).hexdigest() != verified_sha  # the file did change on disk
    assert result.init["sha256"] == verified_sha and result.init["verdict"] == "pretrained"
    started = load_tensors(tmp_path / "run" / "init.safetensors")  # the run's immutable start
    verified = load_state_dict(trained_init)
    assert started.keys() == verified.keys()
    assert all(torch.equal(started[k], verified[k]) for k in started)


def test_the_recorded_sha256_is_that_of_the_bytes_read(trained_init):
    checked = gate.read_checked_init(trained_init)
    assert checked.record.sha256 == hashlib.sha256(trained_init.read_bytes()).hexdigest()
    assert checked.record.verdict == "pretrained" and checked.metadata["timm_name"] == "vit_tiny_patch16_224"
    assert all(torch.equal(checked.state_dict[k], v) for k, v in load_state_dict(trained_init).items())


def test_a_fifo_is_refused_instead_of_read_forever(tmp_path):
    fifo = tmp_path / "init.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointFormatError, match="is not a regular file"):
        gate.read_checked_init(fifo)


def test_tensors_loaded_other_than_those_verified_are_refused(trained_init, monkeypatch):
    import ckpttool.torch_state

    real = ckpttool.torch_state.load_state_dict

    def one_value_changed(path):  # a loader that disagreed with the verified reader (issue 19)
        sd = real(path)
        name = next(iter(sd))
        sd[name] = sd[name].clone().neg_()
        return sd

    assert gate.read_checked_init(trained_init).record.verdict == "pretrained"
    monkeypatch.setattr(ckpttool.torch_state, "load_state_dict", one_value_changed)
    with pytest.raises(CheckpointFormatError, match="differ from those verified"):
        gate.read_checked_init(trained_init)
