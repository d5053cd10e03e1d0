"""CPU thread policy for the commands that run torch on the CPU (demo, generate, run-prune).

On a shared machine a torch CPU job that starts one OpenMP thread per core, each spinning while it
waits for work, fights the other jobs for every core: everyone slows down far more than the fair
share. Two things help, and both must happen before torch starts its thread pool:

- ``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP threads sleep instead of busy-waiting (libgomp spins for
  a long time by default, burning a core that another process needed);
- as many threads as there are free cores: usable cores (``os.sched_getaffinity``, which honours
  ``taskset`` and container CPU sets) minus the current load average, at least one.

A value the user set (``OMP_NUM_THREADS``, ``OMP_WAIT_POLICY``) is always kept: this only fills in
defaults. ``benchmarks/demo_under_load.py`` measures the effect.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuThreadPolicy:
    """What :func:`apply_cpu_thread_policy` decided."""

    threads: int  # intra-op threads torch uses
    cores: int  # cores this process may run on
    load: float  # 1-minute load average when deciding (other jobs' runnable threads)
    source: str  # "OMP_NUM_THREADS" (the user's value, kept) | "auto"
    wait_policy: str  # OMP_WAIT_POLICY in effect


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity / cgroup set), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def current_load() -> float:
    """The 1-minute load average (runnable threads, all processes), or 0.0 where unknown."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def choose_cpu_threads(cores: int, load: float) -> int:
    """Threads for a CPU job: the cores not already busy, at least one, at most ``cores``.

    Example:
        >>> choose_cpu_threads(2, 0.1), choose_cpu_threads(2, 2.0), choose_cpu_threads(16, 3.6)
        (2, 1, 12)
    """
    free = cores - int(load + 0.5)
    return max(1, min(cores, free))


def apply_cpu_thread_policy() -> CpuThreadPolicy:
    """Set OpenMP's wait policy and torch's thread count for this process, unless the user did.

    Call it at the start of a command, before torch is imported where possible (the wait policy is
    read once, when torch's OpenMP runtime starts). Safe to call twice.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cores, load = usable_cores(), current_load()
    user = os.environ.get("OMP_NUM_THREADS", "").strip()
    if user.isdigit() and int(user) > 0:
        threads, source = int(user), "OMP_NUM_THREADS"
    else:
        threads, source = choose_cpu_threads(cores, load), "auto"
        os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch at import, and by child processes
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return CpuThreadPolicy(threads, cores, load, source, os.environ["OMP_WAIT_POLICY"])
