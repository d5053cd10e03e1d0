"""What a run leaves in its folder, written atomically.

- ``config.toml``: the resolved configuration.
- ``run.json``: init path / sha256 / verdict, seed, deterministic, versions, device, start / end, status.
- ``metrics.jsonl``: one line per epoch (state, epoch, lr, train_loss, train_acc, val_acc, test_acc,
  seconds, images_per_s, and the state's params, flops, kept_heads_per_block, kept_neurons_per_block;
  RSST adds rsst_lambda and rsst_norm_ratio).
- ``summary.json``: ``{"states": [...], "init": {"path", "sha256", "verdict"}}``; a state holds its kept
  heads / neurons (totals and per block), params, FLOPs per image, mask file, best val, test at best val.
- ``masks/state_NN.safetensors``: each state's kept heads ``[depth, H]`` and neurons ``[depth, M]`` (bool).
- ``accuracy_vs_sparsity.png``.
- ``init.safetensors`` (the run's immutable start, once), ``rewind.safetensors`` (rewind_lt),
  ``checkpoint.pt`` (latest), ``final_compact.safetensors`` (the last state's best-validation model).

Example:
    >>> folder = RunFolder(Path("runs/demo"))  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Any

from ckpttool._atomic import atomic_write

CONFIG = "config.toml"
RUN = "run.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
PLOT = "accuracy_vs_sparsity.png"
INIT = "init.safetensors"
REWIND = "rewind.safetensors"
CHECKPOINT = "checkpoint.pt"
FINAL = "final_compact.safetensors"
MASKS = "masks"


def mask_file(state: int) -> str:
    """Where state ``state``'s mask lives, relative to the run folder."""
    return f"{MASKS}/state_{state:02d}.safetensors"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_run_dir(method: str, dataset: str, root: str | Path = "runs") -> Path:
    """``runs/<UTC time>_<method>_<dataset>``."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(root) / f"{stamp}_{method}_{dataset}"


def versions() -> dict[str, str]:
    import timm
    import torch

    import ckpttool

    return {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "ckpttool": ckpttool.__version__}


class RunFolder:
    """Reads and writes the records of one run folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def write_text(self, name: str, text: str) -> None:
        with atomic_write(self.file(name), "w") as f:
            f.write(text)

    def write_json(self, name: str, obj: Any) -> None:
        self.write_text(name, json.dumps(obj, indent=2, sort_keys=False) + "\n")

    def read_json(self, name: str) -> Any:
        return json.loads(self.file(name).read_text(encoding="utf-8"))

    def update_run(self, **fields: Any) -> dict:
        """Merge ``fields`` into run.json (atomic)."""
        data = self.read_json(RUN) if self.file(RUN).exists() else {}
        data.update(fields)
        self.write_json(RUN, data)
        return data

    def append_metrics(self, line: dict) -> None:
        from ckpttool._files import open_regular

        # never through a planted symlink, never into a FIFO: the run folder may be shared
        fd = open_regular(self.file(METRICS), action="cannot append metrics to", follow_symlinks=False,
                          flags=os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, sort_keys=False) + "\n")

    def read_metrics(self) -> list[dict]:
        p = self.file(METRICS)
        if not p.exists():
            return []
        return [json.loads(s) for s in p.read_text(encoding="utf-8").splitlines() if s.strip()]

    def truncate_metrics(self, state: int, epoch: int) -> None:
        """Keep only lines before (state, epoch): what a resumed run has not redone."""
        keep = [m for m in self.read_metrics() if (m["state"], m["epoch"]) < (state, epoch)]
        self.write_text(METRICS, "".join(json.dumps(m) + "\n" for m in keep))

    def write_summary(self, states: list[dict], init: dict, **extra: Any) -> None:
        self.write_json(SUMMARY, {"states": states, "init": init, **extra})

    def write_plot(self, states: list[dict], title: str) -> None:
        """accuracy_vs_sparsity.png: test accuracy at the best-validation epoch against sparsity."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 3.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        for key, label in (("kept_heads", "heads"), ("kept_neurons", "MLP neurons")):
            total = key.replace("kept", "total")
            xs = [100.0 * (1 - s[key] / s[total]) for s in states if s[total]]
            if xs and any(x > 0 for x in xs):
                ax.plot(xs, [100.0 * s["test_acc_at_best_val"] for s in states], marker="o", label=f"{label} removed")
        if not ax.lines:
            ax.plot([0.0] * len(states), [100.0 * s["test_acc_at_best_val"] for s in states], marker="o", label="dense")
        ax.set_xlabel("sparsity (% of groups removed)")
        ax.set_ylabel("test accuracy at best val (%)")
        ax.set_title(title, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_write(self.file(PLOT), "wb") as f:
            fig.savefig(f, format="png")
