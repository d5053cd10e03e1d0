"""Differential test of ckpttool's torch-free reader against ``torch.load(weights_only=True)``.

On the checkpoint fixtures (every dtype, both torch formats, wrappers, views, Parameters,
metadata), a slice of the fuzz corpus and the hostile-pickle set, the two either both refuse or
give the same names, shapes, dtypes and bytes. The only other outcome allowed is a refusal of
ours *by design*, where torch loads: a documented hardening (limits, overlapping strides, sizes
that disagree with the storage, payload pickles torch never reads); the counts are printed.
A file we load and torch refuses always fails the test.
"""

from __future__ import annotations

import argparse
import pickle
import random
from collections import Counter
from pathlib import Path

import _attacks as A
import numpy as np
import pytest
import torch
from _parity import ours, theirs

from ckpttool.errors import UnsafeCheckpointError
from ckpttool.formats.limits import CheckpointLimitError

# Our refusals where torch loads, each a documented hardening (SECURITY.md).
BY_DESIGN = (
    "overlapping strides",  # one stored value read many times (expand views)
    "but its member holds",  # a storage member whose size disagrees with the pickle's claim
    "more than the file",  # a legacy storage claiming more than the file
    "carries attributes",  # an OrderedDict BUILD state other than _metadata
    "two zip members of the same name",  # ambiguous: readers disagree on which copy is meant
    "Bad CRC-32",  # a corrupt data.pkl (torch does not check its CRC)
    "unsupported pickle protocol",  # a PROTO opcode above 5 (torch only warns)
    # issue 19: where torch's own loaders disagree (mmap=True) or another reader would read other bytes
    "is compressed",  # a deflated storage: torch's mmap=True reads the compressed bytes as values
    "(ignoring case)",  # two members torch cannot tell apart
    "after its zip end record",  # a zip comment or appended data
)

FUZZ_FILES = 400


def compare(path: Path) -> str:
    """The outcome for one file; raises AssertionError on a disagreement."""
    mine, got = ours(path)
    torch_kind, expected = theirs(path)
    if mine == "refused" and torch_kind == "refused":
        return "both refused"
    if mine == "loaded" and torch_kind == "loaded":
        assert got == expected, f"{path.name}: our reader and torch differ"
        return "same tensors"
    if mine == "loaded":
        raise AssertionError(f"{path.name}: we load what torch refuses ({expected})")
    message = str(got)
    assert isinstance(got, UnsafeCheckpointError | CheckpointLimitError) or any(
        reason in message for reason in BY_DESIGN
    ), f"{path.name}: we refuse what torch loads, without a documented reason: {message}"
    return "refused by design"


def fixture_files(folder: Path) -> list[Path]:
    """The suite's kinds of real checkpoints, as torch.save writes them (zip and legacy)."""
    gen = torch.Generator().manual_seed(0)
    dtypes = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32,
              torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128,
              torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz,
              torch.float8_e8m0fnu, torch.uint16, torch.uint32, torch.uint64]  # fmt: skip
    base = torch.randn(6, 5, generator=gen)
    every_dtype = {str(d): (base * 3).to(d) for d in dtypes}
    big = torch.randn(64, 32, generator=gen)
    objects = {
        "dtypes": every_dtype,
        "wrapped": {"state_dict": A.benign_state_dict(), "epoch": 3, "args": argparse.Namespace(lr=0.1)},
        "ema": {"state_dict": A.benign_state_dict(), "state_dict_ema": A.benign_state_dict()},
        "nested": {"model": {"state_dict": {"a": {"b": torch.ones(3)}}}, "best": np.float64(0.5),
                   "hist": np.arange(4, dtype=np.float32)},
        "views": {"whole": big, "rows": big[8:16], "cols": big[:, 3], "t": big.t(), "step": big[::2, ::3]},
        "params": {"p": torch.nn.Parameter(torch.ones(4)), "m": torch.nn.Linear(3, 2).state_dict()},
        "scalars_and_empty": {"s": torch.tensor(2.5), "e": torch.zeros(0, 3), "i": torch.tensor(7)},
        "optimizer": {"model_state_dict": A.benign_state_dict(),
                      "optimizer_state_dict": torch.optim.Adam(torch.nn.Linear(2, 2).parameters()).state_dict()},
        "lightning": {"state_dict": {"model.fc.weight": torch.ones(2, 2)}, "pytorch-lightning_version": "2.4",
                      "optimizer_states": [], "lr_schedulers": []},
        "bn": torch.nn.BatchNorm1d(4).state_dict(),
        "expand": {"x": torch.ones(1, 4).expand(1000, 4)},
    }
    files = []
    for name, obj in objects.items():
        files.append(A.write_torch(folder / f"{name}.pth", obj))
        files.append(A.write_torch(folder / f"{name}.pt", obj, legacy=True))
    files.append(A.write_torch(folder / "p4.pth", A.benign_state_dict(), protocol=4))
    return files


def hostile_files(folder: Path) -> list[Path]:
    files = []
    marker = folder / "pwned"
    for name, payload in A.payloads(marker).items():
        for legacy in (False, True):
            sd = A.benign_state_dict()
            files.append(A.write_torch(folder / f"{name}-{legacy}.pth", {"state_dict": sd, "x": payload.obj},
                                       legacy=legacy))
        files.append(A.torch_zip_with_data_pkl(folder / f"{name}-data.pth", pickle.dumps(payload.obj, protocol=2),
                                               folder))
        files.append(A.torch_zip_with_extra_pkl(folder / f"{name}-extra.pth",
                                                pickle.dumps({"x": payload.obj}, protocol=4), folder))
    for protocol in (2, 3, 4, 5):
        data, _ = A.protocol_payload(marker, protocol)
        files.append(A.torch_zip_with_data_pkl(folder / f"proto{protocol}.pth", data, folder))
    return files


def fuzz_files(folder: Path, n: int) -> list[Path]:
    mutator = A.Mutator(folder / "pwned", random.Random(1234))
    files = []
    for i in range(n):
        kind = ("torch-zip", "torch-legacy")[i % 2]
        data = mutator.torch_zip() if kind == "torch-zip" else mutator.legacy_file()
        path = folder / f"fuzz{i}.pth"
        path.write_bytes(data)
        files.append(path)
    return files


@pytest.mark.parametrize("corpus", ["fixtures", "hostile", "fuzz"])
def test_reader_agrees_with_torch_weights_only(tmp_path, monkeypatch, corpus):
    monkeypatch.setenv("BROWSER", "touch %s")
    build = {"fixtures": fixture_files, "hostile": hostile_files,
             "fuzz": lambda f: fuzz_files(f, FUZZ_FILES)}[corpus]
    files = build(tmp_path)
    outcomes = {}
    for path in files:
        try:
            outcomes[path.name] = compare(path)
        except RecursionError:  # torch's own unpickler on deep nesting: a refusal of its own
            outcomes[path.name] = "both refused"
    counts = Counter(outcomes.values())
    print(f"\ndifferential {corpus}: {len(files)} files, {dict(counts)}")
    assert not (tmp_path / "pwned").exists()
    if corpus == "fixtures":
        special = {
            "expand.pth": "refused by design",  # a stride-0 view: overlapping strides
            "expand.pt": "refused by design",
            "dtypes.pt": "both refused",  # legacy files cannot hold untyped storages (float8, uint16...)
            "p4.pth": "both refused",  # protocol 4: torch's weights-only unpickler lacks FRAME
        }
        assert outcomes == {name: special.get(name, "same tensors") for name in outcomes}
    if corpus == "hostile":
        assert counts["same tensors"] == 0
