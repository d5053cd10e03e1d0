"""When "shows no training" means *untouched*: exact standard inits, and what chance explains.

Real training can leave a matrix within the noise of every test of ``ckpttool.verdict._init_shape``: of the
real trained matrices in the wild corpus (``benchmarks/wild_weights.py``: 1,101 matrices of 44
files), 40 of 104 under 1,024 entries, 7 of 57 of 1,024-2,047 and about 1 in 30 of 2,048-32,767 look
init-like. A file of many single-layer groups (Paddle, Keras and ONNX exports name every conv apart)
therefore holds a few such layers by chance. So a silent group counts as untouched when it is too
large for chance to explain in a file of its size (``silent_group_floor``), or when its entries sit
exactly on a standard init, which training rarely leaves a layer on:

- **uniform** with hard edges and centred on zero (PyTorch's Linear/Conv default, Glorot and
  Kaiming uniform): the Kolmogorov-Smirnov distance to the uniform on the entries' own range;
- a **normal truncated at two standard deviations** (Keras, JAX and Paddle variance-scaling
  inits), from 2,048 entries: its bound the entries' own, its span 2.27 standard deviations;
- **N(0, 1)** (PyTorch's Embedding default, e3nn) or **N(0, 0.02)** / **N(0, 0.01)** (BERT, GPT,
  ViT and timm's ``trunc_normal_``, detection heads): the distance to that exact normal, scale
  included.

Training rounds a uniform's edges and moves a fixed scale. The distance times sqrt(n) stays under
``FIT_KS`` for 999 in 1,000 exact inits of 256-2,000 entries (4,000 draws at each of five sizes;
larger matrices are tested on a 4,096-entry subsample). Of the 85 real trained matrices that look
init-like in the wild corpus and its hold-out, the ones that sit on an init are CHGNet's
``angle_layers.2`` (proven untouched: no optimizer state), embedding tables (input layers),
the never-trained ALBERT pooler (a head), and GRU/LSTM recurrent matrices and a Keras depthwise
kernel that barely left their Glorot/uniform init, each in a module that other tensors show
trained.

numpy only, pure functions of one tensor's entries.
"""

from __future__ import annotations

import math

import numpy as np

SMALL_MATRIX = 2048
"""Entries below which a matrix that shows no training may still be trained (see the module doc)."""

CHANCE_ENTRIES = 512
"""Entries per judgeable group of a file that a group showing no training must reach to count as
untouched without an exact init or other evidence (``silent_group_floor``)."""

MIN_FIT_ENTRIES = 256
"""Entries below which no distance tells an exact init from a trained matrix (trained 8x8 convs fit
N(0, 1) as well as a draw from it does)."""

FIT_KS = 1.95
"""Kolmogorov-Smirnov distance times sqrt(n) below which entries fit a standard init (p ~ 0.001 for
a true one, fitted edges included)."""

STANDARD_NORMAL_STDS = (1.0, 0.02, 0.01)
"""Fixed standard deviations of the normal inits in common use, whatever the layer's shape."""

MIN_TRUNCATED_ENTRIES = 2048
"""Entries below which a truncated normal is not told from a Gaussian whose sample range happens
to be short (their ranges overlap at 256 entries: 2.0-2.5 vs >= 2.2 standard deviations)."""

_TN_SPAN = (2.1, 2.5)
"""Half-range over std of a normal truncated at +-2 sd: 2.27 (2.18-2.38 in 2,000 draws of 2,048)."""

_FIT_SAMPLE = 4096
"""Entries tested at most (a strided subsample of larger matrices): ample to tell an exact init."""

_NEAR_SCALE = 0.25
"""A normal init's scale is tested only within this fraction of its std (far off, it cannot fit)."""

_CENTRED = 0.05
"""A bounded init (uniform, truncated normal) is centred on zero: |min + max| within this fraction
of its width."""


def silent_group_floor(groups: int) -> int:
    """Init-like entries a group must hold for "shows no training" to mean untouched, in a file of
    ``groups`` judgeable groups.

    A trained matrix of ``n`` entries looks init-like by chance with a probability of roughly
    ``256 / n`` or less (wild corpus: 0.42 at 256-511 entries, 0.23 at 512-1,023, 0.13 at
    1,024-2,047, 0.03 from 2,048 to 32,767), and a file of ``G`` groups gives ``G`` chances: a
    detector with 90 single-conv groups (Paddle or ONNX names) holds a trained 48 x 48 1x1 conv that
    looks iid as often as not. A silent group counts only when chance explains fewer than one such
    group in two files: ``G * 256 / n <= 0.5``, so ``n >= 512 * G`` and never under
    ``SMALL_MATRIX``. A group on an exact init, or marked by a BatchNorm that never ran or by missing
    optimizer state, needs no size.

    Example:
        >>> silent_group_floor(3), silent_group_floor(90)
        (2048, 46080)
    """
    return max(SMALL_MATRIX, CHANCE_ENTRIES * groups)


def _ks(sorted_values: np.ndarray, cdf: np.ndarray) -> float:
    """The Kolmogorov-Smirnov distance of sorted entries to a model's CDF at them, times sqrt(n)."""
    n = sorted_values.size
    upper = np.arange(1, n + 1) / n
    return float(max(np.max(upper - cdf), np.max(cdf - (upper - 1.0 / n))) * math.sqrt(n))


def _erf(z: np.ndarray) -> np.ndarray:
    """The error function (Abramowitz and Stegun 7.1.26, |error| < 1.5e-7): numpy has none."""
    a = np.abs(z)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t
    return np.sign(z) * (1.0 - poly * np.exp(-a * a))


def _centred_range(values: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """``(sorted entries, min, max)`` when the range is centred on zero as every bounded standard
    init's is (``|min + max|`` within ``_CENTRED`` of the width), else None (also all equal)."""
    x = np.sort(values.astype(np.float64).reshape(-1))
    lo, hi = float(x[0]), float(x[-1])
    if hi <= lo or abs(lo + hi) > _CENTRED * (hi - lo):
        return None
    return x, lo, hi


def uniform_distance(values: np.ndarray) -> float | None:
    """KS distance x sqrt(n) of the entries to the uniform on [min, max]; None when that uniform is
    not centred on zero (no standard init is) or the entries are all equal.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> uniform_distance(rng.uniform(-0.1, 0.1, 512)) < FIT_KS < uniform_distance(rng.normal(0, 0.1, 512))
        True
    """
    found = _centred_range(values)
    if found is None:
        return None
    x, lo, hi = found
    return _ks(x, (x - lo) / (hi - lo))


def truncated_normal_distance(values: np.ndarray) -> float | None:
    """KS distance x sqrt(n) of the entries to a normal truncated at two standard deviations (Keras'
    and JAX's variance-scaling inits, Paddle's ``TruncatedNormal``), its bound the entries' own; None
    when the range is off centre or its half is not the 2.27 standard deviations such a normal spans
    (a Gaussian's range grows with n: 2.8 at 2,048 entries).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(0, 0.1, 8000)
        >>> truncated_normal_distance(x[np.abs(x) < 0.2][:2048]) < FIT_KS, truncated_normal_distance(x[:2048])
        (True, None)
    """
    found = _centred_range(values)
    if found is None:
        return None
    x, lo, hi = found
    half, centre = (hi - lo) / 2.0, (hi + lo) / 2.0
    if not _TN_SPAN[0] < half / float(x.std()) < _TN_SPAN[1]:
        return None
    mass = math.erf(2.0 / math.sqrt(2.0))  # of N(0, 1) within +-2
    cdf = (_erf((x - centre) / (half / 2.0 * math.sqrt(2.0))) + mass) / (2.0 * mass)
    return _ks(x, cdf)


def normal_distance(values: np.ndarray, std: float) -> float:
    """KS distance x sqrt(n) of the entries to N(0, std).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> normal_distance(rng.normal(0, 0.02, 512), 0.02) < FIT_KS < normal_distance(rng.normal(0, 0.03, 512), 0.02)
        True
    """
    x = np.sort(values.astype(np.float64).reshape(-1))
    return _ks(x, 0.5 * (1.0 + _erf(x / (std * math.sqrt(2.0)))))


def standard_init_fit(values: np.ndarray) -> str | None:
    """The standard init the entries sit on exactly (``"uniform"``, ``"normal(0, 0.02)"``...), or None
    (also below ``MIN_FIT_ENTRIES`` entries, where no test can tell).

    Example:
        >>> rng = np.random.default_rng(1)
        >>> standard_init_fit(rng.uniform(-0.2, 0.2, (32, 16))), standard_init_fit(rng.normal(0, 1, (32, 16)))
        ('uniform', 'normal(0, 1)')
        >>> standard_init_fit(rng.laplace(0, 0.2, (32, 16))) is None
        True
    """
    if values.size < MIN_FIT_ENTRIES:
        return None
    values = values.reshape(-1)[:: max(1, values.size // _FIT_SAMPLE)]  # a fixed stride: cheap, still sharp
    distance = uniform_distance(values)
    if distance is not None and distance < FIT_KS:
        return "uniform"
    distance = truncated_normal_distance(values) if values.size >= MIN_TRUNCATED_ENTRIES else None
    if distance is not None and distance < FIT_KS:
        return "truncated normal"
    spread = float(np.sqrt(np.mean(values.astype(np.float64) ** 2)))
    for std in STANDARD_NORMAL_STDS:
        if abs(spread / std - 1.0) < _NEAR_SCALE and normal_distance(values, std) < FIT_KS:
            return f"normal(0, {std:g})"
    return None
