"""A run killed (SIGKILL) or interrupted (SIGINT, mid-epoch) and resumed ends exactly like a run never
interrupted: same masks, same metrics (timings aside), same final weights. Real subprocesses."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, base_options, cli_args, subprocess_env

from pruning_runner.checkpoint import load_run_checkpoint

TIMING = ("seconds", "images_per_s")


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


def _outcome(run_dir):
    metrics = [{k: v for k, v in json.loads(s).items() if k not in TIMING}
               for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    states = [{k: v for k, v in s.items() if k != "seconds"} for s in summary["states"]]
    ckpt = load_run_checkpoint(run_dir / "checkpoint.pt")
    from safetensors.torch import load_file

    return metrics, states, ckpt["masks"], load_file(str(run_dir / "final_compact.safetensors"))


def _resume(run_dir):
    return subprocess.run([sys.executable, "-m", "pruning_runner", "--resume", str(run_dir)], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def baseline(random_init, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "baseline"
    done = subprocess.run(_args(random_init, out), cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return _outcome(out)


def _assert_same(a, b):
    metrics_a, states_a, masks_a, final_a = a
    metrics_b, states_b, masks_b, final_b = b
    assert metrics_a == metrics_b
    assert states_a == states_b
    for kind in ("alive", "penalized", "present"):
        for part in ("heads", "neurons"):
            assert torch.equal(masks_a[kind][part], masks_b[kind][part])
    assert final_a.keys() == final_b.keys()
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


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
    _assert_same(_outcome(out), baseline)
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
    _assert_same(_outcome(out), baseline)


def test_resume_refuses_changed_experiment_options(random_init, tmp_path):
    done = subprocess.run([sys.executable, "-m", "pruning_runner", "--resume", str(tmp_path), "--rate", "0.2"],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "drop --rate" in done.stderr
