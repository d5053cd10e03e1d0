"""Scale-free signals of training that stay visible when the spectrum does not.

Some trained layers keep a spectral ratio near 1 and Gaussian-like tails: wide 1x1 convolutions,
depthwise kernels, short matrices, input-side MLP layers, layers that barely moved from a uniform
init. Two departures from an iid init that need a model of the init's shape show them:

- **line-norm dispersion**: the spread of the rows' (and the columns') sums of squares over the
  spread the same entries give in random positions. An iid init of any scale or distribution gives
  ~1 (a single clamped outlier moves a line and its permuted twin alike); trained
  weights give 0.3-0.7 (weight decay and normalisation even out the rows) or 1.5-5 (a BatchNorm
  folded into the rows, dead or dominant units). The evidence is ``z = ln(ratio) * sqrt(2 * lines)``,
  whose iid spread is ~1 for any matrix shape. Lines of exactly equal norm (orthogonal or
  normalised inits) are an init pattern, not evidence.
- **uniform edge overshoot**: a uniform init (PyTorch's ``kaiming_uniform_`` default, Glorot
  uniform) or a truncated normal one has a hard edge. The family is told apart by its excess
  kurtosis (uniform -1.2, normal 0), and the truncated normal of the same kurtosis bounds every
  entry at a known multiple of the standard deviation; entries beyond that bound cannot come from
  any such init, however little training moved the rest.

Two more need no model of the init beyond "zero-mean, no heavier-tailed than a Gaussian", which
holds for every standard init (uniform, normal, truncated normal, orthogonal, any scale):

- **mean offset**: ``|mean| / (std / sqrt(n))``, ~|N(0, 1)| for a zero-mean init;
- **trimmed excess kurtosis**: the kurtosis of the entries within 12 robust standard deviations of
  the median, over its standard error ``sqrt(24 / n)``. Trimming drops the rare clamped +-2 values of
  torch's ``trunc_normal_`` (100 standard deviations out at std 0.02; they put a random init's
  plain kurtosis in the hundreds) and keeps the heavy tails that training grows (kurtosis 0.3-20 in
  small convs that the tail ratio, a 99th-percentile statistic, cannot see).

Each signal is a z-score, ~N(0, 1) for an iid init; one decides alone when far out, and together
(root sum of squares) they decide for small matrices where several are moderately out.

numpy only, pure functions of one matrix. The thresholds were set on the matrices of one random
init per timm family (79 families up to 30M parameters) and hold with margin over every timm model
up to 30M parameters (663, ``benchmarks/random_families.py --all``, all called random). Largest
values seen: dispersion |z| 5.2 (threshold 7), kurtosis z 3.9 (8), mean z 4.6 (8), edge overshoot
0.997 (1.02) over the 79; combined 6.1 (8) over the 663.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

MIN_LINES = 16
"""Rows (or columns) below this are too few for a dispersion to say anything."""

DISPERSION_Z = 7.0
"""|z| at or above which a line-norm dispersion is evidence of training. iid inits stay within
+-4.6 (2000 simulated draws of normal, uniform and outlier-clamped matrices from 8x9 to 1024x512)
and within +-5.2 over the matrices of 79 timm families' random inits."""

EQUAL_NORMS = 0.05
"""A dispersion ratio below this means lines of equal norm by construction (orthogonal init)."""

UNIFORM_LIKE_KURTOSIS = -0.3
"""Excess kurtosis below which a matrix's entries are bounded-init-like: a uniform (-1.2) or a normal
truncated at up to ~2.6 standard deviations (jax's ``lecun_normal``: -0.64), each with a hard edge."""

EDGE_MARGIN = 1.02
"""Observed edge (max |x - mean| / std) over the bound of the matching truncated normal at or above
which entries are beyond any uniform-like init's support."""

MIN_EDGE_ENTRIES = 256

MEAN_Z = 8.0
"""Mean offset at or above which a matrix is not a zero-mean init (timm random inits: <= 4.6)."""

KURTOSIS_Z = 8.0
"""Trimmed excess kurtosis, in standard errors, at or above which entries are heavier-tailed than any
init gives (timm random inits: <= 3.9)."""

COMBINED_Z = 8.0
"""Root sum of squares of the evidence z-scores (positive kurtosis, tail and mean offsets, both
dispersions over 16 or more lines) at or above which several moderate departures together show
training (663 timm random inits: <= 6.1; iid chi-square with 5 degrees of freedom: p ~ 1e-12). Fewer
lines than 16 make a dispersion's z skewed (the spread of 9 values can come out near zero by
chance), so they count neither alone nor here."""

_TRIM_SIGMAS = 12.0
_KURTOSIS_SAMPLE = 1 << 15
_MIN_KURTOSIS_ENTRIES = 128


def line_dispersions(sample: np.ndarray) -> tuple[float | None, float | None]:
    """``(rows, columns)``: the spread of the row (column) sums of squares over the spread the same
    entries would give in random positions; ~1.0 for iid entries, None where it cannot be formed.

    The reference is exact, not sampled: over all permutations of the entries, a line of ``k`` of
    the ``N`` squared entries sums to a variance of ``k * var(x^2) * (N - k) / (N - 1)``, and since
    the lines always add up to the same total, the spread across the lines of one matrix estimates
    exactly that (a single clamped outlier inflates both alike).

    Example:
        >>> w = np.random.default_rng(0).standard_normal((128, 64)).astype(np.float32)
        >>> r, c = line_dispersions(w)
        >>> bool(0.8 < r < 1.25 and 0.8 < c < 1.25)
        True
    """
    sq = sample.astype(np.float64) ** 2
    n = sq.size
    var = float(sq.var())
    if var <= 0.0 or n < 2:
        return None, None
    out = []
    for axis in (1, 0):
        k = sample.shape[axis]  # entries per line
        expected = k * var * (n - k) / (n - 1)
        out.append(math.sqrt(float(sq.sum(axis=axis).var()) / expected) if expected > 0 else None)
    return out[0], out[1]


def dispersion_z(ratio: float | None, lines: int) -> float | None:
    """The evidence of a dispersion ratio over ``lines`` rows or columns: ~N(0, 1) for iid entries.
    None when there are too few lines or the lines have equal norms by construction.

    Example:
        >>> round(dispersion_z(2.0, 64), 1), dispersion_z(2.0, 8), dispersion_z(0.01, 512)
        (7.8, None, None)
    """
    if ratio is None or lines < MIN_LINES or ratio < EQUAL_NORMS:
        return None
    return math.log(ratio) * math.sqrt(2.0 * lines)


@functools.lru_cache(maxsize=1)
def _truncated_normal_table() -> tuple[np.ndarray, np.ndarray]:
    """(excess kurtosis, edge in standard deviations) of a normal truncated at +-k, k from 0.01 to 8."""
    k = np.linspace(0.01, 8.0, 4000)
    phi = np.exp(-0.5 * k * k) / math.sqrt(2 * math.pi)
    z = np.array([math.erf(x / math.sqrt(2)) for x in k])  # P(|x| < k)
    m2 = 1.0 - 2.0 * k * phi / z
    m4 = 3.0 * m2 - 2.0 * k**3 * phi / z
    return m4 / m2**2 - 3.0, k / np.sqrt(m2)


def uniform_edge_bound(kurtosis: float, n: int) -> float:
    """The largest ``|x - mean| / std`` that a uniform-like init with this sample kurtosis can give:
    the edge of the truncated normal whose kurtosis is 3 standard errors above the sample's.

    Example:
        >>> round(uniform_edge_bound(-1.2, 1 << 16), 2)
        1.76
    """
    kurt, edge = _truncated_normal_table()
    # 3 standard errors above: a small sample's kurtosis can read low by chance, and a higher one
    # means a farther edge. The error grows from ~2.4 / sqrt(n) for a uniform to sqrt(24 / n) for a
    # normal; taken at the sample's own shape (the uniform figure alone let a random TNT matrix of
    # kurtosis -0.4 through).
    spread = 0.49 + 0.51 * min(max((kurtosis + 1.2) / 1.2, 0.0), 1.0)
    upper = kurtosis + 3.0 * spread * math.sqrt(24.0 / n)
    return float(np.interp(upper, kurt, edge))


def edge_overshoot(edge: float, kurtosis: float | None, n: int) -> float | None:
    """Observed edge over the bound of a uniform-like init (>= ``EDGE_MARGIN``: entries beyond its
    support); None when the entries are not uniform-like or too few.

    Example:
        >>> u = np.random.default_rng(0).uniform(-1, 1, 4096)
        >>> bool(edge_overshoot(float(np.abs(u).max() / u.std()), -1.2, 4096) < 1.0)
        True
    """
    if kurtosis is None or kurtosis >= UNIFORM_LIKE_KURTOSIS or n < MIN_EDGE_ENTRIES:
        return None
    return edge / uniform_edge_bound(kurtosis, n)


def mean_z(mean: float, std: float, n: int) -> float | None:
    """``|mean| / (std / sqrt(n))``: ~|N(0, 1)| for entries from a zero-mean init.

    Example:
        >>> mean_z(0.1, 1.0, 10_000)
        10.0
    """
    return abs(mean) / (std / math.sqrt(n)) if std > 0 and n > 1 else None


@dataclass(frozen=True)
class CenteredEntries:
    """A matrix's non-zero entries (a fixed strided subsample of at most 32768) about their median:
    what the tail ratio and the trimmed kurtosis share, computed once."""

    values: np.ndarray  # float64
    deviations: np.ndarray  # |values - median|
    mad: float  # median of the deviations


def centered_entries(sample: np.ndarray) -> CenteredEntries | None:
    """The non-zero entries about their median; None below 128 of them."""
    flat = sample.reshape(-1)
    flat = flat[flat != 0]
    if flat.size < _MIN_KURTOSIS_ENTRIES:
        return None
    flat = flat[:: max(1, flat.size // _KURTOSIS_SAMPLE)].astype(np.float64)
    dev = np.abs(flat - np.median(flat))
    return CenteredEntries(flat, dev, float(np.median(dev)))


def trimmed_kurtosis(sample: np.ndarray | CenteredEntries) -> tuple[float, int] | None:
    """``(excess kurtosis, n)`` of the non-zero entries (a fixed strided subsample of at most 32768)
    within 12 robust standard deviations (1.4826 x the median absolute deviation) of their median;
    None below 128 entries or when the spread is zero.

    Example:
        >>> g = np.random.default_rng(0).standard_normal(20_000)
        >>> g[:3] = 1e4  # clamped outliers are trimmed away
        >>> k, n = trimmed_kurtosis(g)
        >>> abs(k) < 0.2
        True
    """
    c = sample if isinstance(sample, CenteredEntries) else centered_entries(sample)
    if c is None or c.mad == 0.0:
        return None
    kept = c.values[c.deviations <= _TRIM_SIGMAS * 1.4826 * c.mad]
    d = kept - kept.mean()
    m2 = float(np.dot(d, d)) / d.size
    if m2 == 0.0:
        return None
    d2 = d * d
    return float(np.dot(d2, d2)) / d.size / (m2 * m2) - 3.0, int(kept.size)


def kurtosis_z(kurtosis: float, n: int) -> float:
    """An excess kurtosis in standard errors of a Gaussian sample of ``n`` (``sqrt(24 / n)``).

    Example:
        >>> round(kurtosis_z(0.5, 6144), 1)
        8.0
    """
    return kurtosis / math.sqrt(24.0 / n)


def combined_z(parts: list[float | None]) -> float:
    """The root sum of squares of the evidence z-scores that exist (each ~N(0, 1) for an iid init).

    Example:
        >>> combined_z([6.0, None, 6.0, 3.0])
        9.0
    """
    return math.sqrt(sum(p * p for p in parts if p is not None))
