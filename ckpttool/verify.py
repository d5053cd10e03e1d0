"""Verification: a file -> statistics -> verdict -> expectation and rules -> FileReport.

A file holding several weight sets (``state_dict`` and ``state_dict_ema``...) has each judged:
it passes only when every one meets the expectation, since a consumer may load any of them.

This is the function the CLI, `generate`'s manifest check and the pruning runner's gate share.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from ckpttool.errors import InvalidArgumentError
from ckpttool.hashing import file_sha256
from ckpttool.loading import Checkpoint, load_checkpoint
from ckpttool.sharded import ShardFile, hash_files, outside_indexes
from ckpttool.sweep import sweep_checkpoint
from ckpttool.verdict import Verdict, judge
from ckpttool.verdict.rules import Rule, RuleResult, evaluate_rule, parse_rule
from ckpttool.verdict.stats import TensorStats

EXPECTATIONS = ("pretrained", "random", "any", "auto")


@dataclass(frozen=True)
class FileReport:
    """Everything `verify` knows about one file."""

    path: Path
    format: str  # "safetensors" | "torch-zip" | "torch-legacy"
    sha256: str
    verdict: Verdict
    expected: str  # "pretrained" | "random" | "any" (after resolving "auto")
    passed: bool
    rules: tuple[RuleResult, ...]
    wrapper: str | None  # which wrapper dict was unwrapped ('state_dict', 'model', ...)
    stripped_prefixes: tuple[str, ...]
    non_tensor_keys: tuple[str, ...]
    metadata: dict  # provenance stored in the file by `generate`, if any
    stats: tuple[TensorStats, ...]
    # Every other weight set the file holds (EMA copies...), judged too: a consumer may load any.
    other_weight_sets: tuple[tuple[str, Verdict], ...] = ()
    # The weights digest (ckpttool.digest) of every weight set, this one first, in weight_sets order.
    weights_digests: tuple[str, ...] = ()
    # A sharded model (``path`` is its index, ``sha256`` the index's): every shard, in reading order.
    shards: tuple[ShardFile, ...] = ()
    # Indexes beside this file that do not name it: it is not part of their model, judged on its own.
    not_in_index: tuple[Path, ...] = ()

    @property
    def failure_reason(self) -> str | None:
        """Why the file failed, in one phrase; None when it passed."""
        if self.passed:
            return None
        parts = []
        if not verdict_meets(self.verdict.verdict, self.expected):
            parts.append(f"verdict {self.verdict.verdict}, expected {self.expected}")
        parts += [
            f"weight set {name}: verdict {v.verdict}, expected {self.expected}"
            for name, v in self.other_weight_sets
            if not verdict_meets(v.verdict, self.expected)
        ]
        parts += [r.message for r in self.rules if not r.passed]
        return "; ".join(parts)

    def to_dict(self) -> dict:
        v = self.verdict
        return {
            "path": str(self.path),
            "format": self.format,
            "verdict": v.verdict,
            "expected": self.expected,
            "passed": self.passed,
            "sha256": self.sha256 or None,
            "tensors_total": v.tensors_total,
            "tensors_trained": v.tensors_trained,
            "tensors_init_like": v.tensors_init_like,
            "tensors_init_constant": v.tensors_init_constant,
            "untouched_groups": list(v.untouched_groups),
            "uncounted_groups": list(v.uncounted_groups),
            "inconclusive_groups": list(v.inconclusive_groups),
            "untouched_tensors": [{"name": n, "why": why} for n, why in v.untouched_tensors],
            "head": [h.name for h in v.head],
            "head_included": v.head_included,
            "reason": v.reason,
            "rules": [r.to_dict() for r in self.rules],
            "wrapper": self.wrapper,
            "weights_digest": self.weights_digests[0] if self.weights_digests else None,
            "weight_sets": [
                {"wrapper": name, "verdict": wv.verdict, "reason": wv.reason,
                 "weights_digest": self.weights_digests[i] if i < len(self.weights_digests) else None}
                for i, (name, wv) in enumerate(((self.wrapper, v), *self.other_weight_sets))
            ],
            "non_tensor_keys": list(self.non_tensor_keys),
            "shards": [sh.to_dict() for sh in self.shards],
            "not_in_index": [str(p) for p in self.not_in_index],
        }


def resolve_expected(path: str | Path, expect: str) -> str:
    """Turn ``auto`` into an expectation from the file name; pass the others through.

    Example:
        >>> resolve_expected("init_model/vit_small_cifar10_pretrained_init.pth.tar", "auto")
        'pretrained'
    """
    if expect not in EXPECTATIONS:
        raise InvalidArgumentError(f"unknown expectation {expect!r}; choose one of {', '.join(EXPECTATIONS)}")
    if expect != "auto":
        return expect
    name = Path(path).name.lower()
    if re.search(r"pretrain", name):
        return "pretrained"
    if re.search(r"random|scratch", name):
        return "random"
    return "any"


def verdict_meets(verdict: str, expected: str) -> bool:
    """``any`` accepts every verdict but ``corrupt``; ``pretrained`` and ``random`` only themselves, so
    ``inconclusive`` (nothing can tell) fails both: a file too small to judge is never vouched for."""
    return verdict != "corrupt" if expected == "any" else verdict == expected


def judge_file(path: str | Path, *, include_head: bool = False, count_stem: bool = False) -> Verdict:
    """The verdict of one file on disk (safe load -> statistics -> verdict), without hashing it.

    Example:
        >>> judge_file("init_model/vit_small_cifar10_random_init.pth.tar").verdict  # doctest: +SKIP
        'random'
    """
    with load_checkpoint(path) as ckpt:
        return judge_checkpoint(ckpt, include_head=include_head, count_stem=count_stem)[1]


def judge_checkpoint(ckpt: Checkpoint, *, include_head: bool = False,
                     count_stem: bool = False) -> tuple[tuple[TensorStats, ...], Verdict]:
    """``(stats, verdict)`` of one open weight set, with what the file says beyond its tensors'
    values: whether its names are in module order (safetensors sorts them) and which parameters its
    optimizer state shows never received a gradient."""
    stats, verdict, _ = _judge_sweep(ckpt, digest=False, include_head=include_head, count_stem=count_stem)
    return stats, verdict


def _judge_sweep(ckpt: Checkpoint, *, digest: bool, include_head: bool,
                 count_stem: bool) -> tuple[tuple[TensorStats, ...], Verdict, str | None]:
    """``judge_checkpoint`` and, with ``digest``, the weights digest, from one read of each tensor."""
    swept = sweep_checkpoint(ckpt, digest=digest)
    verdict = judge(swept.stats, include_head=include_head, count_stem=count_stem,
                    ordered=ckpt.format != "safetensors", untrained=ckpt.params_without_optimizer_state)
    return swept.stats, verdict, swept.weights_digest


def verify_file(
    path: str | Path,
    *,
    expect: str = "auto",
    rules: Sequence[str | Rule] = (),
    include_head: bool = False,
    count_stem: bool = False,
    hashes: bool = True,
) -> FileReport:
    """Load ``path`` safely, judge it, and check it against ``expect`` and ``rules``.

    Every tensor is read once (``ckpttool.sweep``) for its statistics and the weights digest; the
    file's sha256 is computed on a second core meanwhile. ``hashes=False`` skips both hashes (a
    quick screen: ``sha256`` is then ``""`` and ``weights_digests`` empty); the checks are the same.

    ``path`` may be a shard index (``model.safetensors.index.json``...): the sharded model is judged as
    one, ``sha256`` is the index file's and ``shards`` lists every shard with its own.

    Example:
        >>> report = verify_file("init_model/vit_small_cifar10_pretrained_init.pth.tar")  # doctest: +SKIP
        >>> report.verdict.verdict, report.passed  # doctest: +SKIP
        ('pretrained', True)
    """
    path = Path(path)
    parsed = [r if isinstance(r, Rule) else parse_rule(r) for r in rules]
    expected = resolve_expected(path, expect)
    with load_checkpoint(path) as ckpt, ThreadPoolExecutor(max_workers=1) as pool:
        # hashing releases the GIL: the file's sha256 runs on the second core while this one sweeps
        sha = pool.submit(file_sha256, path) if hashes else None
        shards = pool.submit(hash_files, ckpt.shards, hashes=hashes)
        stats, verdict, digest = _judge_sweep(ckpt, digest=hashes, include_head=include_head, count_stem=count_stem)
        digests = [digest] if digest else []
        rule_results = tuple(evaluate_rule(r, stats) for r in parsed)
        others = []
        for wrapper in ckpt.weight_sets[1:]:
            with ckpt.select(wrapper) as other:
                _, other_verdict, other_digest = _judge_sweep(other, digest=hashes, include_head=include_head,
                                                              count_stem=count_stem)
                others.append((str(wrapper), other_verdict))
                digests += [other_digest] if other_digest else []
        return FileReport(
            weights_digests=tuple(digests),
            path=path,
            format=ckpt.format,
            sha256=sha.result() if sha is not None else "",
            verdict=verdict,
            expected=expected,
            passed=verdict_meets(verdict.verdict, expected)
            and all(verdict_meets(v.verdict, expected) for _, v in others)
            and all(r.passed for r in rule_results),
            rules=rule_results,
            wrapper=ckpt.wrapper,
            stripped_prefixes=tuple(ckpt.stripped_prefixes),
            non_tensor_keys=tuple(ckpt.non_tensor_keys),
            metadata=dict(ckpt.metadata),
            stats=stats,
            other_weight_sets=tuple(others),
            shards=shards.result(),
        )


@dataclass(frozen=True)
class FileError:
    """A file that could not be verified at all (unreadable, unsafe): exit 2."""

    path: Path
    error: str  # the one-line message
    kind: str  # the error class name, e.g. "UnsafeCheckpointError"

    def to_dict(self) -> dict:
        return {"path": str(self.path), "error": self.error, "kind": self.kind}


@dataclass(frozen=True)
class VerifyRun:
    """The outcome of `verify` over several paths."""

    files: tuple[FileReport, ...]
    errors: tuple[FileError, ...]

    @property
    def passed(self) -> bool:
        return not self.errors and all(f.passed for f in self.files)

    @property
    def exit_code(self) -> int:
        """0 all passed, 1 a check failed, 2 a file could not be read or was refused."""
        if self.errors:
            return 2
        return 0 if self.passed else 1

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "files": [f.to_dict() for f in self.files],
            "errors": [e.to_dict() for e in self.errors],
        }


def verify_paths(
    paths: Sequence[str | Path],
    *,
    expect: str = "auto",
    rules: Sequence[str] = (),
    include_head: bool = False,
    count_stem: bool = False,
    hashes: bool = True,
) -> VerifyRun:
    """Verify every checkpoint under ``paths`` (files or folders). Unreadable files are collected, not raised.

    Arguments are checked first (a bad rule or expectation raises before any file is read); a path
    that does not exist, or a folder without checkpoints, raises CheckpointNotFoundError. A sharded
    model in a folder is verified once, as its index; a checkpoint file beside an index that does not
    name it is verified on its own and says so (``FileReport.not_in_index``).
    """
    from ckpttool.errors import CkptError
    from ckpttool.loading import find_checkpoints

    parsed = [parse_rule(r) for r in rules]
    if expect not in EXPECTATIONS:
        resolve_expected("", expect)  # raises the clear error
    files: list[Path] = []
    for p in paths:
        files.extend(find_checkpoints(p))
    files = list(dict.fromkeys(files))  # two shards of one model given: the model once
    beside = outside_indexes(files)
    reports, errors = [], []
    for f in files:
        try:
            report = verify_file(f, expect=expect, rules=parsed, include_head=include_head,
                                 count_stem=count_stem, hashes=hashes)
            reports.append(replace(report, not_in_index=beside.get(Path(f), ())))
        except CkptError as e:
            errors.append(FileError(f, str(e), type(e).__name__))
    return VerifyRun(tuple(reports), tuple(errors))
