"""Exact standard inits: what makes a small matrix that shows no training *untouched* rather than
merely too small to tell.

Real training can leave a small matrix within the noise of every test of ``ckpttool._init_shape``:
of the real trained matrices in the wild corpus (``benchmarks/wild_weights.py``: 1,101 matrices of
44 files), 40 of 104 under 1,024 entries and 7 of 57 of 1,024-2,047 look init-like, against 23 of
940 from 2,048 up. So a matrix that shows no training is evidence that its module is untouched only
from ``SMALL_MATRIX`` entries up, or when its entries sit exactly on a standard init:

- **uniform** with hard edges and centred on zero (PyTorch's Linear/Conv default, Glorot and
  Kaiming uniform): the Kolmogorov-Smirnov distance to the uniform on the entries' own range;
- **N(0, 1)** (PyTorch's Embedding default, e3nn) or **N(0, 0.02)** / **N(0, 0.01)** (BERT, GPT,
  ViT and timm's ``trunc_normal_``, detection heads): the distance to that exact normal, scale
  included.

Training rarely leaves either: its updates round a uniform's edges and move a fixed scale. The
distance times sqrt(n) stays under ``FIT_KS`` for 999 in 1,000 exact inits of 256-2,000 entries
(4,000 draws at each of five sizes). Of the 32 real trained matrices of 256-2,047 entries that look
init-like in the wild corpus, two sit on a uniform (a DyNet LSTM's and a Keras depthwise kernel
that barely left their Glorot init; modules that other tensors show trained) and none on a
standard normal; the rest measure >= 2.3 from a uniform and >= 2.9 from every standard normal.

numpy only, pure functions of one tensor's entries.
"""

from __future__ import annotations

import math

import numpy as np

SMALL_MATRIX = 2048
"""Entries below which a matrix that shows no training may still be trained (see the module doc)."""

MIN_FIT_ENTRIES = 256
"""Entries below which no distance tells an exact init from a trained matrix (trained 8x8 convs fit
N(0, 1) as well as a draw from it does)."""

FIT_KS = 1.95
"""Kolmogorov-Smirnov distance times sqrt(n) below which entries fit a standard init (p ~ 0.001 for
a true one, fitted edges included)."""

STANDARD_NORMAL_STDS = (1.0, 0.02, 0.01)
"""Fixed standard deviations of the normal inits in common use, whatever the layer's shape."""

_CENTRED = 0.05
"""A uniform init is centred on zero: |min + max| within this fraction of its width."""


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


def uniform_distance(values: np.ndarray) -> float | None:
    """KS distance x sqrt(n) of the entries to the uniform on [min, max]; None when that uniform is
    not centred on zero (no standard init is) or the entries are all equal.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> uniform_distance(rng.uniform(-0.1, 0.1, 512)) < FIT_KS < uniform_distance(rng.normal(0, 0.1, 512))
        True
    """
    x = np.sort(values.astype(np.float64).reshape(-1))
    lo, hi = float(x[0]), float(x[-1])
    if hi <= lo or abs(lo + hi) > _CENTRED * (hi - lo):
        return None
    return _ks(x, (x - lo) / (hi - lo))


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
    distance = uniform_distance(values)
    if distance is not None and distance < FIT_KS:
        return "uniform"
    for std in STANDARD_NORMAL_STDS:
        if normal_distance(values, std) < FIT_KS:
            return f"normal(0, {std:g})"
    return None
