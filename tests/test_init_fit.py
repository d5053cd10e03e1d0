"""Exact standard inits: small matrices on one are untouched; trained-looking shapes are not."""

from __future__ import annotations

import numpy as np
import pytest

from ckpttool.verdict._init_fit import (
    FIT_KS,
    MIN_FIT_ENTRIES,
    normal_distance,
    silent_group_floor,
    standard_init_fit,
    truncated_normal_distance,
    uniform_distance,
)

SHAPES = [(16, 16), (12, 48), (96, 12), (30, 30), (10, 30), (32, 63)]


@pytest.mark.parametrize("shape", SHAPES)
def test_exact_inits_of_small_shapes_are_recognised(shape):
    rng = np.random.default_rng(sum(shape))
    fan_in = shape[1]
    hits = {"uniform": 0, "normal(0, 1)": 0, "normal(0, 0.02)": 0, "normal(0, 0.01)": 0}
    for _ in range(50):
        bound = 1.0 / np.sqrt(fan_in)  # torch's Linear/Conv default
        hits["uniform"] += standard_init_fit(rng.uniform(-bound, bound, shape).astype(np.float32)) == "uniform"
        glorot = np.sqrt(6.0 / sum(shape))
        hits["uniform"] += standard_init_fit(rng.uniform(-glorot, glorot, shape)) == "uniform"
        for std in (1.0, 0.02, 0.01):
            hits[f"normal(0, {std:g})"] += standard_init_fit(rng.normal(0, std, shape).astype(np.float32)) == f"normal(0, {std:g})"
    assert hits["uniform"] >= 98 and all(v >= 49 for k, v in hits.items() if k != "uniform"), hits


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_that_training_leaves_fit_no_standard_init(shape):
    """Stand-ins of the real trained small convs that look iid (PP-OCR, SwiftF0): Gaussian at a scale
    of their own, heavier tails, a uniform with rounded edges (a uniform init that moved)."""
    rng = np.random.default_rng(7 + sum(shape))
    bound = 1.0 / np.sqrt(shape[1])
    for _ in range(20):
        assert standard_init_fit(rng.normal(0, 0.3, shape)) is None
        assert standard_init_fit(rng.normal(0, 0.16, shape)) is None
        assert standard_init_fit(rng.laplace(0, 0.1, shape)) is None
        moved = rng.uniform(-bound, bound, shape) + rng.normal(0, 0.5 * bound, shape)
        assert standard_init_fit(moved) is None


def test_too_few_entries_or_an_off_centre_range_fit_nothing():
    rng = np.random.default_rng(0)
    small = rng.uniform(-0.1, 0.1, MIN_FIT_ENTRIES - 1)
    assert uniform_distance(small) < FIT_KS and standard_init_fit(small) is None
    assert uniform_distance(rng.uniform(0.0, 0.2, 512)) is None  # no standard init is off zero
    assert uniform_distance(np.zeros(512)) is None


def test_distances_grow_with_the_departure():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 0.02, 2000)
    assert normal_distance(x, 0.02) < FIT_KS < normal_distance(x * 1.3, 0.02) < normal_distance(x * 1.6, 0.02)


@pytest.mark.parametrize("shape", [(48, 48), (64, 96), (32, 32, 3, 3)])
def test_a_normal_truncated_at_two_sd_is_recognised_from_2048_entries(shape):
    """Keras' he_normal / glorot_normal and JAX's variance scaling draw a normal truncated at +-2 sd."""
    rng = np.random.default_rng(len(shape))
    n = int(np.prod(shape))
    hits = 0
    for _ in range(50):
        x = rng.normal(0, 0.05, 4 * n)
        hits += standard_init_fit(x[np.abs(x) < 0.1][:n].reshape(shape)) == "truncated normal"
        assert truncated_normal_distance(rng.normal(0, 0.05, n)) is None  # a Gaussian spans more
        assert standard_init_fit(rng.normal(0, 0.05, shape)) is None
    assert hits >= 49
    x = rng.normal(0, 0.05, 2000)
    assert standard_init_fit(x[np.abs(x) < 0.1][:1000]) is None  # too few entries to tell


def test_the_silent_group_floor_grows_with_the_groups_of_a_file():
    assert silent_group_floor(1) == silent_group_floor(4) == 2048
    assert silent_group_floor(90) == 46080 and silent_group_floor(91) > silent_group_floor(90)
