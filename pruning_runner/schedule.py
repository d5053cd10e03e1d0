"""Sparsity schedule (how many groups each state keeps) and RSST penalty schedules.

Rounding rule, exact at every state: after ``k`` prunes a set of ``n`` groups keeps

    kept(n, r, k) = max(minimum, floor(n * (1 - r) ** k + 0.5))

computed from the closed form (never from the previous state's rounded count), so the fraction
kept compounds: ``(1 - r) ** k``. With ``--final-sparsity s`` over ``N`` states,
``r = 1 - (1 - s) ** (1 / (N - 1))``.

Example:
    >>> kept_count(12, 0.5, 2, minimum=1)
    3
    >>> penalty_lambda(0.5, reg_max=2.0, schedule="x2")
    0.5
"""

from __future__ import annotations

import math

# Guards against float noise: 12 * 0.5**1 computed as 5.9999999 must still round to 6.
_EPS = 1e-9


def kept_count(total: int, rate: float, prunes: int, *, minimum: int = 0) -> int:
    """Groups kept out of ``total`` after ``prunes`` prunes at ``rate`` (never below ``minimum``)."""
    kept = math.floor(total * (1.0 - rate) ** prunes + 0.5 + _EPS)
    return min(total, max(minimum, kept))


def rate_for_final_sparsity(final_sparsity: float, states: int) -> float:
    """Per-prune rate that reaches ``final_sparsity`` after ``states - 1`` prunes."""
    if states < 2:
        return 0.0
    return 1.0 - (1.0 - final_sparsity) ** (1.0 / (states - 1))


def penalty_lambda(tau: float, *, reg_max: float, schedule: str, exponent: float = 2.0) -> float:
    """RSST penalty at fraction ``tau`` in [0, 1] of the whole state (0 at the start, reg_max at the end)."""
    tau = min(1.0, max(0.0, tau))
    if schedule == "x":
        f = tau
    elif schedule == "x2":
        f = tau**2
    elif schedule == "x3":
        f = tau**3
    elif schedule == "exp":
        f = (math.exp(tau) - 1.0) / (math.e - 1.0)
    elif schedule == "exp_custom_exponents":
        f = (math.exp(tau**exponent) - 1.0) / (math.e - 1.0)
    else:
        raise ValueError(f"unknown penalty schedule {schedule!r}")
    return reg_max * f
