"""A fork server for crash and concurrency tests: imports torch/timm/ckpttool once, then forks workers.

Each worker is a real process doing real writes through ckpttool's public functions; the harness
(``_crash.py``) kills it with SIGKILL at a random moment. Forking from a warm parent makes a kill
cost milliseconds instead of the ~1.5-3 s a fresh ``python -m ckpttool`` spends importing torch, so
the CI run can afford several kills per operation and the soak hundreds. The parent never runs a
torch op (no thread pools exist at fork time); each worker limits torch to one thread.

Protocol (JSON lines): stdin ``{"op": ..., "dir": ..., "args": {...}, "n": 1}`` -> stdout
``{"pids": [...]}`` right after forking, then ``{"exits": [status, ...]}`` when all have ended
(status as ``os.waitstatus_to_exitcode``: negative = killed by that signal).

Operations (each loops ``iters`` times, alternating two deterministic versions A/B, and appends one
line per completed step to ``<dir>/log-<pid>.txt``):
    generate  generate_init(seed 1 / 2, force=True) into <dir>/init_model/x.pth.tar (fixed clock)
    backup    rewrite <dir>/init_model/w.safetensors (a new content each step), backup_file it
    restore   restore_backup(id A / id B, to=<dir>/init_model/t.safetensors)
    runner    CheckpointWriter(background=True).submit(<dir>/run/checkpoint.pt, payload A / B)
    concurrent  generate_init(seed, force=True) on a shared name, then backup_file of a shared file
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import timm  # noqa: F401 - imported once here, inherited by every worker
import torch

import ckpttool.generate as gen
from ckpttool.backup import backup_file, restore_backup
from ckpttool.generate import GenerateRequest, generate_init, parse_model_kwargs
from ckpttool.hashing import file_sha256
from ckpttool.verify import judge_file  # noqa: F401 - warm import for backup's verdict
from pruning_runner.checkpoint import FORMAT_VERSION, CheckpointWriter

TINY = '{"depth": 2, "embed_dim": 64, "num_heads": 2}'
_FIXED = _dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=_dt.timezone.utc)


class _FixedClock(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return _FIXED


def _fix_generate_clock() -> None:
    """generate stores created_utc in the file; a fixed clock makes seed 1 / seed 2 byte-identical each time."""

    class _Module:
        datetime = _FixedClock
        timezone = _dt.timezone

    gen._dt = _Module


def _log(folder: Path, text: str) -> None:
    fd = os.open(folder / f"log-{os.getpid()}.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)


def _request(out: Path, seed: int) -> GenerateRequest:
    return GenerateRequest(arch="vit_tiny_patch16_224", dataset="cifar10", init="random", seed=seed, img_size=32,
                           patch_size=4, model_kwargs=parse_model_kwargs(TINY), out=out, force=True)


def safetensors_blob(seed: int, size: int = 16384) -> bytes:
    """A valid safetensors file of float32 noise, content fixed by ``seed`` (numpy only)."""
    import struct

    values = np.random.default_rng(seed).standard_normal(size // 4).astype("<f4")
    header = json.dumps({"blocks.0.mlp.fc1.weight": {"dtype": "F32", "shape": [size // 64, 16],
                                                     "data_offsets": [0, values.nbytes]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + values.tobytes()


def runner_payload(version: int) -> dict:
    gen_ = torch.Generator().manual_seed(version)
    return {"format_version": FORMAT_VERSION, "state": version, "epoch": 3 * version,
            "model": {f"blocks.{i}.w": torch.randn(64, 64, generator=gen_) for i in range(4)}}


def op_generate(folder: Path, iters: int, start: int = 0) -> None:
    out = folder / "init_model" / "x.pth.tar"
    for i in range(start, start + iters):
        result = generate_init(_request(out, 1 + i % 2))
        _log(folder, f"generate {i} {result.sha256}")


def op_backup(folder: Path, iters: int, start: int = 0) -> None:
    src = folder / "init_model" / "w.safetensors"
    src.parent.mkdir(parents=True, exist_ok=True)
    from ckpttool._atomic import atomic_write

    for i in range(start, start + iters):
        with atomic_write(src) as f:
            f.write(safetensors_blob(start * 100003 + i))
        record = backup_file(src, reason=f"step {start}-{i}")
        _log(folder, f"backup {record.id} {record.sha256}")


def op_restore(folder: Path, iters: int, start: int = 0) -> None:
    ids = json.loads((folder / "restore_ids.json").read_text())
    target = folder / "init_model" / "t.safetensors"
    root = folder / "init_model"
    for i in range(start, start + iters):
        result = restore_backup(ids[i % 2], to=target, root=root)
        _log(folder, f"restore {i} {result.record.sha256}")


def op_restore_setup(folder: Path, iters: int = 0, start: int = 0) -> None:
    """Two backups (A, B) of t.safetensors to restore back and forth; t holds A at the end."""
    root = folder / "init_model"
    root.mkdir(parents=True, exist_ok=True)
    target = root / "t.safetensors"
    ids = []
    for seed in (2, 1):
        target.write_bytes(safetensors_blob(1000 + seed))
        ids.append(backup_file(target, reason=f"setup {seed}").id)
    (folder / "restore_ids.json").write_text(json.dumps(ids[::-1]))  # [A, B]


def op_runner(folder: Path, iters: int, start: int = 0) -> None:
    path = folder / "run" / "checkpoint.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = CheckpointWriter(background=True)
    for i in range(start, start + iters):
        writer.submit(path, runner_payload(i % 2))
        writer.wait()
        _log(folder, f"runner {i}")


def op_candidates(folder: Path, iters: int = 0, start: int = 0) -> None:
    """The two complete versions each operation alternates between, written once in scratch folders."""
    shas = {}
    for seed in (1, 2):
        shas[f"generate{seed}"] = generate_init(_request(folder / f"gen{seed}" / "x.pth.tar", seed)).sha256
    for v in (0, 1):
        path = folder / f"runner{v}" / "checkpoint.pt"
        path.parent.mkdir(parents=True)
        w = CheckpointWriter(background=False)
        w.submit(path, runner_payload(v))
        shas[f"runner{v}"] = file_sha256(path)
    for seed in (1, 2):
        import hashlib

        shas[f"restore{seed}"] = hashlib.sha256(safetensors_blob(1000 + seed)).hexdigest()
    (folder / "candidates.json").write_text(json.dumps(shas))


def op_concurrent(folder: Path, iters: int = 1, start: int = 0) -> None:
    out = folder / "init_model" / "x.pth.tar"
    shared = folder / "init_model" / "shared.safetensors"
    result = generate_init(_request(out, 100 + start))
    _log(folder, f"generated {start} {result.sha256}")
    record = backup_file(shared, reason=f"proc {start}")
    _log(folder, f"backed-up {start} {record.id} {record.sha256}")


OPS = {"generate": op_generate, "backup": op_backup, "restore": op_restore, "restore_setup": op_restore_setup,
       "runner": op_runner, "candidates": op_candidates, "concurrent": op_concurrent}


def _worker(cmd: dict, index: int) -> None:
    torch.set_num_threads(1)
    folder = Path(cmd["dir"])
    args = dict(cmd.get("args", {}))
    args["start"] = args.get("start", 0) + index
    OPS[cmd["op"]](folder, **args)


def main() -> None:
    _fix_generate_clock()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        pids = []
        for index in range(int(cmd.get("n", 1))):
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    _worker(cmd, index)
                except BaseException as e:  # noqa: BLE001 - reported through the exit code
                    sys.stderr.write(f"worker {cmd['op']} failed: {type(e).__name__}: {e}\n")
                    sys.stderr.flush()
                    code = 3
                os._exit(code)
            pids.append(pid)
        print(json.dumps({"pids": pids, "t": time.monotonic()}), flush=True)
        exits = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
        print(json.dumps({"exits": exits}), flush=True)


if __name__ == "__main__":
    main()
