"""Spectral ratio: how much more structure a matrix has than its own entries shuffled.

An iid init of any scale, mode or distribution puts its top singular value at the edge of the
Marchenko-Pastur bulk, and so does the same matrix with its entries permuted: the ratio is ~1.0.
Training adds shared directions (low-rank structure) that a shuffle destroys: the ratio rises.
A single outlier entry survives the shuffle (it is still one entry), so it does not move the ratio.

numpy only (``verify`` must start fast); deterministic (fixed seeds, cached index sets).
"""

from __future__ import annotations

import functools

import numpy as np

MAX_ENTRIES = 1 << 18
"""Matrices above this many entries are judged on a deterministic row/column sample of this size."""

_EXACT_SIDE = 96
"""When the smaller side is at most this, the top singular value comes from the (small) Gram matrix."""

_POWER_ITERS = 24
_SEED = 20240613


_SMALL_ENTRIES = 1 << 14
"""Matrices up to this size average the reference over several shuffles (cheap, less noise)."""

_SMALL_SHUFFLES = 8


@functools.lru_cache(maxsize=256)
def _permutation(n: int, k: int = 0) -> np.ndarray:
    """Fixed-seed permutation ``k`` of ``range(n)``; cached because sizes repeat across blocks."""
    return np.random.default_rng(_SEED + 1000 * k).permutation(n)


@functools.lru_cache(maxsize=64)
def _sample_index(n: int, k: int, salt: int) -> np.ndarray:
    """A fixed, sorted sample of ``k`` of ``n`` indices."""
    rng = np.random.default_rng(_SEED + salt)
    return np.sort(rng.choice(n, size=k, replace=False))


@functools.lru_cache(maxsize=16)
def _start_vector(n: int) -> np.ndarray:
    v = np.random.default_rng(_SEED + 7).standard_normal(n).astype(np.float32)
    return v / np.linalg.norm(v)


def sample_matrix(mat: np.ndarray, max_entries: int = MAX_ENTRIES) -> np.ndarray:
    """Deterministically cut a large matrix down to about ``max_entries`` entries.

    The longer side is sampled first (towards a square), then both sides, so that the iid
    bulk edge of the sample stays comparable to structure that survives the sampling.

    Args:
        mat: 2-D array ``[out, fan_in]``.
        max_entries: size budget.

    Returns:
        ``mat`` itself when small enough, else a C-contiguous sampled copy.
    """
    m, n = mat.shape
    if m * n <= max_entries:
        return mat
    side = int(np.sqrt(max_entries))
    if m >= n:
        keep_n = n if n <= side else side
        keep_m = max(1, max_entries // keep_n)
    else:
        keep_m = m if m <= side else side
        keep_n = max(1, max_entries // keep_m)
    keep_m, keep_n = min(m, keep_m), min(n, keep_n)
    out = mat
    if keep_m < m:
        out = out[_sample_index(m, keep_m, 1)]
    if keep_n < n:
        out = out[:, _sample_index(n, keep_n, 2)]
    return np.ascontiguousarray(out)


def shuffled(mat: np.ndarray, k: int = 0) -> np.ndarray:
    """``mat`` with its entries permuted by fixed-seed permutation ``k`` of its size."""
    return mat.reshape(-1)[_permutation(mat.size, k)].reshape(mat.shape)


def top_singular_value(mat: np.ndarray) -> float:
    """Top singular value: small Gram eigenvalue when a side is small, else block power iteration.

    Args:
        mat: 2-D float array.

    Returns:
        The (estimated) largest singular value, >= 0.
    """
    if mat.shape[0] < mat.shape[1]:
        mat = mat.T
    m, n = mat.shape  # m >= n
    if n <= _EXACT_SIDE:  # Gram matrix is at most 96 x 96: exact and cheap
        gram = mat.T.astype(np.float64) @ mat.astype(np.float64)
        return float(np.sqrt(max(np.linalg.eigvalsh(gram)[-1], 0.0)))
    v = _start_vector(n)
    for _ in range(_POWER_ITERS):
        v = mat.T @ (mat @ v)
        norm = float(np.linalg.norm(v))
        if norm == 0.0:
            return 0.0
        v /= norm
    return float(np.linalg.norm(mat @ v))


def spectral_ratio(mat: np.ndarray, *, max_entries: int = MAX_ENTRIES) -> float | None:
    """Top singular value of ``mat`` over that of ``mat`` with its entries shuffled.

    Args:
        mat: 2-D finite float array ``[out, fan_in]``.
        max_entries: above this size a deterministic sample is judged (shuffled within the sample).

    Returns:
        The ratio (~1.0 for iid entries, clearly above for trained weights), or None when the
        matrix is all zeros.

    Example:
        >>> import numpy as np
        >>> w = np.random.default_rng(0).standard_normal((256, 128)).astype(np.float32)
        >>> 0.9 < spectral_ratio(w) < 1.1
        True
    """
    sample = sample_matrix(np.asarray(mat, dtype=np.float32), max_entries)
    # Scale out the magnitude so float32 power iteration neither under- nor overflows.
    scale = float(np.max(np.abs(sample)))
    if scale == 0.0:
        return None
    sample = sample / np.float32(scale)
    shuffles = _SMALL_SHUFFLES if sample.size <= _SMALL_ENTRIES else 1
    ref = float(np.mean([top_singular_value(shuffled(sample, k)) for k in range(shuffles)]))
    if ref == 0.0:
        return None
    return top_singular_value(sample) / ref
