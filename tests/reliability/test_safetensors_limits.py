"""Hostile safetensors headers: each is one clean CheckpointFormatError naming the file, before any
tensor is read. (Basic cases -- huge length prefix, header past EOF, offsets past EOF, a leading gap,
dtype F4, span/shape disagreement -- are in tests/test_loading.py; these are the rest.)
"""

from __future__ import annotations

import struct

import _attacks as A
import numpy as np
import pytest

from ckpttool.errors import CheckpointFormatError
from ckpttool.loading import load_checkpoint
from ckpttool.torch_state import load_state_dict

F32 = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}


def _refused(path, pattern: str) -> str:
    for load in (load_checkpoint, load_state_dict):
        with pytest.raises(CheckpointFormatError, match=pattern) as err:
            load(path)
        message = str(err.value)
        assert str(path) in message and "\n" not in message
    return message


def test_header_one_byte_over_the_100_mb_limit_is_refused_before_reading_it(tmp_path):
    path = tmp_path / "big.safetensors"
    n = 100_000_001
    with open(path, "wb") as f:  # a sparse file really that long, so only the limit can refuse it
        f.write(struct.pack("<Q", n) + b"{")
        f.truncate(8 + n + 16)
    _refused(path, r"its header claims 100000001 bytes, more than the 100000000 safetensors allows")


@pytest.mark.parametrize(
    ("case", "header", "size", "pattern"),
    [
        ("overlap", {"a": F32, "b": {**F32, "data_offsets": [8, 24]}}, 24, r"invalid offset for tensor `b`"),
        ("same-span", {"a": F32, "b": F32}, 16, r"invalid offset for tensor"),
        ("gap-between", {"a": F32, "b": {**F32, "data_offsets": [20, 36]}}, 36, r"invalid offset for tensor `b`"),
        ("trailing-bytes", {"a": F32}, 24, r"not fully covered"),
        ("span-not-itemsize", {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 6]}}, 6,
         r"claims shape \[1\] of F32 \(4 bytes\) but spans 6 bytes"),
        ("reversed-offsets", {"a": {**F32, "data_offsets": [16, 0]}}, 16, r"has invalid data_offsets \[16, 0\]"),
        ("negative-offset", {"a": {**F32, "data_offsets": [-16, 0]}}, 16, r"invalid data_offsets \[-16, 0\]"),
        ("float-offset", {"a": {**F32, "data_offsets": [0, 16.0]}}, 16, r"invalid data_offsets \[0, 16.0\]"),
        ("three-offsets", {"a": {**F32, "data_offsets": [0, 8, 16]}}, 16, r"invalid data_offsets"),
        ("metadata-int", {"__metadata__": {"k": 1}, "a": F32}, 16, r"__metadata__ must map strings to strings"),
        ("metadata-nested", {"__metadata__": {"k": {"x": "y"}}, "a": F32}, 16, r"must map strings to strings"),
        ("metadata-list", {"__metadata__": ["k"], "a": F32}, 16, r"is not a valid safetensors file"),
        ("metadata-str", {"__metadata__": "k", "a": F32}, 16, r"must map strings to strings"),
        ("dtype-lowercase", {"a": {**F32, "dtype": "f32"}}, 16, r"has dtype 'f32', which ckpttool cannot read"),
        ("dtype-number", {"a": {**F32, "dtype": 7}}, 16, r"has dtype 7, which ckpttool cannot read"),
        ("dtype-missing", {"a": {"shape": [4], "data_offsets": [0, 16]}}, 16, r"has dtype None"),
        ("shape-negative", {"a": {**F32, "shape": [-4]}}, 16, r"has an invalid shape \[-4\]"),
        ("shape-bool", {"a": {**F32, "shape": [True, 4]}}, 16, r"has an invalid shape \[true, 4\]|invalid shape"),
        ("shape-string", {"a": {**F32, "shape": "4"}}, 16, r"has an invalid shape '4'"),
        ("shape-bigger", {"a": {**F32, "shape": [5]}}, 16, r"claims shape \[5\] of F32 \(20 bytes\) but spans 16"),
        ("shape-overflow", {"a": {**F32, "shape": [2**32, 2**32], "data_offsets": [0, 0]}}, 0,
         r"claims shape \[4294967296, 4294967296\] of F32 \(73786976294838206464 bytes\)"),
        ("entry-not-object", {"a": [0, 16]}, 16, r"tensor 'a' has no dtype/shape/data_offsets entry"),
        ("header-array", [F32], 16, r"is not a checkpoint: its content is neither"),  # not '{': not detected
    ],
)
def test_header_lies_are_clean_format_errors(tmp_path, case, header, size, pattern):
    path = A.raw_safetensors(tmp_path / f"{case}.safetensors", header, bytes(size))
    _refused(path, pattern)


def test_duplicate_names_are_refused(tmp_path):
    """JSON keeps the last of two equal keys; safetensors' own check then finds the first span uncovered."""
    text = '{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, ' \
           '"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}'
    path = A.raw_safetensors(tmp_path / "dup.safetensors", text, bytes(16))
    _refused(path, r"is not a valid safetensors file \(")


def test_header_not_utf8_and_not_json(tmp_path):
    _refused(A.raw_safetensors(tmp_path / "u.safetensors", b"{\xff\xfe}"), r"its header is not JSON")
    _refused(A.raw_safetensors(tmp_path / "j.safetensors", b'{"a": '), r"its header is not JSON")


def test_unaligned_offsets_are_valid_safetensors_and_read_exactly(tmp_path):
    """The format does not require alignment (safetensors itself accepts this file): a float32 tensor
    starting at byte 3 is read with its exact values, not refused and not misread."""
    values = np.array([1.5, -2.25, 3e-5], dtype="<f4")
    header = {"pad": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
              "w": {"dtype": "F32", "shape": [3], "data_offsets": [3, 15]}}
    path = A.raw_safetensors(tmp_path / "unaligned.safetensors", header, b"\x01\x02\x03" + values.tobytes())
    with load_checkpoint(path) as ckpt:
        np.testing.assert_array_equal(ckpt.array("w"), values)
    assert load_state_dict(path)["w"].tolist() == values.tolist()


def test_a_trillion_element_tensor_is_refused_from_the_header_alone(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [10**12], "data_offsets": [0, 4 * 10**12]}}
    path = A.raw_safetensors(tmp_path / "t.safetensors", header, bytes(64))
    _refused(path, r"tensor 'w' points past the end of the file \(bytes 0\.\.4000000000000 of a data section of 64\)")
