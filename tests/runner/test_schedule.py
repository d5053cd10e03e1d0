import math

import pytest

from pruning_runner.ranking import expected_kept
from pruning_runner.schedule import kept_count, penalty_lambda, rate_for_final_sparsity


@pytest.mark.parametrize("total,rate", [(8, 0.3), (12, 0.2), (128, 0.5), (384, 0.125), (1536, 0.2)])
def test_kept_count_compounds_from_the_closed_form(total, rate):
    for k in range(12):
        assert kept_count(total, rate, k) == math.floor(total * (1 - rate) ** k + 0.5 + 1e-9)
    # compounding: the kept fraction after k prunes is (1-r)^k, not 1 - k*r
    assert kept_count(1000, 0.5, 3) == 125


def test_kept_count_minimum_and_bounds():
    assert kept_count(4, 0.9, 5, minimum=1) == 1
    assert kept_count(4, 0.5, 0, minimum=1) == 4
    assert kept_count(12, 0.5, 1) == 6  # 12 * 0.5 exactly, no float drift


@pytest.mark.parametrize("s,n", [(0.5, 3), (0.75, 5), (0.9, 16), (0.2, 2)])
def test_final_sparsity_reaches_its_target(s, n):
    r = rate_for_final_sparsity(s, n)
    assert (1 - r) ** (n - 1) == pytest.approx(1 - s)
    assert kept_count(1000, r, n - 1) == round(1000 * (1 - s))


def test_expected_kept_layer_and_global():
    assert expected_kept(2, 4, rate=0.5, prunes=1, minimum=1, ranking="layer") == 4
    assert expected_kept(3, 4, rate=0.5, prunes=3, minimum=1, ranking="layer") == 3  # min binds: 0.5 -> 1 per block
    assert expected_kept(3, 4, rate=0.5, prunes=3, minimum=1, ranking="global") == 3


@pytest.mark.parametrize("schedule", ["x", "x2", "x3", "exp", "exp_custom_exponents"])
def test_penalty_rises_monotonically_from_zero_to_reg_max(schedule):
    values = [penalty_lambda(t / 100, reg_max=2.0, schedule=schedule, exponent=3.0) for t in range(101)]
    assert values[0] == 0.0
    assert values[-1] == pytest.approx(2.0)
    assert all(b > a for a, b in zip(values, values[1:], strict=False))


def test_penalty_formulas():
    assert penalty_lambda(0.5, reg_max=1.0, schedule="x3") == 0.125
    assert penalty_lambda(0.5, reg_max=1.0, schedule="exp") == pytest.approx((math.e**0.5 - 1) / (math.e - 1))
    assert penalty_lambda(0.5, reg_max=3.0, schedule="exp_custom_exponents", exponent=2.0) == pytest.approx(
        3.0 * (math.e**0.25 - 1) / (math.e - 1)
    )
