"""differential_fuzz: ckpttool's reader against the formats' own loaders on structure-mutated files.

Contract: for every file ckpttool's reader accepts, ``torch.load(f, weights_only=True)`` and
``torch.load(f, weights_only=True, mmap=True)`` (torch zip and legacy files) or
``safetensors.torch.load_file`` (safetensors) either refuse it or return exactly the name ->
(dtype, shape, bytes) mapping ckpttool read; ckpttool never raises anything but its own typed error.
The files are real small checkpoints written by torch.save / safetensors, mutated at the level of
their structure (tests/reliability/_structure_fuzz.py lists every mutation). Reported: files,
differences, crashes, and how many files each side accepted and refused, per format.

The test suite runs the same fuzzer with a fixed seed for ~45 s (tests/reliability/test_differential_fuzz.py).
No dependencies beyond the test suite's.

Usage:
    python benchmarks/differential_fuzz.py --files 100000 --seed 19 [--seconds 3600] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "reliability"))

import _structure_fuzz as F  # noqa: E402
import torch  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=float("inf"), help="stop earlier after this long")
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "differential_fuzz.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    fuzzer, tally, crashes = F.StructureFuzzer(args.seed), F.Tally(), []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.files):
            if time.perf_counter() - start > args.seconds:
                break
            kind, mutations, data = fuzzer.next()
            path = Path(tmp) / f"file{i}.bin"  # the index names the file in a difference: rerun to it
            path.write_bytes(data)
            try:
                F.check(path, kind, mutations, tally)
            except Exception as e:  # noqa: BLE001 - ckpttool raising something untyped: counted
                crashes.append(f"file {i} ({kind}: {'+'.join(mutations)}): {type(e).__name__}: {str(e)[:200]}")
            path.unlink()
            if (i + 1) % 10_000 == 0:
                print(f"{i + 1} files, {len(tally.differences)} differences, {len(crashes)} crashes, "
                      f"{time.perf_counter() - start:.0f} s", flush=True)
    result = {
        **tally.to_dict(),
        "crashes": len(crashes),
        "first_crashes": crashes[:20],
        "seconds": round(time.perf_counter() - start, 1),
        "config": {"seed": args.seed, "files_asked": args.files, "seconds_limit": args.seconds},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 1 if tally.differences or crashes else 0


if __name__ == "__main__":
    raise SystemExit(main())
