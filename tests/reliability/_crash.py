"""Kill -9 harness and the invariants checked after every kill (used by the tests and the soak).

A :class:`Zygote` (``_zygote.py``) forks real worker processes that loop one operation
(generate / backup / restore / runner checkpoint write), alternating two deterministic versions A
and B; the harness SIGKILLs the worker after a random delay and then checks, on disk:

* the destination holds A or B, whole (its sha256 is one of the two): otherwise a *torn* file;
* every manifest still parses (``init_model/MANIFEST.json``, ``backup_old/MANIFEST.json``);
* nothing in ``backup_old`` is lost: every record ever seen is still listed, and its object exists
  with its sha256; every backup a worker reported done is recorded exactly once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OPS = ("generate", "backup", "restore", "runner")


class Zygote:
    """The fork server process; use as a context manager."""

    def __init__(self, log: Path):
        self._stderr = open(log, "wb")  # noqa: SIM115 - closed in close()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
               # one BLAS/OpenMP thread per worker: several workers share 2 cores, and oversubscribed
               # BLAS threads make the verdict's small eigen-solves ~50x slower there
               **{k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
        self.proc = subprocess.Popen([sys.executable, str(HERE / "_zygote.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True, cwd=REPO, env=env)
        self._read()  # {"ready": true}
        self.log = log

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fork server died: {self.log_text()}")
        return json.loads(line)

    def log_text(self) -> str:
        self._stderr.flush()
        return Path(self._stderr.name).read_text(errors="replace")[-3000:]

    def run(self, op: str, folder: Path, *, n: int = 1, kill_after: float | None = None, **args) -> list[int]:
        """Fork ``n`` workers for ``op``; SIGKILL them after ``kill_after`` s (None: let them finish).

        Returns their exit codes (``-9`` = killed).
        """
        self.proc.stdin.write(json.dumps({"op": op, "dir": str(folder), "n": n, "args": args}) + "\n")
        self.proc.stdin.flush()
        pids = self._read()["pids"]
        if kill_after is not None:
            time.sleep(kill_after)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return self._read()["exits"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sha256(path: Path) -> str | None:
    from ckpttool.hashing import file_sha256

    return file_sha256(path) if path.is_file() else None


@dataclass
class Figures:
    """What a series of kills found. ``failures`` lists every violated invariant, in words."""

    kills: int = 0
    completed: int = 0  # worker finished before the kill (the delay was too long): no kill happened
    torn: int = 0  # destination neither A nor B
    manifest_unparsable: int = 0
    lost_backups: int = 0  # a record vanished, or its object is missing / damaged
    missing_records: int = 0  # a backup reported done but not recorded
    duplicate_records: int = 0  # recorded more than once
    stale_manifest_entries: int = 0  # init manifest pins the other version (kill between save and update)
    leftover_temps: int = 0  # dot-prefixed *.tmp left by a killed writer (never under the final name)
    failures: list[str] = field(default_factory=list)

    def add(self, other: Figures) -> None:
        for k, v in vars(other).items():
            if k == "failures":
                self.failures.extend(v)
            else:
                setattr(self, k, getattr(self, k) + v)

    def row(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "failures"}


class Series:
    """Kills of one operation in one folder, with the state needed to check "never lost"."""

    def __init__(self, zygote: Zygote, op: str, folder: Path, candidates: dict, rng: random.Random):
        self.z, self.op, self.folder, self.rng = zygote, op, folder, rng
        self.allowed = {
            "generate": {candidates["generate1"], candidates["generate2"]},
            "runner": {candidates["runner0"], candidates["runner1"]},
            "restore": {candidates["restore1"], candidates["restore2"]},
            "backup": None,
        }[op]
        self.dest = {
            "generate": folder / "init_model" / "x.pth.tar",
            "runner": folder / "run" / "checkpoint.pt",
            "restore": folder / "init_model" / "t.safetensors",
            "backup": folder / "init_model" / "w.safetensors",
        }[op]
        self.seen: set[str] = set()  # backup record ids ever listed
        self.kill_no = 0
        folder.mkdir(parents=True, exist_ok=True)
        if op == "restore":
            self._check_exit(self.z.run("restore_setup", folder))
        # the "old" file: one complete step before any kill; and the time a step takes
        t = time.monotonic()
        self._check_exit(self.z.run(op, folder, iters=2, start=10_000))
        self.step_s = (time.monotonic() - t) / 2

    def _check_exit(self, exits: list[int]) -> None:
        if any(e not in (0, -signal.SIGKILL) for e in exits):
            raise AssertionError(f"{self.op} worker failed ({exits}): {self.z.log_text()}")

    def kill_once(self) -> Figures:
        """One worker looping the operation, SIGKILLed after a random delay covering ~3 steps."""
        self.kill_no += 1
        delay = self.rng.uniform(0.0, 3.0 * self.step_s)
        exits = self.z.run(self.op, self.folder, kill_after=delay, iters=1000, start=self.kill_no * 1000)
        self._check_exit(exits)
        fig = Figures(kills=1) if exits == [-signal.SIGKILL] else Figures(completed=1)
        self.check(fig)
        return fig

    def check(self, fig: Figures) -> None:
        from ckpttool.backup import list_backups
        from ckpttool.errors import ManifestError
        from ckpttool.manifest import read_manifest

        where = f"{self.op} kill {self.kill_no}"
        actual = sha256(self.dest)
        if self.allowed is not None and actual not in self.allowed:
            fig.torn += 1
            fig.failures.append(f"{where}: {self.dest.name} has sha256 {actual}, neither old nor new")
        if self.op == "backup" and actual is not None:
            from ckpttool.errors import CkptError
            from ckpttool.loading import load_checkpoint  # the rewritten source must be whole too

            try:
                load_checkpoint(self.dest).close()
            except CkptError as e:
                fig.torn += 1
                fig.failures.append(f"{where}: {self.dest.name} is torn: {e}")
        init_manifest = self.folder / "init_model" / "MANIFEST.json"
        if init_manifest.exists():
            try:
                entry = read_manifest(init_manifest).get("x.pth.tar")
                if entry is not None and entry.sha256 != actual:
                    fig.stale_manifest_entries += 1
            except ManifestError as e:
                fig.manifest_unparsable += 1
                fig.failures.append(f"{where}: {e}")
        backup_dir = self.folder / "init_model" / "backup_old"
        try:
            records = list_backups(backup_dir)
        except ManifestError as e:
            fig.manifest_unparsable += 1
            fig.failures.append(f"{where}: {e}")
            return
        ids = Counter(r.id for r in records)
        lost = self.seen - set(ids)
        for rid in sorted(lost):
            fig.lost_backups += 1
            fig.failures.append(f"{where}: backup record {rid} vanished from the manifest")
        for r in records:
            if sha256(r.object_file) != r.sha256:
                fig.lost_backups += 1
                fig.failures.append(f"{where}: backup {r.id}: object {r.object_path} missing or damaged")
        self.seen |= set(ids)
        dup = [rid for rid, c in ids.items() if c > 1]
        fig.duplicate_records += len(dup)
        fig.failures.extend(f"{where}: backup {rid} recorded {ids[rid]} times" for rid in dup)
        reported = [line.split()[1] for line in log_lines(self.folder) if line.startswith("backup ")]
        missing = sorted(set(reported) - set(ids))
        fig.missing_records = len(missing)  # cumulative state, not a sum: set, not added
        fig.failures.extend(f"{where}: backup {rid} was reported done but is not recorded" for rid in missing)
        fig.leftover_temps = len([p for p in self.folder.rglob(".*.tmp")])


def log_lines(folder: Path) -> list[str]:
    lines = []
    for log in sorted(folder.glob("log-*.txt")):
        lines.extend(log.read_text().splitlines())
    return lines


def candidates(zygote: Zygote, folder: Path) -> dict:
    """Each operation's two versions, written once, complete."""
    folder.mkdir(parents=True, exist_ok=True)
    exits = zygote.run("candidates", folder)
    if exits != [0]:
        raise AssertionError(f"candidates failed: {zygote.log_text()}")
    return json.loads((folder / "candidates.json").read_text())


def kill_series(zygote: Zygote, op: str, folder: Path, cands: dict, kills: int, seed: int) -> Figures:
    series = Series(zygote, op, folder, cands, random.Random(seed))
    total = Figures()
    for _ in range(kills):
        fig = series.kill_once()
        missing, temps = fig.missing_records, fig.leftover_temps
        fig.missing_records = fig.leftover_temps = 0
        total.add(fig)
        total.missing_records, total.leftover_temps = missing, temps  # state at the end, not a sum
    return total


@dataclass
class ConcurrencyFigures:
    procs: int
    final_is_a_candidate: bool
    final_loads: bool
    backup_attempts: int
    backup_records: int
    duplicates: int
    missing: int
    manifests_parse: bool
    failures: list[str]


def concurrency_round(zygote: Zygote, folder: Path, procs: int, start: int = 0) -> ConcurrencyFigures:
    """``procs`` workers at once: generate the same name (--force) and back up the same file."""
    from _attacks import valid_safetensors_bytes

    from ckpttool.backup import list_backups
    from ckpttool.errors import CkptError
    from ckpttool.loading import load_checkpoint
    from ckpttool.manifest import read_manifest

    init = folder / "init_model"
    init.mkdir(parents=True, exist_ok=True)
    (init / "shared.safetensors").write_bytes(valid_safetensors_bytes(1))
    failures: list[str] = []
    exits = zygote.run("concurrent", folder, n=procs, start=start)
    if any(exits):
        failures.append(f"workers exited {exits}: {zygote.log_text()}")
    lines = log_lines(folder)
    generated = {ln.split()[1]: ln.split()[2] for ln in lines if ln.startswith("generated ")}
    backed = [ln.split()[2] for ln in lines if ln.startswith("backed-up ")]
    out = init / "x.pth.tar"
    final = sha256(out)
    is_candidate = final in set(generated.values())
    try:
        with load_checkpoint(out) as ckpt:
            loads = len(list(ckpt.iter_arrays())) == 32
    except CkptError as e:
        loads = False
        failures.append(f"final file does not load: {e}")
    parse = True
    try:
        records = list_backups(init / "backup_old")
        entry = read_manifest(init / "MANIFEST.json").get("x.pth.tar")
        if entry is None or entry.sha256 != final:
            failures.append(f"init manifest pins {entry and entry.sha256}, the file is {final}")
    except CkptError as e:
        parse, records = False, []
        failures.append(str(e))
    ids = Counter(r.id for r in records)
    by_reason = Counter(r.reason for r in records)
    attempts = len(backed) + len(generated)  # every generate replaced an existing file: one backup each
    duplicates = sum(c - 1 for c in ids.values() if c > 1)
    missing = sum(1 for rid in backed if rid not in ids)
    if by_reason["replaced by generate"] != len(generated):
        failures.append(f"{by_reason['replaced by generate']} generate backups recorded for {len(generated)} generates")
    for k in range(start, start + procs):
        if by_reason[f"proc {k}"] != 1:
            failures.append(f"backup by proc {k} recorded {by_reason[f'proc {k}']} times")
    if not is_candidate:
        failures.append(f"final file {final} is none of the {len(generated)} generated versions")
    return ConcurrencyFigures(procs, is_candidate, loads, attempts, len(records), duplicates, missing, parse,
                              failures)
