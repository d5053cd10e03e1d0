"""`inspect --plot` / `verify --plot`: the network along its depth, coloured by what the verdict made
of each group, with the verdict in the title.

One column per module group in file order. A strip on top and the panels' background carry the
group's colour (trained, untouched, uncounted input layer, inconclusive, head, unjudged, non-finite);
the panels show the median std and the median spectral ratio of the group's matrices (an iid init
sits at ~1.0, trained layers clearly above). What each group *is* comes from the Verdict's own
fields (``groups``, ``untouched_groups``, ``uncounted_groups``, ``inconclusive_groups``, ``head``),
never re-derived here: the picture says what the verdict said. matplotlib is imported here only
(Agg backend, no display).
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ckpttool._atomic import atomic_write
from ckpttool.report.escape import escape_text
from ckpttool.verdict import Verdict
from ckpttool.verdict.grouping import assign_groups
from ckpttool.verdict.stats import TensorStats

# category -> (colour, legend label); the order is the legend's
CATEGORIES = {
    "trained": ("#2ca02c", "trained"),
    "untouched": ("#d62728", "untouched (counted)"),
    "uncounted": ("#ff7f0e", "input layer, looks untouched (not counted)"),
    "inconclusive": ("#bcbd22", "too small to tell (set aside)"),
    "head": ("#1f77b4", "classifier head (left out)"),
    "unjudged": ("#c7c7c7", "no evidence (init constants, tiny)"),
    "nonfinite": ("#000000", "NaN/Inf"),
}
_VERDICT_COLOURS = {"pretrained": "#2ca02c", "random": "#7f7f7f", "partial": "#d62728", "inconclusive": "#bcbd22",
                    "corrupt": "#000000"}


@dataclass(frozen=True)
class GroupRow:
    """One column of the plot."""

    name: str
    category: str  # a key of CATEGORIES
    std: float | None  # median std of the group's matrices (of its tensors when it has no matrix)
    spectral_ratio: float | None  # median spectral ratio of its matrices; None without one


def group_rows(stats: Sequence[TensorStats], verdict: Verdict) -> list[GroupRow]:
    """The plot's columns: the verdict's groups (and the head) in file order, each with its category.

    Tensors are placed in groups by the same ``assign_groups`` the verdict uses; a tensor whose group
    the verdict folded into another (a BatchNorm exported apart from its conv) joins the column before.
    """
    names = [s.name for s in stats]
    group = assign_groups(names, [s.name for s in stats if s.spectral_ratio is not None])
    category = _categories(verdict)
    head = {s.name for s in verdict.head}
    members: dict[str, list[TensorStats]] = {}
    for s in stats:
        g = group[s.name]
        if s.name in head and not verdict.head_included:
            category.setdefault(g, "head")
        elif g not in category and members:  # folded into the group before it by the verdict
            g = next(reversed(members))
        members.setdefault(g, []).append(s)
    return [GroupRow(g, category.get(g, "unjudged"), *_medians(ms)) for g, ms in members.items()]


def save_verdict_plot(stats: Sequence[TensorStats], verdict: Verdict, out: str | Path, *, title: str = "") -> Path:
    """Write the PNG described in the module docstring, atomically.

    Example:
        >>> report = verify_file("x.pth.tar")  # doctest: +SKIP
        >>> save_verdict_plot(report.stats, report.verdict, "x.png", title="x.pth.tar")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = group_rows(stats, verdict)
    x = list(range(len(rows)))
    colours = [CATEGORIES[r.category][0] for r in rows]
    fig, (strip, ax1, ax2) = plt.subplots(
        3, 1, figsize=(max(7.0, 0.32 * len(rows) + 2.5), 7.2), sharex=True,
        gridspec_kw={"height_ratios": [0.55, 2, 2]})
    strip.bar(x, [1] * len(rows), width=1.0, color=colours, edgecolor="white", linewidth=0.8)
    strip.set_yticks([])
    strip.set_ylim(0, 1)
    strip.set_ylabel("verdict", rotation=0, ha="right", va="center")
    for ax in (ax1, ax2):
        for i, c in zip(x, colours, strict=True):
            ax.axvspan(i - 0.5, i + 0.5, color=c, alpha=0.13, linewidth=0)
    _series(ax1, x, [r.std for r in rows], colours)
    ax1.set_ylabel("median std")
    if any(r.std for r in rows):
        ax1.set_yscale("log")
    _series(ax2, x, [r.spectral_ratio for r in rows], colours)
    ax2.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax2.text(-0.45, 1.0, "iid init ~1.0", ha="left", va="bottom", fontsize=7, color="grey")
    ax2.set_ylabel("median spectral ratio")
    ax2.set_xticks(x)
    ax2.set_xticklabels([_label(r.name) for r in rows], rotation=90, fontsize=7)
    ax2.set_xlim(-0.5, len(rows) - 0.5)
    present = [c for c in CATEGORIES if any(r.category == c for r in rows)]
    strip.legend(handles=[Patch(color=CATEGORIES[c][0], label=CATEGORIES[c][1]) for c in present],
                 loc="lower left", bbox_to_anchor=(0, 1.02), fontsize=7, frameon=False,
                 ncol=max(1, min(len(present), int(fig.get_figwidth() / 2.6))))
    reason = "\n".join(textwrap.wrap(_label(verdict.reason), width=max(60, int(fig.get_figwidth() * 14))))
    fig.suptitle(f"{_label(title)}: {verdict.verdict.upper()}" if title else verdict.verdict.upper(),
                 color=_VERDICT_COLOURS.get(verdict.verdict, "black"), fontweight="bold")
    fig.text(0.5, 0.94, reason, ha="center", va="top", fontsize=7.5)
    fig.tight_layout(rect=(0, 0, 1, 0.955 - 0.018 * reason.count("\n")))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    out = Path(out)
    with atomic_write(out) as f:
        f.write(buf.getvalue())
    return out


def _categories(verdict: Verdict) -> dict[str, str]:
    """Group name -> category, from the verdict's fields (the lists first: they say how a group was
    counted, e.g. an inconclusive group that counted as untouched)."""
    out = {g.name: g.status if g.status in CATEGORIES else "unjudged" for g in verdict.groups}
    out.update({g: "untouched" for g in verdict.untouched_groups})
    out.update({g: "inconclusive" for g in verdict.inconclusive_groups})
    out.update({g: "uncounted" for g in verdict.uncounted_groups})
    return out


def _series(ax, x: list[int], ys: list[float | None], colours: list[str]) -> None:
    pts = [(i, y, c) for i, y, c in zip(x, ys, colours, strict=True) if y is not None and y > 0]
    if not pts:
        return
    ax.plot([p[0] for p in pts], [p[1] for p in pts], color="#555555", linewidth=0.8, zorder=1)
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], c=[p[2] for p in pts], s=28, zorder=2,
               edgecolors="black", linewidths=0.4)


def _medians(members: list[TensorStats]) -> tuple[float | None, float | None]:
    matrices = [s for s in members if s.spectral_ratio is not None]
    stds = [s.std for s in (matrices or members) if s.std is not None]
    return _median(stds), _median([s.spectral_ratio for s in matrices])


def _label(text: object) -> str:
    """Text from a file, made safe to draw: escaped like every output, and ``$`` taken literally
    (matplotlib would parse ``$...$`` as math and fail on a hostile name)."""
    return escape_text(text).replace("$", r"\$")


def _median(xs: list[float]) -> float | None:
    if not xs:
        return None
    ys = sorted(xs)
    n = len(ys)
    return ys[n // 2] if n % 2 else 0.5 * (ys[n // 2 - 1] + ys[n // 2])
