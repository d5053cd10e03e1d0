"""A run killed (SIGKILL) or interrupted (SIGINT, mid-epoch) and resumed ends exactly like a run never
interrupted: same masks, same metrics (timings aside), same final weights. Real subprocesses."""

import json
import signal
import subprocess
import sys
import time

import pytest
from _runs import assert_same_outcome, run_outcome
from conftest import REPO, base_options, cli_args, subprocess_env

from pruning_runner.checkpoint import load_run_checkpoint


def _args(init, out):
    opts = base_options(init, out, method="rsst", criterion="taylor", states=3, epochs=2, rate=0.5,
                        batch_size=64, reg_max=5.0, optimizer="sgd", lr=0.05)
    return [sys.executable, "-m", "pruning_runner", *cli_args(opts)]


def _wait_lines(run_dir, n, proc, timeout=120):
    start = time.time()
    metrics = run_dir / "metrics.jsonl"
    while time.time() - start < timeout:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {n} epochs: {proc.stderr.read()}")
        time.sleep(0.01)
    raise AssertionError("timeout")


def _resume(run_dir):
    return subprocess.run([sys.executable, "-m", "pruning_runner", "--resume", str(run_dir)], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def baseline(random_init, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "baseline"
    done = subprocess.run(_args(random_init, out), cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return run_outcome(out)


def test_sigkill_then_resume_equals_uninterrupted(random_init, tmp_path, baseline):
    out = tmp_path / "killed"
    proc = subprocess.Popen(_args(random_init, out), cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_lines(out, 3, proc)  # state 1, epoch 0 is done (its checkpoint may or may not be on disk)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    done = _resume(out)
    assert done.returncode == 0, done.stderr
    assert_same_outcome(run_outcome(out), baseline)
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


def test_ctrl_c_writes_a_checkpoint_exits_130_and_resumes_exactly(random_init, tmp_path, baseline):
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(_args(random_init, out), cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _wait_lines(out, 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: interrupted at state 0") and last.endswith(f"ckpttool run-prune --resume {out}")
    ckpt = load_run_checkpoint(out / "checkpoint.pt")
    p = ckpt["position"]
    assert (p["state"], p["epoch"], p["step"]) >= (0, 1, 0)
    done = _resume(out)
    assert done.returncode == 0, done.stderr
    assert_same_outcome(run_outcome(out), baseline)


def test_resume_refuses_changed_experiment_options(random_init, tmp_path):
    done = subprocess.run([sys.executable, "-m", "pruning_runner", "--resume", str(tmp_path), "--rate", "0.2"],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "drop --rate" in done.stderr
