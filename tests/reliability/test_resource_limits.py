"""Absurd size claims are refused before anything is allocated, and `verify`/`inspect` stay within
bounded memory on a file larger than one would load whole.

The allocation proofs run in a child process under ``RLIMIT_AS`` = its current address space +
256 MiB: a loader that tried to honour a claim of terabytes would fail with MemoryError (which the
library would wrap), so each case must end with the library's own refusal message instead, and the
child's peak RSS must not move. The ~100 MB memory case runs here; the soak runs 400 MB.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import _attacks as A
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}

_CHILD = r"""
import json, resource, sys
import torch  # imported before the limit: its own mappings are not what is measured
from ckpttool.loading import load_checkpoint
from ckpttool.torch_state import load_state_dict
from ckpttool.errors import CkptError

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

vm = status("VmSize:")
resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), resource.RLIM_INFINITY))
out = {}
for path in sys.argv[1:]:
    hwm = status("VmHWM:")
    results = []
    for load in (load_checkpoint, load_state_dict):
        try:
            load(path)
            results.append(["loaded", ""])
        except CkptError as e:
            results.append([type(e).__name__, str(e)])
        except BaseException as e:
            results.append(["ESCAPED " + type(e).__name__, str(e)])
    out[path] = {"results": results, "rss_growth": status("VmHWM:") - hwm}
print(json.dumps(out))
"""


def _numel_to_huge(pkl: bytes, numel: int) -> bytes:
    """Make every storage's persistent id claim ``numel`` elements (the int pushed just before BINPERSID)."""
    ops = A.pickle_ops(pkl)
    huge = b"\x8a\x06" + numel.to_bytes(6, "little")
    for i, op in enumerate(ops):
        if op[:1] == b"Q":  # BINPERSID
            j = max(k for k in range(i) if ops[k][:1] in (b"K", b"M", b"J", b"\x8a"))
            ops[j] = huge
    return b"".join(ops)


def hostile_size_files(folder: Path) -> dict[str, str]:
    """file -> the refusal its message must contain."""
    import torch

    files = {}
    st = A.raw_safetensors(folder / "trillion.safetensors",
                           {"w": {"dtype": "F32", "shape": [10**12], "data_offsets": [0, 4 * 10**12]}}, bytes(64))
    files[str(st)] = "points past the end of the file"
    src = A.write_torch(folder / "src.pth", {"w": torch.ones(4096)})
    members = A.zip_members(src.read_bytes())
    data_pkl = next(n for n, _ in members if n.endswith("data.pkl"))
    zp = folder / "huge_storage.pth"
    huge = b"\x8a\x06" + (2**40).to_bytes(6, "little")  # storage and tensor both claim 2**40 elements
    pkl = b"".join(huge if op == b"M\x00\x10" else op for op in A.pickle_ops(dict(members)[data_pkl]))
    zp.write_bytes(A.build_zip([(n, pkl if n == data_pkl else d) for n, d in members]))
    files[str(zp)] = r"claims 1099511627776 float32 elements \(4398046511104 bytes\) but its member holds 16384 bytes"
    legacy = A.legacy_bytes()
    parts = A.legacy_parts(legacy)
    parts[3] = _numel_to_huge(parts[3], 2**40)
    lp = folder / "huge_storage.pt"
    lp.write_bytes(b"".join(parts))
    files[str(lp)] = r"claims 4398046511104 bytes, more than the file"
    parts = A.legacy_parts(legacy)  # an opcode claiming a 2**62-byte string inside the object pickle
    ops = A.pickle_ops(parts[3])
    parts[3] = b"".join([*ops[:2], b"\x8d" + struct_q(1 << 62) + b"abc", *ops[2:]])
    bp = folder / "huge_string.pt"
    bp.write_bytes(b"".join(parts))
    files[str(bp)] = r"is not a readable torch checkpoint \(.*(string|truncated|data)"
    return files


def struct_q(n: int) -> bytes:
    import struct

    return struct.pack("<Q", n)


def test_absurd_size_claims_are_refused_before_allocating(tmp_path):
    files = hostile_size_files(tmp_path)
    r = subprocess.run([sys.executable, "-c", _CHILD, *files], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, **ONE_THREAD}, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    for path, wanted in files.items():
        for kind, message in out[path]["results"]:
            assert kind == "CheckpointFormatError", (path, kind, message)
            assert re.search(wanted, message), (path, message)
            assert "MemoryError" not in message and "allocate" not in message, message
        assert out[path]["rss_growth"] < 64 << 20, (path, out[path]["rss_growth"])


def _write_big_safetensors(path: Path, tensors: int, mib_each: int = 4) -> int:
    import struct

    import numpy as np

    rows = mib_each * 256
    nbytes = rows * 1024 * 4
    header = {f"blocks.{i}.mlp.fc1.weight": {"dtype": "F32", "shape": [rows, 1024],
                                              "data_offsets": [i * nbytes, (i + 1) * nbytes]} for i in range(tensors)}
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    rng = np.random.default_rng(0)
    block = rng.standard_normal((rows, 1024), dtype=np.float32)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for i in range(tensors):
            f.write((block * (1 + i / tensors)).tobytes())
    return path.stat().st_size


def peak_rss(argv: list[str]) -> tuple[int, subprocess.CompletedProcess]:
    """Peak RSS (bytes) of one child process, measured in a fresh wrapper so RUSAGE_CHILDREN is its alone."""
    wrapper = ("import resource, subprocess, sys, json; r = subprocess.run(sys.argv[1:], capture_output=True, "
               "text=True); print(json.dumps([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, "
               "r.returncode, r.stdout[-2000:], r.stderr[-2000:]]))")
    r = subprocess.run([sys.executable, "-c", wrapper, *argv], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, **ONE_THREAD, "COLUMNS": "200"}, timeout=300)
    rss, code, out, err = json.loads(r.stdout)
    return rss, subprocess.CompletedProcess(argv, code, out, err)


@pytest.mark.skipif(resource.getrlimit(resource.RLIMIT_FSIZE)[0] not in (resource.RLIM_INFINITY,)
                    and resource.getrlimit(resource.RLIMIT_FSIZE)[0] < 200 << 20, reason="file size limit")
def test_verify_and_inspect_memory_is_bounded_on_a_100_mb_file(tmp_path):
    path = tmp_path / "big.safetensors"
    size = _write_big_safetensors(path, tensors=25)
    baseline, _ = peak_rss([sys.executable, "-c", "import ckpttool.cli._root, ckpttool.verify, ckpttool.verdict.stats, "
                                                  "ckpttool.inspection, numpy, safetensors"])
    for command in (["verify", str(path)], ["inspect", str(path), "--top", "3"]):
        rss, r = peak_rss([sys.executable, "-m", "ckpttool", *command])
        assert r.returncode == 0, r.stderr
        # one 4 MiB tensor (and its float64 work copies) in memory at a time, not the 100 MB file
        assert rss - baseline < size // 2, (command, rss - baseline, size)
