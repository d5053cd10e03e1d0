"""The CPU thread policy: passive OpenMP waiting, one thread per usable core, the user's values kept."""

from __future__ import annotations

import subprocess
import sys

from ckpttool import _threads
from ckpttool._threads import apply_cpu_thread_policy


def test_policy_fills_in_defaults_before_torch_starts(monkeypatch):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(_threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(_threads, "current_load", lambda: 6.5)  # a busy machine: still every usable core
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not imported yet
    policy = apply_cpu_thread_policy()
    assert (policy.threads, policy.source, policy.wait_policy, policy.load) == (4, "auto", "PASSIVE", 6.5)
    import os

    assert os.environ["OMP_NUM_THREADS"] == "4" and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    # a short spin before sleeping: passive at once made the demo 2.2x slower on an idle machine
    assert os.environ["GOMP_SPINCOUNT"] == str(_threads.SPIN_COUNT)
    monkeypatch.setenv("GOMP_SPINCOUNT", "7")
    apply_cpu_thread_policy()
    assert os.environ["GOMP_SPINCOUNT"] == "7"  # the user's value is kept


def test_user_settings_are_kept(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    monkeypatch.setitem(sys.modules, "torch", None)
    assert apply_cpu_thread_policy().threads == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setitem(sys.modules, "torch", None)
    policy = apply_cpu_thread_policy()
    assert (policy.threads, policy.source, policy.wait_policy) == (5, "OMP_NUM_THREADS", "ACTIVE")


def test_torch_started_after_the_policy_uses_its_thread_count():
    code = ("import os; [os.environ.pop(v, None) for v in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OMP_WAIT_POLICY')]; "
            "from ckpttool._threads import apply_cpu_thread_policy; p = apply_cpu_thread_policy(); "
            "import torch; print(p.threads, torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    threads, torch_threads, wait = out.split()
    assert threads == torch_threads and wait == "PASSIVE"
