"""CPU thread policy for the commands that run torch on the CPU (demo, generate, run-prune).

On a shared machine, torch's default OpenMP pool fights the other jobs: each of its threads
busy-waits (spins) for work between parallel regions, burning cores that another process needed,
and while it spins the thread that holds the real work is descheduled. The user's demo beside two
other jobs on 2 cores took 30x its time alone. The fix that measurably helps is the wait policy:

- ``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP threads sleep instead of spinning. Measured beside two
  busy loops on a shared 2-core machine (``benchmarks/demo_under_load.py --probe 60``): 60 training
  steps of the demo's ViT took 108-250 s with torch's default waiting and 6-8 s passive.
- one thread per usable core (``os.sched_getaffinity``, which honours ``taskset`` and container
  CPU sets, rather than the host's core count). Fewer threads when the load is high was measured
  too and is not better: with passive waiting, 2 threads beside two busy loops ran in 5.6-8.3 s,
  1 thread in 7.9-19 s (the scheduler shares cores per thread; sleeping threads cost others nothing),
  and the whole demo beside two busy loops went from 5.4x (1 thread under load) to 2.6x its time alone.

- a short busy-wait before sleeping (``GOMP_SPINCOUNT`` 20,000, read by torch's libgomp ahead of the
  wait policy): sleeping at once cost 2.2x on an idle machine (the demo alone 153 s against 69 s
  with torch's own waiting, 75 s with the short spin).

All must be set before torch starts its OpenMP runtime (at ``import torch``). A value the user set
(``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``) is always kept:
this only fills in defaults.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

SPIN_COUNT = 20_000
"""Busy-wait spins of an idle OpenMP thread before it sleeps (libgomp's ``GOMP_SPINCOUNT``)."""


@dataclass(frozen=True)
class CpuThreadPolicy:
    """What :func:`apply_cpu_thread_policy` decided."""

    threads: int  # intra-op threads torch uses
    cores: int  # cores this process may run on
    load: float  # 1-minute load average when deciding (for reports; it does not lower the threads)
    source: str  # "OMP_NUM_THREADS" / "MKL_NUM_THREADS" (the user's value, kept) | "auto"
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


def apply_cpu_thread_policy() -> CpuThreadPolicy:
    """Passive OpenMP waiting and one torch thread per usable core, unless the user set them.

    Call it at the start of a command, before torch is imported where possible (the wait policy is
    read once, when torch's OpenMP runtime starts). Safe to call twice.

    Example:
        >>> policy = apply_cpu_thread_policy()  # doctest: +SKIP
        >>> policy.wait_policy, policy.threads  # doctest: +SKIP
        ('PASSIVE', 2)
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # ...after a short spin: torch's libgomp reads GOMP_SPINCOUNT before the wait policy. Sleeping at
    # once (passive, spin count 0) cost 2.2x on an idle machine (the demo alone: 153 s vs 69 s with
    # torch's own waiting); 20,000 spins (tens of microseconds) kept it at 75 s.
    os.environ.setdefault("GOMP_SPINCOUNT", str(SPIN_COUNT))
    cores = usable_cores()
    var = next((v for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if os.environ.get(v, "").strip()), None)
    user = os.environ.get(var, "").strip() if var else ""
    if user.isdigit() and int(user) > 0:  # torch takes its pool size from these too
        threads, source = int(user), var
    else:
        threads, source = cores, "auto"
        os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch at import, and by child processes
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return CpuThreadPolicy(threads, cores, current_load(), source, os.environ["OMP_WAIT_POLICY"])
