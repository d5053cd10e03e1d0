"""Issue 19: parity with the formats' own loaders, by structure-aware differential fuzzing.

A fixed seed, files generated until the budget is spent (the same prefix of one deterministic
sequence on every machine; a slower machine runs fewer). For every file ckpttool's reader accepts,
``torch.load(weights_only=True)`` with and without ``mmap=True`` (``safetensors`` for its files)
refuses it or returns exactly the same tensors; ckpttool never raises anything but its typed
errors. ``benchmarks/differential_fuzz.py`` is the long run (README, SECURITY.md).
"""

from __future__ import annotations

import time

import _structure_fuzz as F

BUDGET_S = 45
SEED = 19


def test_every_file_ckpttool_accepts_loads_the_same_in_torch(tmp_path):
    fuzzer, tally = F.StructureFuzzer(SEED), F.Tally()
    path = tmp_path / "fuzzed.bin"
    deadline = time.perf_counter() + BUDGET_S
    while time.perf_counter() < deadline:
        kind, mutations, data = fuzzer.next()
        path.write_bytes(data)
        F.check(path, kind, mutations, tally)  # ckpttool raising an untyped error fails here
    print(f"\ndifferential fuzz: {tally.to_dict()}")
    assert tally.differences == []
    # the run means something: many files, each format, both outcomes on both sides
    assert tally.files >= 300
    assert all(tally.by_format[k] >= 30 for k in ("zip", "legacy", "safetensors"))
    assert tally.same >= 30 and tally.ours["refused"] >= 30
    assert tally.torch["torch loaded"] >= 30 and tally.torch["torch refused"] >= 30
