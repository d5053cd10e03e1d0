"""The CPU thread policy: threads for the free cores, passive OpenMP waiting, the user's values kept."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ckpttool import _threads
from ckpttool._threads import apply_cpu_thread_policy, choose_cpu_threads


@pytest.mark.parametrize(("cores", "load", "threads"), [
    (2, 0.0, 2), (2, 0.6, 1), (2, 2.0, 1), (2, 7.5, 1), (16, 3.6, 12), (16, 0.2, 16), (1, 0.0, 1),
])
def test_threads_are_the_free_cores_and_at_least_one(cores, load, threads):
    assert choose_cpu_threads(cores, load) == threads


def test_policy_fills_in_defaults_before_torch_starts(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(_threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(_threads, "current_load", lambda: 1.2)
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not imported yet
    policy = apply_cpu_thread_policy()
    assert (policy.threads, policy.source, policy.wait_policy) == (3, "auto", "PASSIVE")
    import os

    assert os.environ["OMP_NUM_THREADS"] == "3" and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_user_settings_are_kept(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setitem(sys.modules, "torch", None)
    policy = apply_cpu_thread_policy()
    assert (policy.threads, policy.source, policy.wait_policy) == (5, "OMP_NUM_THREADS", "ACTIVE")


def test_torch_started_after_the_policy_uses_its_thread_count():
    code = ("import os; os.environ.pop('OMP_NUM_THREADS', None); os.environ.pop('OMP_WAIT_POLICY', None); "
            "from ckpttool._threads import apply_cpu_thread_policy; p = apply_cpu_thread_policy(); "
            "import torch; print(p.threads, torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    threads, torch_threads, wait = out.split()
    assert threads == torch_threads and wait == "PASSIVE"
