"""The verdict pipeline, one module a stage: a file's tensors -> statistics -> evidence -> per-group
findings -> pretrained / random / partial / corrupt.

- ``stats``: per-tensor statistics and the status each implies (pure functions of a tensor), with
  the scale-free signals of ``_spectral`` (spectral ratio) and ``_init_shape`` (row/column-norm
  dispersion, tails, uniform edges) and the exact standard-init fits of ``_init_fit``;
- ``context``: corrections that need the rest of the checkpoint (BatchNorm buffers, layer-scale);
- ``optimizer_state``: parameters that a training checkpoint's optimizer never saw;
- ``grouping``: tensors -> module groups; the head and the input layer;
- ``judgement``: groups -> the verdict (its rules are its docstring);
- ``rules``: user-specified ``--rule`` checks, reported beside the verdict, never the decision;
- ``_calibration``: random and trained reference models for tests and benchmarks (needs torch).
"""

from __future__ import annotations

from ckpttool.verdict.judgement import GROUP_STATUSES, VERDICTS, GroupSummary, Verdict, judge

__all__ = ["GROUP_STATUSES", "VERDICTS", "GroupSummary", "Verdict", "judge"]
