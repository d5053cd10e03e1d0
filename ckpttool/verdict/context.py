"""Status corrections that need the rest of the checkpoint, applied after the per-tensor statistics.

A vector (norm gain, bias, SSM parameter) can look trained on its own: a mean clearly away from
zero, or heavy tails. Zero-mean inits never produce that, but some inits draw vectors with a
non-zero mean (timm's RepVGG BatchNorm weights from N(0.1, 0.1), EfficientViM's state decay from
U(1, 16)), and calling a random init trained is the costly mistake. So a vector's own evidence
stands only when something else in the checkpoint corroborates training:

- a BatchNorm layer whose running statistics are still exactly at their init (mean 0, variance 1)
  never ran a forward pass in training mode: its weight and bias are init values (``init-like``);
- a BatchNorm layer whose running statistics moved did run in training mode: its vectors stand,
  and a gain that moved from its exact init of 1 is trained however short it is (an 8-channel
  layer's gains say nothing as a distribution, but 1.0 does not drift by itself);
- where some BatchNorm layers ran and others never did, the ones that never did are evidence that
  their module never saw data while the rest of the network trained (a re-initialised block, a
  dead branch): their ``running_mean`` counts as ``init-like``, not as a constant that says nothing;
- a vector tightly clustered around its mean (spread under a quarter of it) stands: that is a
  constant init (a norm gain of 1) that training moved, as in GroupNorm / LayerNorm / EvoNorm nets
  whose matrices stay within noise of their init; the random draws above spread as wide as their
  mean (RepVGG's coefficient of variation 1.0, EfficientViM's 0.5);
- any other vector stands only when some matrix outside the classifier head shows training, or
  when there is no such matrix to judge at all (LPIPS' calibration weights are non-negative vectors
  and nothing else); otherwise it is left unjudged (``too-small``), with a note saying what it
  looked like.

A layer frozen during fine-tuning keeps the statistics it was loaded with (not 0/1), so the first
rule cannot hide a trained layer. What is given up: a network of which only vectors were trained
(BitFit-style bias tuning of a random init) reads as random.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ckpttool.verdict.grouping import is_head_tensor

if TYPE_CHECKING:  # pragma: no cover
    from ckpttool.verdict.stats import TensorStats

UNUSED_BATCHNORM_NOTE = "random init: BatchNorm running stats never updated"
NEVER_RAN_NOTE = "BatchNorm never ran in training mode, while {} others did"
MOVED_GAIN_NOTE = "BatchNorm gain moved from its init of 1, and its statistics ran"

DRIFTED_CONSTANT_CV = 0.25
"""Coefficient of variation (std / |mean|) below which a trained-looking vector is a moved constant."""


def _is_constant(s: TensorStats, value: float) -> bool:
    return s.nonfinite == 0 and s.min == value and s.max == value


def batchnorm_prefixes(by_name: dict[str, TensorStats]) -> tuple[set[str], set[str]]:
    """``(unused, used)``: prefixes (``"layer1.0.bn1."``) of BatchNorm layers whose running
    statistics are exactly at init, and of those whose statistics moved."""
    unused, used = set(), set()
    for name, mean in by_name.items():
        if not name.endswith("running_mean"):
            continue
        prefix = name[: -len("running_mean")]
        var = by_name.get(prefix + "running_var")
        if var is None:
            continue
        (unused if _is_constant(mean, 0.0) and _is_constant(var, 1.0) else used).add(prefix)
    return unused, used


def _is_trained_vector(s: TensorStats) -> bool:
    return s.status == "trained" and s.spectral_ratio is None


def _is_drifted_constant(s: TensorStats) -> bool:
    return s.mean is not None and s.std is not None and s.std < DRIFTED_CONSTANT_CV * abs(s.mean)


def apply_checkpoint_context(stats: Sequence[TensorStats]) -> list[TensorStats]:
    """``stats`` with the corrections above applied (same order; unchanged entries are the same objects).

    Example:
        >>> from ckpttool.verdict.stats import compute_stats_from_arrays  # doctest: +SKIP
        >>> apply_checkpoint_context(compute_stats_from_arrays(items))  # doctest: +SKIP
    """
    unused, used = batchnorm_prefixes({s.name: s for s in stats})
    if used and unused:
        stats = [dataclasses.replace(s, status="init-like", note=NEVER_RAN_NOTE.format(len(used)))
                 if s.name.endswith("running_mean") and s.name[: -len("running_mean")] in unused else s
                 for s in stats]
    if used:
        stats = [dataclasses.replace(s, status="trained", note=MOVED_GAIN_NOTE)
                 if s.name.endswith(".weight") and s.name[: -len("weight")] in used and s.status != "nonfinite"
                 and s.spectral_ratio is None and not _is_constant(s, 1.0) else s
                 for s in stats]
    if not any(_is_trained_vector(s) for s in stats):
        return list(stats)
    body_matrices = [s for s in stats if s.spectral_ratio is not None and not is_head_tensor(s.name)]
    matrix_trained = not body_matrices or any(s.status == "trained" for s in body_matrices)
    out = []
    for s in stats:
        if _is_trained_vector(s):
            prefix = s.name.rpartition(".")[0] + "."
            if prefix in unused:
                s = dataclasses.replace(s, status="init-like", note=UNUSED_BATCHNORM_NOTE)
            elif prefix not in used and not matrix_trained and not _is_drifted_constant(s):
                s = dataclasses.replace(s, status="too-small",
                                        note=f"unconfirmed ({s.note}): no trained matrix in the checkpoint")
        out.append(s)
    return out
