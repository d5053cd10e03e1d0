"""`inspect --plot`: per-layer std and spectral ratio along the depth of the network.

The picture a person wants when a run looks wrong: a random block is a flat ~1.0 spectral ratio where
its neighbours stand well above. matplotlib is imported here only (Agg backend, no display).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from ckpttool._atomic import atomic_write
from ckpttool.verdict.grouping import group_of
from ckpttool.verdict.stats import TensorStats


def depth_profile(stats: Sequence[TensorStats]) -> list[tuple[str, float | None, float | None]]:
    """(group, median std of its matrices, median spectral ratio) in file order, one row per group."""
    order: list[str] = []
    stds: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    for s in stats:
        if s.spectral_ratio is None:
            continue
        g = group_of(s.name)
        if g not in stds:
            order.append(g)
            stds[g], ratios[g] = [], []
        if s.std is not None:
            stds[g].append(s.std)
        ratios[g].append(s.spectral_ratio)
    return [(g, _median(stds[g]), _median(ratios[g])) for g in order]


def save_depth_plot(stats: Sequence[TensorStats], out: str | Path, *, title: str = "") -> Path:
    """Write a PNG with two panels (std, spectral ratio) along the groups of the network, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = depth_profile(stats)
    names = [r[0] for r in rows]
    x = list(range(len(rows)))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6.0, 0.35 * len(rows) + 2), 6), sharex=True)
    ax1.plot(x, [r[1] for r in rows], marker="o")
    ax1.set_ylabel("median std of matrices")
    ax1.set_yscale("log")
    ax2.plot(x, [r[2] for r in rows], marker="o", color="tab:red")
    ax2.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="iid init (~1.0)")
    ax2.set_ylabel("median spectral ratio")
    ax2.legend(loc="upper right")
    ax2.set_xticks(x)
    ax2.set_xticklabels(names, rotation=90, fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    out = Path(out)
    with atomic_write(out) as f:
        f.write(buf.getvalue())
    return out


def _median(xs: list[float]) -> float | None:
    if not xs:
        return None
    ys = sorted(xs)
    n = len(ys)
    return ys[n // 2] if n % 2 else 0.5 * (ys[n // 2 - 1] + ys[n // 2])
