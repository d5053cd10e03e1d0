"""Runs side by side: per state, what each run kept (per block), cost (parameters, FLOPs per image) and
reached; and one figure of test accuracy against the fraction of parameters or FLOPs removed (a line
per run, a panel per dataset).

Example:
    >>> runs = compare_runs(["runs/a_refill_cifar10", "runs/b_rsst_cifar10"])  # doctest: +SKIP
    >>> plot_comparison(runs, "compare.png")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ckpttool.errors import InvalidArgumentError
from pruning_runner.runs import RunRecord, RunRecordError, read_run, read_states


@dataclass(frozen=True)
class StateRow:
    """One state of one run."""

    state: int
    params_removed: float | None  # fraction of state 0's (dense) parameters removed; None without state 0
    kept_heads: int
    total_heads: int
    kept_neurons: int
    total_neurons: int
    params: int
    best_val_acc: float
    test_acc_at_best_val: float
    flops: int | None = None  # forward FLOPs per image (None: a run recorded before FLOPs were)
    flops_removed: float | None = None  # fraction of state 0's FLOPs removed
    kept_heads_per_block: tuple[int, ...] | None = None
    kept_neurons_per_block: tuple[int, ...] | None = None
    mask: str | None = None  # the state's mask file, relative to the run folder


@dataclass(frozen=True)
class ComparedRun:
    """One run's identity and its states."""

    record: RunRecord
    states: tuple[StateRow, ...]

    @property
    def label(self) -> str:
        r = self.record
        return f"{r.method} / {r.dataset} / {r.verdict}"

    def to_dict(self) -> dict:
        return {**self.record.to_dict(), "label": self.label, "states": [asdict(s) for s in self.states]}


def _optional_ints(value) -> tuple[int, ...] | None:
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    return None


def _rows(states: list[dict]) -> tuple[StateRow, ...]:
    dense = next((s["params"] for s in states if s.get("state") == 0 and s.get("params")), None)
    dense_flops = next((s.get("flops") for s in states if s.get("state") == 0 and s.get("flops")), None)
    rows = []
    for s in states:
        flops = s.get("flops")
        flops = flops if isinstance(flops, int) and not isinstance(flops, bool) else None
        mask = s.get("mask") if isinstance(s.get("mask"), str) else None
        rows.append(StateRow(
            state=s["state"], params_removed=None if dense is None else 1.0 - s["params"] / dense,
            kept_heads=s["kept_heads"], total_heads=s["total_heads"], kept_neurons=s["kept_neurons"],
            total_neurons=s["total_neurons"], params=s["params"], best_val_acc=float(s["best_val_acc"]),
            test_acc_at_best_val=float(s["test_acc_at_best_val"]),
            flops=flops, flops_removed=None if not (flops and dense_flops) else 1.0 - flops / dense_flops,
            kept_heads_per_block=_optional_ints(s.get("kept_heads_per_block")),
            kept_neurons_per_block=_optional_ints(s.get("kept_neurons_per_block")),
            mask=mask,
        ))
    return tuple(rows)


_REQUIRED = ("state", "kept_heads", "total_heads", "kept_neurons", "total_neurons", "params", "best_val_acc",
             "test_acc_at_best_val")


def compare_runs(run_dirs: Sequence[str | Path]) -> tuple[ComparedRun, ...]:
    """Read each run folder's records (in the order given).

    Raises:
        InvalidArgumentError: a folder is not a run folder, or its records are garbled (named).
    """
    out = []
    for d in run_dirs:
        folder = Path(d)
        try:
            record = read_run(folder)
            states = read_states(folder) if record is not None else []
            missing = sorted({k for s in states for k in _REQUIRED if k not in s})
            if missing:
                raise RunRecordError(f"summary.json states lack {', '.join(missing)}")
        except RunRecordError as e:
            raise InvalidArgumentError(f"cannot compare {folder}: {e}") from e
        if record is None:
            raise InvalidArgumentError(f"{folder} is not a run folder (no run.json); pass run folders")
        out.append(ComparedRun(record, _rows(states)))
    return tuple(out)


def plot_comparison(runs: Sequence[ComparedRun], path: str | Path, *, x: str = "params") -> dict[str, list[str]]:
    """Test accuracy (at the best-validation epoch) against the fraction of parameters (or FLOPs) removed.

    One line per run labelled method / dataset / init verdict (the folder name added where two
    labels would be equal), one panel per dataset. Written atomically as PNG.

    Returns:
        dataset -> the labels of its panel's lines, in drawing order.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ckpttool._atomic import atomic_write

    if x not in ("params", "flops"):
        raise InvalidArgumentError(f"unknown x axis {x!r}; choose params or flops")
    removed = f"{x}_removed"
    datasets = sorted({r.record.dataset for r in runs})
    labels = [r.label for r in runs]
    fig = Figure(figsize=(5.5 * len(datasets), 4), dpi=100)
    FigureCanvasAgg(fig)
    panels: dict[str, list[str]] = {}
    for i, dataset in enumerate(datasets):
        ax = fig.add_subplot(1, len(datasets), i + 1)
        panels[dataset] = []
        for run, label in zip(runs, labels, strict=True):
            if run.record.dataset != dataset:
                continue
            if labels.count(label) > 1:
                label = f"{label} ({Path(run.record.path).name})"
            pts = [(100 * getattr(s, removed), 100 * s.test_acc_at_best_val) for s in run.states
                   if getattr(s, removed) is not None]
            # labels come from run.json: a "$" would start matplotlib's mathtext
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=label.replace("$", r"\$"))
            panels[dataset].append(label)
        ax.set_title(dataset, fontsize=10)
        ax.set_xlabel(f"{'FLOPs' if x == 'flops' else 'parameters'} removed (%)")
        ax.set_ylabel("test accuracy at best val (%)")
        ax.grid(True, alpha=0.3)
        if panels[dataset]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(Path(path), "wb") as f:
        fig.savefig(f, format="png")
    return panels
