"""The signals that show training when the spectrum does not (ckpttool.verdict._init_shape), each against
iid draws of every init shape and against a small stand-in for the real layer that needed it."""

from __future__ import annotations

import numpy as np
import pytest

from ckpttool.verdict._init_shape import (
    COMBINED_Z,
    DISPERSION_Z,
    EDGE_MARGIN,
    KURTOSIS_Z,
    dispersion_z,
    edge_overshoot,
    kurtosis_z,
    line_dispersions,
    trimmed_kurtosis,
    uniform_edge_bound,
)
from ckpttool.verdict.stats import TensorStats, compute_tensor_stats


class Info:
    def __init__(self, name: str, array: np.ndarray):
        self.name, self.shape, self.numel, self.dtype = name, tuple(array.shape), int(array.size), "float32"


def stats(array: np.ndarray, name: str = "blocks.3.conv.weight") -> TensorStats:
    array = np.asarray(array, dtype=np.float32)
    return compute_tensor_stats(Info(name, array), array)


def _kaiming_uniform(rng, shape):
    fan_in = int(np.prod(shape[1:]))
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def _trunc_normal_with_clamps(rng, shape, std=0.02):
    # torch's trunc_normal_(std=.02, a=-2, b=2) now and then returns the bound itself
    w = rng.normal(0.0, std, shape).astype(np.float32)
    w.flat[rng.integers(0, w.size, 2)] = [2.0, -2.0]
    return w


INITS = {
    "normal": lambda rng, shape: rng.normal(0.0, 0.02, shape).astype(np.float32),
    "kaiming_uniform": _kaiming_uniform,
    "trunc_normal_clamped": _trunc_normal_with_clamps,
    "xavier_uniform_8x9": lambda rng, shape: rng.uniform(-0.3, 0.3, shape).astype(np.float32),
}
SHAPES = [(8, 1, 3, 3), (16, 8, 1, 1), (24, 24, 3, 1), (96, 12), (256, 128, 1), (768, 768)]


@pytest.mark.parametrize("init", sorted(INITS))
def test_no_signal_fires_on_iid_inits(init):
    rng = np.random.default_rng(0)
    worst = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        for shape in SHAPES:
            s = stats(INITS[init](rng, shape))
            assert s.status in ("init-like", "too-small"), (shape, s.note)
            worst.append(s)
    # every signal stays near its iid value
    assert all(s.row_norm_dispersion is None or 0.4 < s.row_norm_dispersion < 2.0 for s in worst)
    assert all(s.edge_overshoot is None or s.edge_overshoot < EDGE_MARGIN for s in worst)


def test_dispersion_reference_is_exact_for_any_entry_distribution():
    rng = np.random.default_rng(3)
    ratios = [line_dispersions(INITS[k](rng, (128, 64)).reshape(128, 64))[0] for k in INITS for _ in range(5)]
    assert 0.8 < np.median(ratios) < 1.2
    # a single clamped outlier moves a row and its permuted twin alike
    w = _trunc_normal_with_clamps(rng, (256, 256))
    assert 0.7 < line_dispersions(w)[0] < 1.4


def test_rows_of_equal_norm_are_an_init_pattern_not_evidence():
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(256, 128)))  # orthogonal init
    rows, cols = line_dispersions(q.T.astype(np.float32))
    assert dispersion_z(rows, 128) is None
    assert stats(q.T).status in ("init-like", "init-constant")


def test_batchnorm_folded_into_a_wide_1x1_conv_is_trained():
    """openWakeWord / ddddocr: an export folds BatchNorm into the conv, scaling each output row by
    gamma / sigma; the spectrum stays iid-like, the row norms do not."""
    rng = np.random.default_rng(1)
    w = rng.normal(0.0, 0.05, (96, 96, 1, 1)).astype(np.float32)
    w *= rng.uniform(0.4, 1.6, (96, 1, 1, 1)).astype(np.float32)
    s = stats(w)
    assert s.spectral_ratio < 1.3 and s.status == "trained"
    assert dispersion_z(s.row_norm_dispersion, 96) >= DISPERSION_Z


def test_rows_evened_out_by_training_are_trained():
    """fer / mini-Xception pointwise convs: weight decay under BatchNorm evens out the rows."""
    rng = np.random.default_rng(2)
    w = rng.normal(0.0, 1.0, (64, 128)).astype(np.float32)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    w *= rng.uniform(0.97, 1.03, (64, 1)).astype(np.float32)
    s = stats(w)
    assert s.status == "trained" and "row-norm dispersion" in s.note and s.row_norm_dispersion < 0.5, s.note


def test_uniform_init_that_barely_moved_reaches_past_its_edge():
    """resemble-perth's decoder: 1x1 convs still uniform-shaped (kurtosis -1.18) after training,
    but 6-60% of the kaiming bound beyond it in places."""
    rng = np.random.default_rng(4)
    w = _kaiming_uniform(rng, (256, 128, 1))
    assert stats(w).status == "init-like"
    bound = 1.0 / np.sqrt(128)
    moved = w.copy()
    moved.flat[rng.integers(0, moved.size, 40)] *= 1.15
    np.clip(moved, -1.12 * bound, 1.12 * bound, out=moved)
    s = stats(moved)
    assert s.kurtosis < -1.1
    assert s.status == "trained" and "edge" in s.note, s.note
    assert s.edge_overshoot >= EDGE_MARGIN


def test_edge_bound_follows_the_truncated_normal_family():
    assert 1.73 < uniform_edge_bound(-1.2, 1 << 20) < 1.75  # sqrt(3): the uniform's edge
    assert uniform_edge_bound(-0.95, 1 << 20) > uniform_edge_bound(-1.15, 1 << 20)
    assert edge_overshoot(2.5, 0.0, 10_000) is None  # not uniform-like: no bound to reach past


def test_moderately_heavy_tails_are_trained_and_clamped_outliers_are_not():
    rng = np.random.default_rng(5)
    laplace = rng.laplace(0.0, 0.02, (48, 48, 3)).astype(np.float32)  # excess kurtosis 3
    k, n = trimmed_kurtosis(laplace)
    assert kurtosis_z(k, n) >= KURTOSIS_Z
    assert stats(laplace).status == "trained"
    k, n = trimmed_kurtosis(_trunc_normal_with_clamps(rng, (256, 256)))
    assert abs(kurtosis_z(k, n)) < 4


def test_entries_off_zero_mean_are_trained():
    rng = np.random.default_rng(6)
    w = rng.normal(-0.14, 1.0, (128, 128)).astype(np.float32)  # PLCMOS's embed_dense2.0: mean -0.14 sd
    s = stats(w)
    assert s.status == "trained" and "mean" in s.note, s.note


def test_several_moderate_departures_add_up_in_a_small_matrix():
    """swift-f0 / sevennet: 8-12 row matrices whose kurtosis, tails, mean and row norms are each a
    few standard errors out, none decisively."""
    from ckpttool.verdict._init_shape import MEAN_Z, mean_z

    rng = np.random.default_rng(0)
    w = (rng.normal(0, 1, (12, 84)) * rng.uniform(0.6, 1.4, (12, 1)) + 0.19).astype(np.float32)
    s = stats(w)
    k, n = trimmed_kurtosis(w)
    assert kurtosis_z(k, n) < KURTOSIS_Z and mean_z(s.mean, s.std, s.numel) < MEAN_Z
    assert dispersion_z(s.row_norm_dispersion, 12) is None  # too few rows to decide alone
    assert s.status == "trained" and "several" in s.note, s.note


def test_combined_threshold_has_margin_over_random_small_matrices():
    rng = np.random.default_rng(8)
    called = [stats(INITS[k](rng, shape)).status for k in INITS for shape in [(8, 64), (12, 36), (16, 9), (32, 32)]
              for _ in range(10)]
    assert called.count("trained") == 0
    assert COMBINED_Z >= 8.0
