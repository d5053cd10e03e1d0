"""reliability_soak: the long version of tests/reliability -- fuzzing, kill -9, concurrency, big files.

Contract
  Measures, on this machine, in one run:
    * fuzz     -- --fuzz-examples random mutations of safetensors headers/bytes, torch-zip pickle
                  opcodes and zip structure, legacy pickle opcodes (tests/reliability/_attacks.py
                  Mutator), each read completely (load_checkpoint + every array + load_state_dict)
                  in-process under a per-input SIGALRM bound (--fuzz-timeout). Counts: inputs tried,
                  non-clean crashes (any exception that is not a CkptError; must be 0), hangs (must
                  be 0), unsafe executions (a payload's marker file appeared; must be 0).
    * kills    -- --kills SIGKILLs at random moments of each of generate, backup, restore and a
                  runner checkpoint write (forked workers of tests/reliability/_zygote.py). Counts:
                  torn files (destination neither the old nor the new version), unparsable
                  manifests, lost backups, missing / duplicate backup records (all must be 0);
                  stale manifest entries and leftover dot-temp files are reported, not failures.
    * procs    -- --rounds rounds of --procs processes generating and backing up the same names
                  at once: final file is one of the candidates and loads; backup records ==
                  attempts, no duplicates.
    * bigfile  -- peak RSS of `ckpttool verify` on a --big-mb safetensors file, against the bare
                  interpreter (same imports), as a fraction of the file size.
    * allowed  -- --allowed-examples torch zips whose data.pkl is built only from globals the loader
                  allows (tests/reliability/_allowed.py: REDUCE / NEWOBJ / BUILD over every allowed
                  callable with adversarial arguments, non-zero pointer-sized byte strings included),
                  after the named findings of issue 11. Read completely in a separate worker process
                  (restarted if it dies). Counts, all must be 0: signals (the worker killed by one),
                  tracebacks (an exception that is not a CkptError), runs over 10 s, peak RSS above
                  4x the file size + 200 MB.
    * names    -- --names random hostile names (control, bidi, surrogate, markup, workflow-command
                  and XML fragments; tests/reliability/_names.py) put into every field a file can
                  name, rendered in every format and as the stderr error line. Counts: names whose
                  output held a raw control character, broke a line, did not parse (must be 0).
  Exit 1 if any must-be-0 figure is not 0.

Usage: python benchmarks/reliability_soak.py [--fuzz-examples 20000] [--kills 50] [--procs 8]
       [--rounds 3] [--big-mb 400] [--names 5000] [--allowed-examples 3000] [--only allowed] [--seed 0]
       [--json OUT]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "reliability"))

import _allowed as W  # noqa: E402
import _attacks as A  # noqa: E402
import _crash as C  # noqa: E402
import _names as N  # noqa: E402

# The worker of the `allowed` row: reads one path per stdin line, answers one JSON line per file.
_WORKER = r"""
import json, sys, time, traceback
from pathlib import Path
from ckpttool.errors import CkptError
from ckpttool.loading import load_checkpoint
for line in sys.stdin:
    path = line.strip()
    try:
        with open("/proc/self/clear_refs", "w") as f:  # reset the peak-RSS watermark (VmHWM)
            f.write("5")
    except OSError:
        pass
    t = time.monotonic()
    try:  # what verify does (load_state_dict shares the reader; it only adds torch.from_numpy)
        with load_checkpoint(Path(path)) as ckpt:
            for _info, _array in ckpt.iter_arrays():
                pass
        kind, detail = "loaded", ""
    except CkptError as e:
        kind, detail = "clean", str(e)[-120:]
    except BaseException as e:
        kind, detail = "traceback", "".join(traceback.format_exception_only(type(e), e))[-300:]
    hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    print(json.dumps({"kind": kind, "detail": detail, "seconds": time.monotonic() - t,
                      "rss": int(hwm.split()[1]) * 1024}), flush=True)
"""

_NAMED = ("object_array_in_set", "object_array_reconstructed", "ordered_dict_hiding_values", "tensor_constructor",
          "bytearray_of_size", "stride_zero_view", "numpy_device_tensor", "sparse_tensor", "opcode_bomb",
          "deep_tuple_key", "meta_tensor")


def allowed(n: int, seed: int, workdir: Path) -> dict:
    """Files built only from allowed globals, each read completely by a worker that may die."""
    import select
    import subprocess

    rng = random.Random(seed)
    pickles = [(name, getattr(W, name)()) for name in _NAMED]
    pickles += [(f"dtype_{d}", W.dtype_tensor(d)) for d in ("complex32", "bits8", "bits16")]
    pickles += [(f"random_{i}", W.random_allowed_pickle(rng)) for i in range(n)]
    counts = collections.Counter()
    examples: dict[str, str] = {}
    worst_rss_ratio = 0.0
    slowest = 0.0
    worker = None
    t0 = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for name, data in pickles:
        path = W.write_zip(workdir / "allowed.pth", data)
        if worker is None or worker.poll() is not None:
            worker = subprocess.Popen([sys.executable, "-c", _WORKER],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        worker.stdin.write(f"{path}\n")
        worker.stdin.flush()
        ready, _, _ = select.select([worker.stdout], [], [], 60)
        line = worker.stdout.readline() if ready else ""
        if not line:  # died (a signal) or hung past 60 s
            if worker.poll() is None:
                worker.kill()
                counts["hangs"] += 1
            else:
                counts["signals"] += 1
            worker.wait()
            keep = workdir / f"allowed-finding-{name}.pth"
            keep.write_bytes(path.read_bytes())
            examples.setdefault(f"{name}: worker exit {worker.returncode}", str(keep))
            worker = None
            continue
        r = json.loads(line)
        counts[r["kind"]] += 1
        slowest = max(slowest, r["seconds"])
        budget = 4 * path.stat().st_size + 200 * 2**20
        worst_rss_ratio = max(worst_rss_ratio, r["rss"] / budget)
        if r["seconds"] > 10:
            counts["over_10s"] += 1
        if r["rss"] > budget:
            counts["over_rss"] += 1
        if r["kind"] == "traceback" or r["seconds"] > 10 or r["rss"] > budget:
            keep = workdir / f"allowed-finding-{name}.pth"
            keep.write_bytes(path.read_bytes())
            examples.setdefault(f"{name}: {r['kind']} {r['detail'][:100]}", str(keep))
    if worker is not None:
        worker.stdin.close()
        worker.wait()
    return {"files": len(pickles), "loaded": counts["loaded"], "clean_errors": counts["clean"],
            "signals": counts["signals"], "tracebacks": counts["traceback"], "hangs": counts["hangs"],
            "over_10s": counts["over_10s"], "over_rss": counts["over_rss"], "slowest_s": round(slowest, 2),
            "worst_rss_vs_budget": round(worst_rss_ratio, 3), "findings": examples,
            "seconds": round(time.monotonic() - t0, 1)}


def fuzz(n: int, seed: int, timeout: float, workdir: Path) -> dict:
    marker = workdir / "pwned"
    mut = A.Mutator(marker, random.Random(seed))
    counts = collections.Counter()
    examples: dict[str, str] = {}
    t0 = time.monotonic()
    for i in range(n):
        kind, data = mut.next()
        path = workdir / f"fuzz.{kind}"
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcome = A.classify(path, seconds=timeout)
        counts[outcome.kind] += 1
        counts[f"{kind}:{outcome.kind}"] += 1
        if outcome.kind in ("crash", "hang"):
            keep = workdir / f"finding-{i}.{kind}"
            keep.write_bytes(data)
            examples.setdefault(outcome.detail[:120], str(keep))
        if marker.exists():
            counts["unsafe"] += 1
            marker.unlink()
    return {"inputs": n, "loaded": counts["loaded"], "clean_errors": counts["clean"], "crashes": counts["crash"],
            "hangs": counts["hang"], "unsafe_executions": counts["unsafe"],
            "per_format": {k: v for k, v in sorted(counts.items()) if ":" in k},
            "findings": examples, "seconds": round(time.monotonic() - t0, 1)}


def kills(z: C.Zygote, n: int, seed: int, workdir: Path) -> dict:
    cands = C.candidates(z, workdir / "candidates")
    out = {}
    for i, op in enumerate(C.OPS):
        t0 = time.monotonic()
        fig = C.kill_series(z, op, workdir / f"kill-{op}", cands, kills=n, seed=seed + i)
        out[op] = {**fig.row(), "failures": fig.failures[:10], "seconds": round(time.monotonic() - t0, 1)}
    return out


def concurrency(z: C.Zygote, procs: int, rounds: int, workdir: Path) -> list[dict]:
    results = []
    for r in range(rounds):
        folder = workdir / f"conc-{r}"
        z.run("generate", folder, iters=1)
        t0 = time.monotonic()
        fig = C.concurrency_round(z, folder, procs, start=r * 100)
        results.append({**{k: v for k, v in vars(fig).items() if k != "failures"}, "failures": fig.failures[:10],
                        "seconds": round(time.monotonic() - t0, 1)})
    return results


def bigfile(mb: int, workdir: Path) -> dict:
    sys.path.insert(0, str(REPO / "tests" / "reliability"))
    from test_resource_limits import _write_big_safetensors, peak_rss

    path = workdir / "big.safetensors"
    size = _write_big_safetensors(path, tensors=max(mb // 4, 1))
    base, _ = peak_rss([sys.executable, "-c", "import ckpttool.cli._root, ckpttool.verify, ckpttool.verdict.stats, numpy, "
                                              "safetensors"])
    rss, r = peak_rss([sys.executable, "-m", "ckpttool", "verify", str(path)])
    path.unlink()
    return {"file_mb": round(size / 1e6, 1), "baseline_rss_mb": round(base / 1e6, 1),
            "verify_rss_mb": round(rss / 1e6, 1), "excess_over_file": round((rss - base) / size, 3),
            "exit_code": r.returncode}


def names(n: int, seed: int, workdir: Path) -> dict:
    import numpy as np
    from safetensors.numpy import save_file

    from ckpttool.verify import verify_file

    path = workdir / "names.safetensors"  # a real report to put the names into
    save_file({"fc.weight": np.random.default_rng(seed).normal(0, 0.02, (16, 16)).astype("float32")}, str(path))
    report = verify_file(path)
    rng = random.Random(seed)
    t0 = time.monotonic()
    unsafe, examples = 0, {}
    for _ in range(n):
        name = N.hostile_name(rng)
        if problems := N.output_problems(report, name):
            unsafe += 1
            examples.setdefault(problems[0][:120], ascii(name))
    return {"names": n, "unsafe_outputs": unsafe, "findings": examples, "seconds": round(time.monotonic() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fuzz-examples", type=int, default=20000)
    ap.add_argument("--fuzz-timeout", type=float, default=10.0, help="seconds per input before it counts as a hang")
    ap.add_argument("--kills", type=int, default=50, help="SIGKILLs per operation")
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="concurrency rounds")
    ap.add_argument("--big-mb", type=int, default=400)
    ap.add_argument("--allowed-examples", type=int, default=3000)
    ap.add_argument("--only", choices=["allowed"], help="run only this row")
    ap.add_argument("--names", type=int, default=5000, help="hostile names rendered in every output format")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(k, "1")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ckpt-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    report: dict = {"config": vars(args) | {"workdir": str(workdir)},
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "python": platform.python_version()}}
    report["allowed"] = allowed(args.allowed_examples, args.seed, workdir)
    a = report["allowed"]
    print(f"allowed globals: {a['files']} files in {a['seconds']} s  loaded {a['loaded']}  clean errors "
          f"{a['clean_errors']}  slowest {a['slowest_s']} s  worst peak RSS / (4x file + 200 MB) "
          f"{a['worst_rss_vs_budget']}")
    for k in ("signals", "tracebacks", "hangs", "over_10s", "over_rss"):
        print(f"  {k.replace('_', ' '):<28}{a[k]:>8}")
    for detail, where in a["findings"].items():
        print(f"  finding: {detail}  ({where})")
    bad_allowed = sum(a[k] for k in ("signals", "tracebacks", "hangs", "over_10s", "over_rss"))
    if args.only == "allowed":
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        return 1 if bad_allowed else 0
    report["fuzz"] = fuzz(args.fuzz_examples, args.seed, args.fuzz_timeout, workdir)
    with C.Zygote(workdir / "zygote.log") as z:
        report["kills"] = kills(z, args.kills, args.seed, workdir)
        report["concurrency"] = concurrency(z, args.procs, args.rounds, workdir)
    report["bigfile"] = bigfile(args.big_mb, workdir) if args.big_mb else None
    report["names"] = names(args.names, args.seed, workdir) if args.names else None
    report["seconds"] = round(time.monotonic() - t0, 1)

    f = report["fuzz"]
    print(f"fuzz: {f['inputs']} inputs in {f['seconds']} s  loaded {f['loaded']}  clean errors {f['clean_errors']}")
    print(f"  {'non-clean crashes':<28}{f['crashes']:>8}\n  {'hangs':<28}{f['hangs']:>8}\n"
          f"  {'unsafe executions':<28}{f['unsafe_executions']:>8}")
    for detail, where in f["findings"].items():
        print(f"  finding: {detail}  ({where})")
    cols = ["kills", "completed", "torn", "manifest_unparsable", "lost_backups", "missing_records",
            "duplicate_records", "stale_manifest_entries", "leftover_temps"]
    print("\nkill -9" + "".join(f"{c.replace('_', ' '):>12.11}" for c in cols))
    for op, row in report["kills"].items():
        print(f"{op:<7}" + "".join(f"{row[c]:>12}" for c in cols))
        for failure in row["failures"]:
            print(f"  {failure}")
    print(f"\nconcurrency ({args.procs} processes x {args.rounds} rounds)")
    for i, c in enumerate(report["concurrency"]):
        print(f"  round {i}: final is a candidate {c['final_is_a_candidate']}, loads {c['final_loads']}, "
              f"backup records {c['backup_records']} / attempts {c['backup_attempts']}, duplicates {c['duplicates']}, "
              f"missing {c['missing']}, manifests parse {c['manifests_parse']}  ({c['seconds']} s)")
        for failure in c["failures"]:
            print(f"    {failure}")
    if report["bigfile"]:
        b = report["bigfile"]
        print(f"\nverify on a {b['file_mb']} MB safetensors file: peak RSS {b['verify_rss_mb']} MB, bare interpreter "
              f"{b['baseline_rss_mb']} MB -> excess {b['excess_over_file']:.1%} of the file (exit {b['exit_code']})")
    if report["names"]:
        nm = report["names"]
        print(f"\nnames: {nm['names']} hostile names in every output format in {nm['seconds']} s: "
              f"unsafe outputs {nm['unsafe_outputs']}")
        for detail, name in nm["findings"].items():
            print(f"  finding: {detail}  (name {name})")
    print(f"\ntotal {report['seconds']} s; workdir {workdir}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    bad = (bad_allowed + f["crashes"] + f["hangs"] + f["unsafe_executions"]
           + sum(r[c] for r in report["kills"].values() for c in cols[2:7])
           + sum(len(c["failures"]) for c in report["concurrency"])
           + (report["names"]["unsafe_outputs"] if report["names"] else 0))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
