"""Helpers for the subprocess run tests: start N processes the way torchrun starts its workers (env
rendezvous on localhost, gloo on CPU; one process = no distributed environment at all), each running
tests/runner/_rank_driver.py; read a run folder's outcome; compare two outcomes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from dataclasses import dataclass

import torch
from conftest import REPO, subprocess_env

from pruning_runner.checkpoint import load_run_checkpoint

TIMING = ("seconds", "images_per_s")

DRIVER = REPO / "tests" / "runner" / "_rank_driver.py"


@dataclass
class RankResult:
    returncode: int
    stdout: str
    stderr: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(args: list[str], *, world: int = 2, env: dict | None = None, timeout: float = 180) -> list[RankResult]:
    """Run ``run-prune ARGS`` on ``world`` ranks; every rank's exit code and output (rank order).

    A rank still running after ``timeout`` seconds (a deadlock) is killed and reported as -9.
    """
    port = _free_port()
    procs = []
    for rank in range(world):
        e = subprocess_env()
        e.update(env or {})
        if world > 1:
            e.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                     LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
        procs.append(subprocess.Popen([sys.executable, str(DRIVER), "run-prune", *args], cwd=REPO, env=e,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            out, err = p.communicate()
        results.append(RankResult(p.returncode, out, err))
    return results


def run_outcome(run_dir):
    """(metrics without timings, summary states without timings, masks, final compact weights)."""
    from safetensors.torch import load_file

    metrics = [{k: v for k, v in json.loads(s).items() if k not in TIMING}
               for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    states = [{k: v for k, v in s.items() if k != "seconds"} for s in summary["states"]]
    ckpt = load_run_checkpoint(run_dir / "checkpoint.pt")
    return metrics, states, ckpt["masks"], load_file(str(run_dir / "final_compact.safetensors"))


def assert_same_outcome(a, b):
    metrics_a, states_a, masks_a, final_a = a
    metrics_b, states_b, masks_b, final_b = b
    assert metrics_a == metrics_b
    assert states_a == states_b
    for kind in ("alive", "penalized", "present"):
        for part in ("heads", "neurons"):
            assert torch.equal(masks_a[kind][part], masks_b[kind][part])
    assert final_a.keys() == final_b.keys()
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
