"""ckpttool.loading: formats by content, dtypes, unwrapping, safety and every kind of bad input.

Every file is written by the test with the real libraries (torch, safetensors, pickle); nothing is mocked.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import runpy
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ckpttool.errors import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    InvalidArgumentError,
    UnsafeCheckpointError,
)
from ckpttool.loading import CHECKPOINT_SUFFIXES, find_checkpoints, load_checkpoint
from ckpttool.torch_state import load_state_dict

TRUNC = "the file is truncated or corrupt; re-download or regenerate it"


def save_zip(path: Path, obj: object, **kwargs) -> Path:
    torch.save(obj, path, **kwargs)
    return path


def save_legacy(path: Path, obj: object) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    return path


def save_st(path: Path, tensors: dict, metadata: dict | None = None) -> Path:
    save_file(tensors, path, metadata=metadata)
    return path


WRITERS = {"safetensors": save_st, "torch-zip": save_zip, "torch-legacy": save_legacy}


def read_all(path: Path) -> dict[str, np.ndarray]:
    with load_checkpoint(path) as ckpt:
        return {info.name: array for info, array in ckpt.iter_arrays()}


# --- formats ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("m.safetensors", "safetensors"),
        ("m.pth", "torch-zip"),
        ("m.pth.tar", "torch-zip"),
        ("m.pt", "torch-legacy"),
        ("m.bin", "torch-zip"),
        ("m.ckpt", "torch-legacy"),
    ],
)
def test_every_format_loads(tmp_ckpt_dir, tiny_state_dict, name, fmt):
    path = WRITERS[fmt](tmp_ckpt_dir / name, tiny_state_dict)
    with load_checkpoint(path) as ckpt:
        assert ckpt.format == fmt
        assert ckpt.path == path
        assert {t.name for t in ckpt.tensors} == set(tiny_state_dict)
        info = next(t for t in ckpt.tensors if t.name == "fc.weight")
        assert (info.shape, info.dtype, info.numel) == ((4, 3), "float32", 12)
        np.testing.assert_array_equal(ckpt.array("fc.weight"), tiny_state_dict["fc.weight"].numpy())


def test_pth_tar_is_a_torch_zip_not_a_tar(tmp_ckpt_dir, tiny_state_dict):
    path = save_zip(
        tmp_ckpt_dir / "vit_small_cifar10_pretrained_init.pth.tar", {"state_dict": tiny_state_dict}
    )
    assert path.read_bytes()[:4] == b"PK\x03\x04"
    with load_checkpoint(path) as ckpt:
        assert (ckpt.format, ckpt.wrapper) == ("torch-zip", "state_dict")


@pytest.mark.parametrize(
    ("fmt", "name"),
    [
        ("safetensors", "looks_like.pth"),
        ("torch-zip", "looks_like.safetensors"),
        ("torch-legacy", "looks_like.bin"),
    ],
)
def test_format_is_detected_by_content_not_name(tmp_ckpt_dir, tiny_state_dict, fmt, name):
    path = WRITERS[fmt](tmp_ckpt_dir / name, tiny_state_dict)
    with load_checkpoint(path) as ckpt:
        assert ckpt.format == fmt
    assert set(read_all(path)) == set(tiny_state_dict)


def test_safetensors_order_is_file_order_and_metadata_is_raw_without_ckpttool(tmp_ckpt_dir):
    path = save_st(
        tmp_ckpt_dir / "m.safetensors", {"b": torch.zeros(2), "a": torch.ones(3)}, {"format": "pt"}
    )
    with load_checkpoint(path) as ckpt:
        assert ckpt.metadata == {"format": "pt"}
        assert ckpt.wrapper is None and ckpt.non_tensor_keys == ()
        offsets = [ckpt._sources[t.name] for t in ckpt.tensors]
    header = json.loads(path.read_bytes()[8 : 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]])
    assert offsets == sorted(offsets, key=lambda n: header[n]["data_offsets"][0])


# --- dtypes -----------------------------------------------------------------------------------------

FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
FP8_DTYPES = [torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz]
INT_DTYPES = [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool]


def sample(dtype: torch.dtype) -> torch.Tensor:
    if dtype in FP8_DTYPES:  # every one of the 256 bit patterns, NaNs and infinities included
        return torch.arange(256, dtype=torch.uint8).view(dtype).reshape(16, 16)
    if dtype == torch.bool:
        return torch.tensor([[True, False, True], [False, False, True]])
    if dtype.is_floating_point:
        return (torch.randn(5, 3, generator=torch.Generator().manual_seed(1)) * 100).to(dtype)
    return torch.arange(-3, 12).reshape(5, 3).to(dtype)


@pytest.mark.parametrize("fmt", ["safetensors", "torch-zip"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES + FP8_DTYPES, ids=str)
def test_float_dtypes_read_as_float32(tmp_ckpt_dir, fmt, dtype):
    tensor = sample(dtype)
    path = WRITERS[fmt](tmp_ckpt_dir / "m.bin", {"w": tensor})
    with load_checkpoint(path) as ckpt:
        assert ckpt.tensors[0].dtype == str(dtype).removeprefix("torch.")
        array = ckpt.array("w")
    assert array.dtype == np.float32 and array.shape == tuple(tensor.shape)
    np.testing.assert_array_equal(array, tensor.float().numpy())  # NaN == NaN here


@pytest.mark.parametrize("fmt", ["safetensors", "torch-zip", "torch-legacy"])
@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
def test_int_and_bool_dtypes_keep_their_numpy_dtype(tmp_ckpt_dir, fmt, dtype):
    tensor = sample(dtype)
    path = WRITERS[fmt](tmp_ckpt_dir / "m.bin", {"w": tensor})
    with load_checkpoint(path) as ckpt:
        array = ckpt.array("w")
    assert array.dtype == tensor.numpy().dtype
    np.testing.assert_array_equal(array, tensor.numpy())


def test_float8_e8m0_table_matches_torch(tmp_ckpt_dir):
    tensor = torch.arange(256, dtype=torch.uint8).view(torch.float8_e8m0fnu)
    array = read_all(save_st(tmp_ckpt_dir / "m.safetensors", {"w": tensor}))["w"]
    np.testing.assert_array_equal(array, tensor.float().numpy())


def test_arrays_are_fresh_writable_copies(tmp_ckpt_dir, tiny_state_dict):
    path = save_st(tmp_ckpt_dir / "m.safetensors", tiny_state_dict)
    with load_checkpoint(path) as ckpt:
        first = ckpt.array("fc.weight")
        first[:] = 7
        np.testing.assert_array_equal(ckpt.array("fc.weight"), tiny_state_dict["fc.weight"].numpy())
    assert (first == 7).all()  # still valid after close


# --- unwrapping -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["state_dict", "model", "state_dict_ema", "model_ema"])
@pytest.mark.parametrize("fmt", ["torch-zip", "torch-legacy"])
def test_wrappers_are_unwrapped(tmp_ckpt_dir, tiny_state_dict, key, fmt):
    path = WRITERS[fmt](tmp_ckpt_dir / "m.pth", {key: tiny_state_dict, "epoch": 7})
    with load_checkpoint(path) as ckpt:
        assert ckpt.wrapper == key
        assert [t.name for t in ckpt.tensors] == list(tiny_state_dict)
        assert ckpt.non_tensor_keys == ("epoch",)


def test_wrapper_priority_state_dict_over_model_over_ema(tmp_ckpt_dir, tiny_state_dict):
    other = {"x": torch.zeros(1)}
    path = save_zip(
        tmp_ckpt_dir / "m.pth",
        {"state_dict_ema": other, "model": other, "state_dict": tiny_state_dict, "model_ema": other},
    )
    with load_checkpoint(path) as ckpt:
        assert ckpt.wrapper == "state_dict"
        # every other weight set is one a consumer may load (timm prefers EMA): listed, not "non-tensor"
        assert ckpt.weight_sets == ("state_dict", "model", "state_dict_ema", "model_ema")
        assert ckpt.non_tensor_keys == ()
        with ckpt.select("state_dict_ema") as ema:
            assert [t.name for t in ema.tensors] == ["x"] and ema.wrapper == "state_dict_ema"
    path = save_zip(tmp_ckpt_dir / "m2.pth", {"state_dict_ema": other, "model": tiny_state_dict})
    with load_checkpoint(path) as ckpt:
        assert ckpt.wrapper == "model"


def test_wrapper_key_without_tensors_is_not_a_wrapper(tmp_ckpt_dir):
    path = save_zip(tmp_ckpt_dir / "m.pth", {"model": {"arch": "vit"}, "w": torch.ones(2)})
    with load_checkpoint(path) as ckpt:
        assert ckpt.wrapper is None
        assert [t.name for t in ckpt.tensors] == ["w"]
        assert ckpt.non_tensor_keys == ("model",)


@pytest.mark.parametrize(
    ("prefix", "stripped"),
    [
        ("module.", ("module.",)),
        ("_orig_mod.", ("_orig_mod.",)),
        ("_orig_mod.module.", ("_orig_mod.", "module.")),
    ],
)
def test_prefixes_are_stripped_and_recorded(tmp_ckpt_dir, tiny_state_dict, prefix, stripped):
    sd = {prefix + k: v for k, v in tiny_state_dict.items()}
    for fmt in ("safetensors", "torch-zip"):
        path = WRITERS[fmt](tmp_ckpt_dir / f"m.{fmt}", {"model": sd} if fmt != "safetensors" else sd)
        with load_checkpoint(path) as ckpt:
            assert ckpt.stripped_prefixes == stripped
            assert sorted(t.name for t in ckpt.tensors) == sorted(tiny_state_dict)
            np.testing.assert_array_equal(ckpt.array("fc.bias"), tiny_state_dict["fc.bias"].numpy())


def test_prefix_shared_by_only_some_names_is_kept(tmp_ckpt_dir):
    path = save_zip(tmp_ckpt_dir / "m.pth", {"module.a": torch.ones(1), "b": torch.ones(1)})
    with load_checkpoint(path) as ckpt:
        assert ckpt.stripped_prefixes == ()
        assert [t.name for t in ckpt.tensors] == ["module.a", "b"]


@pytest.mark.parametrize("fmt", ["torch-zip", "torch-legacy"])
def test_non_tensor_entries_are_listed_namespace_and_numpy_accepted(tmp_ckpt_dir, tiny_state_dict, fmt):
    obj = {
        "state_dict": tiny_state_dict,
        "epoch": 12,
        "args": argparse.Namespace(lr=0.1, model="vit_small"),
        "best_acc": np.float64(0.95),
        "history": np.arange(3, dtype=np.float32),
        "optimizer": {"state": {0: {"exp_avg": torch.zeros(2)}}, "param_groups": [{"lr": 0.1}]},
        "ckpttool": {"init": "pretrained"},
    }
    path = WRITERS[fmt](tmp_ckpt_dir / "m.pth", obj)
    with load_checkpoint(path) as ckpt:
        assert ckpt.non_tensor_keys == ("epoch", "args", "best_acc", "history", "optimizer")
        assert ckpt.metadata == {"init": "pretrained"}
        assert len(ckpt.tensors) == len(tiny_state_dict)


def test_non_tensor_entries_inside_a_bare_state_dict(tmp_ckpt_dir):
    path = save_zip(tmp_ckpt_dir / "m.pth", {"w": torch.ones(2), "epoch": 3, "ckpttool": "not a dict"})
    with load_checkpoint(path) as ckpt:
        assert ckpt.wrapper is None
        assert ckpt.non_tensor_keys == ("epoch", "ckpttool")
        assert ckpt.metadata == {}


def test_nested_dicts_of_tensors_are_flattened(tmp_ckpt_dir):
    path = save_zip(
        tmp_ckpt_dir / "m.pth", {"backbone": {"conv": {"weight": torch.ones(2)}}, "head.w": torch.ones(1)}
    )
    with load_checkpoint(path) as ckpt:
        assert [t.name for t in ckpt.tensors] == ["backbone.conv.weight", "head.w"]


# --- load_state_dict --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["safetensors", "torch-zip", "torch-legacy"])
def test_load_state_dict_returns_torch_tensors_with_original_dtype(tmp_ckpt_dir, fmt):
    sd = {"module.w": torch.randn(3, 2).bfloat16(), "module.n": torch.tensor(5)}
    obj = sd if fmt == "safetensors" else {"state_dict": sd, "epoch": 1}
    path = WRITERS[fmt](tmp_ckpt_dir / "m.bin", obj)
    loaded = load_state_dict(path)
    assert list(loaded) == ["w", "n"] or set(loaded) == {"w", "n"}
    assert loaded["w"].dtype == torch.bfloat16 and torch.equal(loaded["w"], sd["module.w"])
    assert torch.equal(loaded["n"], sd["module.n"])


# --- safety -----------------------------------------------------------------------------------------


class _Reduce:
    """An object that pickles as ``func(*args)``: what a malicious checkpoint carries."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path, tmp: Path) -> dict[str, tuple[_Reduce, str]]:
    script = tmp / "evil.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    return {
        "os.system": (_Reduce(os.system, f"touch {marker}"), "posix.system"),
        "builtins.eval": (_Reduce(eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"),
        "subprocess.Popen": (_Reduce(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
        "runpy.run_path": (_Reduce(runpy.run_path, str(script)), "runpy.run_path"),
    }


def _refusal(path: Path, names: str) -> str:
    return (
        f"refused to load {path}: it imports unsafe globals {names} (ckpttool never executes pickled code; "
        "re-save the checkpoint with only tensors, e.g. torch.save(model.state_dict()))"
    )


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "subprocess.Popen", "runpy.run_path"])
@pytest.mark.parametrize("fmt", ["torch-zip", "torch-legacy"])
def test_malicious_pickles_are_refused_without_executing(
    tmp_path, tmp_ckpt_dir, tiny_state_dict, payload, fmt
):
    marker = tmp_path / "pwned"
    evil, global_name = _payloads(marker, tmp_path)[payload]
    path = WRITERS[fmt](tmp_ckpt_dir / "evil.pth", {"state_dict": tiny_state_dict, "x": evil})
    for load in (load_checkpoint, load_state_dict):
        with pytest.raises(UnsafeCheckpointError) as err:
            load(path)
        assert str(err.value) == _refusal(path, global_name)
    assert not marker.exists()


def test_refusal_names_all_unsafe_globals_sorted(tmp_path, tmp_ckpt_dir):
    marker = tmp_path / "pwned"
    payloads = _payloads(marker, tmp_path)
    obj = {
        "w": torch.ones(1),
        "a": payloads["subprocess.Popen"][0],
        "b": payloads["os.system"][0],
        "c": payloads["builtins.eval"][0],
    }
    for fmt in ("torch-zip", "torch-legacy"):
        path = WRITERS[fmt](tmp_ckpt_dir / f"evil.{fmt}", obj)
        with pytest.raises(UnsafeCheckpointError, match="^refused") as err:
            load_checkpoint(path)
        assert str(err.value) == _refusal(path, "builtins.eval, posix.system, subprocess.Popen")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_pickle_with_stack_global_is_refused(tmp_path, tmp_ckpt_dir, protocol):
    marker = tmp_path / "pwned"
    path = tmp_ckpt_dir / "evil.pt"
    evil = _payloads(marker, tmp_path)["os.system"][0]
    path.write_bytes(pickle.dumps({"w": 1, "x": evil, "y": evil}, protocol=protocol))
    with pytest.raises(UnsafeCheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value) == _refusal(path, "posix.system")
    assert not marker.exists()


def test_torch_zip_with_protocol_4_pickle_is_scanned_too(tmp_path, tmp_ckpt_dir):
    marker = tmp_path / "pwned"
    evil = _payloads(marker, tmp_path)["os.system"][0]
    path = save_zip(tmp_ckpt_dir / "evil.pth", {"w": torch.ones(2), "x": evil}, pickle_protocol=4)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value) == _refusal(path, "posix.system")
    assert not marker.exists()


def test_safe_plain_pickle_is_not_a_torch_checkpoint(tmp_ckpt_dir):
    path = tmp_ckpt_dir / "plain.pkl.pth"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=2))
    with pytest.raises(CheckpointFormatError) as err:
        load_checkpoint(path)
    assert str(err.value) == (
        f"{path} is a plain pickle, not a torch.save checkpoint; re-save it with torch.save(model.state_dict())"
    )


# --- bad input --------------------------------------------------------------------------------------


def test_missing_path(tmp_ckpt_dir):
    path = tmp_ckpt_dir / "nope.pth"
    with pytest.raises(CheckpointNotFoundError) as err:
        load_checkpoint(path)
    assert str(err.value) == f"checkpoint {path} does not exist; check the path"
    assert isinstance(err.value, FileNotFoundError)


def test_folder_is_not_a_checkpoint_file(tmp_ckpt_dir):
    with pytest.raises(CheckpointFormatError, match="is a folder, not a checkpoint file"):
        load_checkpoint(tmp_ckpt_dir)


def test_empty_file(tmp_ckpt_dir):
    path = tmp_ckpt_dir / "empty.pth"
    path.touch()
    with pytest.raises(CheckpointFormatError) as err:
        load_checkpoint(path)
    assert (
        str(err.value)
        == f"{path} is empty (0 bytes); the write that produced it failed, regenerate or restore it"
    )


def test_random_bytes(tmp_ckpt_dir):
    path = tmp_ckpt_dir / "noise.safetensors"
    path.write_bytes(
        bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)[1:]).replace(b"\x80", b"")
    )
    with pytest.raises(
        CheckpointFormatError, match=r"is not a checkpoint: its content is neither safetensors"
    ):
        load_checkpoint(path)


def test_safetensors_header_claiming_huge_length(tmp_ckpt_dir):
    path = tmp_ckpt_dir / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 60) + b"{}")
    with pytest.raises(CheckpointFormatError) as err:
        load_checkpoint(path)
    assert str(err.value) == (
        f"{path} is not a valid safetensors file: its header claims {1 << 60} bytes, "
        f"more than the 100000000 safetensors allows; {TRUNC}"
    )


def test_safetensors_header_longer_than_file(tmp_ckpt_dir):
    path = tmp_ckpt_dir / "cut.safetensors"
    path.write_bytes(struct.pack("<Q", 4096) + b'{"w": {')
    with pytest.raises(CheckpointFormatError) as err:
        load_checkpoint(path)
    assert str(err.value) == (
        f"{path} is not a valid safetensors file: its header claims 4096 bytes but only 7 follow; {TRUNC}"
    )


def _raw_safetensors(path: Path, header: dict, data: bytes) -> Path:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def test_safetensors_offsets_past_end_of_file(tmp_ckpt_dir):
    path = _raw_safetensors(
        tmp_ckpt_dir / "lie.safetensors",
        {"w": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 4 << 40]}},
        b"\0" * 16,
    )
    with pytest.raises(CheckpointFormatError) as err:
        load_checkpoint(path)
    assert str(err.value) == (
        f"{path} is not a valid safetensors file: tensor 'w' points past the end of the file "
        f"(bytes 0..{4 << 40} of a data section of 16); {TRUNC}"
    )


def test_safetensors_shape_and_span_disagree(tmp_ckpt_dir):
    path = _raw_safetensors(
        tmp_ckpt_dir / "lie.safetensors",
        {"w": {"dtype": "F32", "shape": [8], "data_offsets": [0, 16]}},
        b"\0" * 16,
    )
    with pytest.raises(
        CheckpointFormatError, match=r"tensor 'w' claims shape \[8\] of F32 \(32 bytes\) but spans 16"
    ):
        load_checkpoint(path)


def test_safetensors_gap_rejected_by_safe_open(tmp_ckpt_dir):
    path = _raw_safetensors(
        tmp_ckpt_dir / "gap.safetensors",
        {"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}},
        b"\0" * 16,
    )
    with pytest.raises(CheckpointFormatError, match=r"is not a valid safetensors file \(") as err:
        load_checkpoint(path)
    assert err.value.__cause__ is not None


def test_safetensors_unknown_dtype(tmp_ckpt_dir):
    path = _raw_safetensors(
        tmp_ckpt_dir / "f4.safetensors", {"w": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}}, b"\0"
    )
    with pytest.raises(CheckpointFormatError, match="has dtype 'F4', which ckpttool cannot read"):
        load_checkpoint(path)


@pytest.mark.parametrize("fmt", ["safetensors", "torch-zip", "torch-legacy"])
def test_truncated_files(tmp_ckpt_dir, fmt):
    path = WRITERS[fmt](tmp_ckpt_dir / "t.pth", {"w": torch.randn(64, 64)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFormatError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert message.endswith(TRUNC)


def test_truncated_legacy_claiming_more_elements_than_bytes(tmp_ckpt_dir):
    path = save_legacy(tmp_ckpt_dir / "t.pt", {"w": torch.zeros(1 << 16, dtype=torch.uint8)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - (1 << 16) - 8])  # drop the storage's length field and bytes
    with pytest.raises(CheckpointFormatError) as err:
        load_checkpoint(path)
    assert str(err.value).startswith(f"{path} is not a readable torch checkpoint: storage ")
    assert str(err.value).endswith(f"claims {1 << 16} bytes, more than the file; {TRUNC}")


def test_truncated_pickle_inside_legacy_file(tmp_ckpt_dir):
    path = save_legacy(tmp_ckpt_dir / "t.pt", {"w": torch.zeros(4)})
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(
        CheckpointFormatError, match=r"is not a readable torch checkpoint \(.*\); the file is trunc"
    ):
        load_checkpoint(path)


def test_torch_zip_record_smaller_than_claimed(tmp_ckpt_dir):
    import zipfile

    src = save_zip(tmp_ckpt_dir / "big.pth", {"w": torch.ones(1 << 12)})
    path = tmp_ckpt_dir / "lie.pth"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(path, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, zin.read(name)[:16] if name.endswith("data/0") else zin.read(name))
    with pytest.raises(CheckpointFormatError) as err:
        load_checkpoint(path)
    assert str(err.value) == (
        f"{path} is not a readable torch checkpoint: storage '0' claims 4096 float32 elements (16384 bytes) "
        f"but its member holds 16 bytes; {TRUNC}"
    )


@pytest.mark.parametrize("fmt", ["safetensors", "torch-zip", "torch-legacy"])
def test_no_tensors(tmp_ckpt_dir, fmt):
    path = tmp_ckpt_dir / "none.pth"
    if fmt == "safetensors":
        _raw_safetensors(path, {"__metadata__": {"a": "b"}}, b"")
        keys = ""
    else:
        WRITERS[fmt](path, {"epoch": 3, "args": argparse.Namespace(lr=1)})
        keys = " (top-level entries: epoch, args)"
    with pytest.raises(CheckpointFormatError) as err:
        load_checkpoint(path)
    assert str(err.value) == (
        f"{path} holds no tensors{keys}; ckpttool reads state dicts, "
        "save one with torch.save(model.state_dict()) or safetensors"
    )


def test_a_bare_tensor_is_not_a_state_dict(tmp_ckpt_dir):
    path = save_zip(tmp_ckpt_dir / "t.pth", torch.ones(3))
    with pytest.raises(CheckpointFormatError, match="holds a Tensor, not a dict of tensors"):
        load_checkpoint(path)


@pytest.mark.parametrize("fmt", ["torch-zip", "torch-legacy"])
def test_a_list_of_layer_state_dicts_is_read_in_order_by_position(tmp_ckpt_dir, fmt):
    """fcd's ChemNet file: ``[[kind, [state_dict, kwargs]], ...]``. Its tensors are read in list
    order, named by position; the kwargs dicts (not tensor trees) are left out."""
    layers = [["Conv1d", [{"weight": torch.randn(32, 4, 3), "bias": torch.zeros(32)}, {"stride": 1}]],
              ["LSTM", [{"weight_ih_l0": torch.randn(64, 32), "weight_hh_l0": torch.randn(64, 16)}, {"hidden": 16}]]]
    path = WRITERS[fmt](tmp_ckpt_dir / "layers.pt", layers)
    with load_checkpoint(path) as ckpt:
        assert [t.name for t in ckpt.tensors] == ["0.1.0.weight", "0.1.0.bias", "1.1.0.weight_ih_l0", "1.1.0.weight_hh_l0"]
        assert ckpt.wrapper == "(list)"
        assert np.array_equal(ckpt.array("1.1.0.weight_hh_l0"), layers[1][1][0]["weight_hh_l0"].numpy())
    assert list(load_state_dict(path)) == ["0.1.0.weight", "0.1.0.bias", "1.1.0.weight_ih_l0", "1.1.0.weight_hh_l0"]
    # one state dict in a list: its own names
    with load_checkpoint(WRITERS[fmt](tmp_ckpt_dir / "one.pt", [{"fc.weight": torch.ones(2, 2)}])) as ckpt:
        assert [t.name for t in ckpt.tensors] == ["fc.weight"]
    with pytest.raises(CheckpointFormatError, match="holds no tensors"):
        load_checkpoint(WRITERS[fmt](tmp_ckpt_dir / "none.pt", [1, "a", {"lr": 0.1}]))


def test_a_self_referencing_list_is_read_once(tmp_ckpt_dir):
    cyclic: list = [{"w": torch.ones(3, 3)}]
    cyclic.append(cyclic)
    deep: list = [torch.ones(2)]
    for _ in range(60):  # deeper than any state dict: the deep part is left out, not recursed into
        deep = [deep]
    with load_checkpoint(save_zip(tmp_ckpt_dir / "cyclic.pt", cyclic)) as ckpt:
        assert [t.name for t in ckpt.tensors] == ["w"]
    with pytest.raises(CheckpointFormatError, match="holds no tensors"):
        load_checkpoint(save_zip(tmp_ckpt_dir / "deep.pt", deep))


def test_unknown_tensor_name_and_closed_checkpoint(tmp_ckpt_dir, tiny_state_dict):
    ckpt = load_checkpoint(save_st(tmp_ckpt_dir / "m.safetensors", tiny_state_dict))
    with pytest.raises(InvalidArgumentError, match="has no tensor named 'nope' \\(it has 4"):
        ckpt.array("nope")
    ckpt.close()
    ckpt.close()
    with pytest.raises(ValueError, match="is closed"):
        ckpt.array("fc.bias")


# --- find_checkpoints -------------------------------------------------------------------------------


def test_find_checkpoints_recursive_sorted_by_suffix(tmp_ckpt_dir):
    names = ["b/x.pth.tar", "a.safetensors", "b/c/y.PT", "z.ckpt", "m.bin", "n.pth"]
    for name in [*names, "notes.txt", ".a.pth.123.tmp", "b/archive.tar"]:
        (tmp_ckpt_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_ckpt_dir / name).write_bytes(b"x")
    assert find_checkpoints(tmp_ckpt_dir) == sorted(tmp_ckpt_dir / n for n in names)
    assert find_checkpoints(tmp_ckpt_dir / "z.ckpt") == [tmp_ckpt_dir / "z.ckpt"]


def test_find_checkpoints_skips_backups_and_hidden_folders_below_the_root(tmp_ckpt_dir):
    for name in ["a_pretrained_init.pth.tar", "backup_old/20260101T000000Z/a_pretrained_init.pth.tar",
                 ".cache/b.safetensors", "sub/backup_old/c.pth"]:
        (tmp_ckpt_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_ckpt_dir / name).write_bytes(b"x")
    assert find_checkpoints(tmp_ckpt_dir) == [tmp_ckpt_dir / "a_pretrained_init.pth.tar"]
    backups = tmp_ckpt_dir / "backup_old"
    assert find_checkpoints(backups) == [backups / "20260101T000000Z" / "a_pretrained_init.pth.tar"]


def test_find_checkpoints_empty_and_missing(tmp_ckpt_dir):
    (tmp_ckpt_dir / "readme.txt").write_text("x")
    with pytest.raises(CheckpointNotFoundError) as err:
        find_checkpoints(tmp_ckpt_dir)
    assert str(err.value) == (
        f"no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)}) under {tmp_ckpt_dir}; "
        "pass a folder that holds some, or a file"
    )
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        find_checkpoints(tmp_ckpt_dir / "missing")


# --- import cost ------------------------------------------------------------------------------------


def test_safetensors_path_never_imports_torch(tmp_ckpt_dir, tiny_state_dict):
    path = save_st(tmp_ckpt_dir / "m.safetensors", {**tiny_state_dict, "h": torch.ones(2).bfloat16()})
    code = (
        "import sys\n"
        "from ckpttool.loading import load_checkpoint\n"
        f"with load_checkpoint({str(path)!r}) as c:\n"
        "    assert c.array('h').tolist() == [1.0, 1.0]\n"
        "    assert sum(a.size for _, a in c.iter_arrays()) == 26\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_safetensors_header_length_with_pickle_like_first_byte(tmp_ckpt_dir):
    blob = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    blob = blob.ljust(0x180)  # length 0x0180: first byte 0x80, like a pickle's PROTO opcode
    path = tmp_ckpt_dir / "m.pth"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + np.array([1.5, -2], dtype="<f4").tobytes())
    with load_checkpoint(path) as ckpt:
        assert ckpt.format == "safetensors"
        assert ckpt.array("w").tolist() == [1.5, -2.0]


def test_benign_protocol_4_zip_is_reported_not_loaded_unsafely(tmp_ckpt_dir, recwarn):
    path = save_zip(tmp_ckpt_dir / "p4.pth", {"w": torch.ones(2)}, pickle_protocol=4)
    with pytest.raises(CheckpointFormatError) as err:
        load_checkpoint(path)
    assert str(err.value) == (
        f"{path} uses pickle opcode FRAME (protocol 4), which torch's weights-only loader does not accept "
        "either (torch.save writes protocol 2); re-save it with torch.save(model.state_dict())"
    )
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]


def test_check_torch_file_applies_the_reader_checks_to_any_torch_file(tmp_path):
    """The runner's resume checkpoints (optimizer + RNG state) go through the same checks first."""
    import random as _random

    from ckpttool.formats.dispatch import check_torch_file

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    payload = {"format_version": 1, "model": net.state_dict(), "optimizer": opt.state_dict(),
               "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": _random.getstate()}}
    torch.save(payload, tmp_path / "checkpoint.pt")
    check_torch_file(tmp_path / "checkpoint.pt")  # passes
    torch.save({"x": torch.ones(1, 4).expand(4096, 4)}, tmp_path / "bad.pt")
    with pytest.raises(UnsafeCheckpointError, match="overlapping strides"):
        check_torch_file(tmp_path / "bad.pt")


def test_a_tensor_under_an_object_key_is_refused(tmp_path):
    """Its name would be str() of an object (a memory address): not stable across runs (issue 19 fuzzing)."""
    import torch

    path = tmp_path / "odd.pth"
    torch.save({"w": torch.ones(2), (1, 2): torch.ones(2)}, path)
    with pytest.raises(CheckpointFormatError, match="holds a tensor under a key that is a tuple, not a name"):
        load_checkpoint(path)
    torch.save({"w": torch.ones(2), 3: torch.zeros(1)}, path)  # an int key is a name ("3")
    with load_checkpoint(path) as ckpt:
        assert [t.name for t in ckpt.tensors] == ["w", "3"]
