"""`inspect`: per-tensor statistics of one file, with a summary. Plain data; renderers live elsewhere."""

from __future__ import annotations

import fnmatch
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ckpttool.errors import InvalidArgumentError
from ckpttool.hashing import file_sha256
from ckpttool.loading import find_checkpoints, load_checkpoint
from ckpttool.sharded import ShardFile, hash_files
from ckpttool.verdict import Verdict
from ckpttool.verdict.stats import NUMERIC_FIELDS, TensorStats

# Columns `--sort` accepts: TensorStats fields that order meaningfully.
SORT_COLUMNS = ("name", *NUMERIC_FIELDS, "status")


@dataclass(frozen=True)
class InspectReport:
    """Per-tensor statistics of one checkpoint file."""

    path: Path
    format: str
    sha256: str
    wrapper: str | None
    non_tensor_keys: tuple[str, ...]
    metadata: dict
    tensors: tuple[TensorStats, ...]
    weight_sets: tuple[str | None, ...] = ()  # every weight set in the file; ``tensors`` are the first's
    params_without_optimizer_state: tuple[str, ...] | None = None  # see ckpttool.verdict.optimizer_state
    verdict: Verdict | None = None  # the verdict of ``tensors``, as ``verify`` gives it (default options)
    shards: tuple[ShardFile, ...] = ()  # a sharded model (``path`` is its index): every shard

    @property
    def summary(self) -> dict:
        """Counts by status and dtype, and the parameter total."""
        return {
            "tensors": len(self.tensors),
            "parameters": sum(t.numel for t in self.tensors),
            "by_status": dict(sorted(Counter(t.status for t in self.tensors).items())),
            "by_dtype": dict(sorted(Counter(t.dtype for t in self.tensors).items())),
            "nonfinite_values": sum(t.nonfinite for t in self.tensors),
        }

    def to_dict(self) -> dict:
        keys = (
            "name", "shape", "dtype", "numel", "mean", "std", "min", "max", "kurtosis",
            "zero_fraction", "nonfinite", "spectral_ratio", "row_norm_dispersion", "column_norm_dispersion",
            "tail_ratio", "trimmed_kurtosis", "edge_overshoot", "evidence_z", "status", "note", "sampled",
        )  # fmt: skip
        rows = []
        for t in self.tensors:
            d = t.to_dict()
            rows.append({k: d.get(k) for k in keys})
        return {
            "path": str(self.path),
            "format": self.format,
            "sha256": self.sha256,
            "wrapper": self.wrapper,
            "non_tensor_keys": list(self.non_tensor_keys),
            "weight_sets": list(self.weight_sets),
            "params_without_optimizer_state": (
                None if self.params_without_optimizer_state is None else list(self.params_without_optimizer_state)
            ),
            "shards": [sh.to_dict() for sh in self.shards],
            "tensors": rows,
            "summary": self.summary,
        }


def inspect_file(path: str | Path) -> InspectReport:
    """Load ``path`` safely and compute every tensor's statistics.

    ``path`` may be a shard index (or one of its shards: the model is inspected), or a folder holding
    exactly one model (one checkpoint file, or one sharded model).

    Raises:
        InvalidArgumentError: a folder that holds more than one model.
        The errors of ``load_checkpoint``.

    Example:
        >>> r = inspect_file("init_model/vit_tiny_cifar10_random_init.pth.tar")  # doctest: +SKIP
        >>> r.summary["by_status"]  # doctest: +SKIP
        {'init-constant': 52, 'init-like': 98, 'too-small': 2}
    """
    from ckpttool.verify import judge_checkpoint

    path = _one_model(Path(path))
    with load_checkpoint(path) as ckpt, ThreadPoolExecutor(max_workers=1) as pool:
        sha = pool.submit(file_sha256, path)  # on the second core while the statistics run here
        shards = pool.submit(hash_files, ckpt.shards)
        stats, verdict = judge_checkpoint(ckpt)
        return InspectReport(
            path=path,
            format=ckpt.format,
            sha256=sha.result(),
            wrapper=ckpt.wrapper,
            non_tensor_keys=tuple(ckpt.non_tensor_keys),
            metadata=dict(ckpt.metadata),
            tensors=stats,
            weight_sets=tuple(ckpt.weight_sets),
            params_without_optimizer_state=ckpt.params_without_optimizer_state,
            verdict=verdict,
            shards=shards.result(),
        )


def _one_model(path: Path) -> Path:
    found = find_checkpoints(path)  # a shard stands for its model; a folder must hold one model
    if len(found) != 1:
        shown = ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")
        raise InvalidArgumentError(f"inspect reads one model, and {path} holds {len(found)} ({shown}); pass one of them")
    return found[0]


def select_tensors(
    tensors: tuple[TensorStats, ...], *, pattern: str | None = None, sort: str | None = None, top: int | None = None
) -> tuple[TensorStats, ...]:
    """Filter by glob, sort by a column (numbers descending, names ascending; missing values last), cut to top N."""
    rows = [t for t in tensors if pattern is None or fnmatch.fnmatchcase(t.name, pattern)]
    if sort is not None:
        if sort in ("name", "status"):
            rows.sort(key=lambda t: getattr(t, sort))
        else:
            rows.sort(key=lambda t: (getattr(t, sort) is None, -(getattr(t, sort) or 0.0)))
    if top is not None:
        rows = rows[:top]
    return tuple(rows)
