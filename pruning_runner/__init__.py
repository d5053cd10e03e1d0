"""pruning_runner: iterative structured pruning (Refill, RSST) of timm ViT heads and MLP neurons.

Importing the package is cheap; the names below load their modules on first use.

Example:
    >>> from pruning_runner import RunConfig, run_pruning  # doctest: +SKIP
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "RunConfig": "pruning_runner.config",
    "resolve_config": "pruning_runner.config",
    "run_pruning": "pruning_runner.loop",
    "resume_pruning": "pruning_runner.loop",
    "RunResult": "pruning_runner.loop",
    "GroupMasks": "pruning_runner.groups",
    "VitLayout": "pruning_runner.groups",
    "MagnitudeImportance": "pruning_runner.importance",
    "L2Importance": "pruning_runner.importance",
    "TaylorImportance": "pruning_runner.importance",
    "RemainImportance": "pruning_runner.importance",
    "RefillPruner": "pruning_runner.methods",
    "RsstPruner": "pruning_runner.methods",
    "load_compact_model": "pruning_runner.compaction",
    "Footprint": "pruning_runner.footprint",
    "measure_footprint": "pruning_runner.footprint",
    "resolve_block_kinds": "pruning_runner.blocks",
    "save_compact_model": "pruning_runner.compaction",
    "list_runs": "pruning_runner.runs",
    "scan_runs": "pruning_runner.runs",
    "compare_runs": "pruning_runner.compare",
    "plot_comparison": "pruning_runner.compare",
    "check_init": "pruning_runner.gate",
    "read_checked_init": "pruning_runner.gate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'pruning_runner' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)
