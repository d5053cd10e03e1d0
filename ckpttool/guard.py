"""The guard for people's own training scripts: judge weights already in memory (a state dict or an
``nn.Module``) or a file, and raise when they are not what the script expects.

The verdict is ``verify``'s: the same statistics and the same rules, computed on the tensors the
process already holds (nothing is read again from disk; tensors on a GPU are copied to the CPU one
at a time). ``judge_state_dict`` is the adapter from torch tensors onto the verdict; ``generate``
uses it too, to judge what it built before writing it.

Example:
    >>> model.load_state_dict(torch.load(init_path, weights_only=True))  # doctest: +SKIP
    >>> ckpttool.require(model, expect="pretrained")  # raises UnexpectedWeightsError if it is not  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from ckpttool.errors import InvalidArgumentError, UnexpectedWeightsError
from ckpttool.verdict import Verdict


def judge_state_dict(state_dict: Mapping[str, Any], *, include_head: bool = False,
                     count_stem: bool = False) -> Verdict:
    """The verdict of in-memory torch tensors, as ``verify`` gives it for the same tensors in a file.

    Non-tensor entries are skipped; whether the names are in module order is inferred (a state dict
    from ``model.state_dict()`` is; one loaded from safetensors is sorted).

    Example:
        >>> judge_state_dict(model.state_dict()).verdict  # doctest: +SKIP
        'pretrained'
    """
    from ckpttool.torch_state import state_dict_arrays
    from ckpttool.verdict import judge
    from ckpttool.verdict.stats import compute_stats_from_arrays

    with _one_blas_thread():
        stats = compute_stats_from_arrays(state_dict_arrays(state_dict))
    return judge(stats, include_head=include_head, count_stem=count_stem)


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """numpy's BLAS on one thread while the statistics run. Their matrix-vector products are small;
    OpenBLAS's extra threads busy-wait between them, and beside other busy processes that made the
    guard 5x slower (ViT-Small on a 2-core machine at load average ~13: 7-10 s wall and 3-3.8 s CPU
    with numpy's two threads, 1.4-1.6 s wall and 0.6 s CPU with one; ``benchmarks/guard_cost.py``).
    The training script's own settings are restored on exit."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a declared dependency; without it, the same verdict, only slower under load
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def require(
    weights: Any,
    expect: str = "pretrained",
    *,
    name: str | os.PathLike | None = None,
    include_head: bool = False,
    count_stem: bool = False,
) -> Verdict:
    """Raise unless ``weights`` are what the caller expects; return their verdict otherwise.

    Args:
        weights: a state dict (any mapping of names to torch tensors), an ``nn.Module`` (its
            ``state_dict()``), or the path of a checkpoint file (read safely, as ``verify`` reads it).
        expect: ``"pretrained"``, ``"random"``, ``"any"`` (anything but corrupt), or ``"auto"``
            (from ``name``, or from the path: a name containing ``pretrained`` must be pretrained,
            ``random`` random).
        name: what to call the weights in the error (e.g. the file they were loaded from); also
            what ``expect="auto"`` reads.
        include_head, count_stem: as ``verify --include-head`` / ``--count-stem``.

    Returns:
        The ``Verdict`` (``.verdict``, ``.reason``, ``.untouched_groups``...).

    Raises:
        UnexpectedWeightsError: the verdict does not meet ``expect``; ``.verdict`` holds the
            evidence and ``.expected`` what was asked. A ``VerdictMismatchError`` (and a ``CkptError``).
        InvalidArgumentError: ``expect`` is unknown, ``"auto"`` without a name, or ``weights`` is
            none of the above.
        CheckpointFormatError, UnsafeCheckpointError, CheckpointNotFoundError: a path that
            cannot be read, as for ``verify``.

    Example:
        >>> model = timm.create_model("vit_small_patch16_224", num_classes=10)  # doctest: +SKIP
        >>> model.load_state_dict(torch.load("init_model/vit_small_cifar10_pretrained_init.pth.tar",
        ...                                  weights_only=True)["state_dict"])  # doctest: +SKIP
        >>> ckpttool.require(model, expect="pretrained")  # doctest: +SKIP
        Traceback (most recent call last):
        ckpttool.errors.UnexpectedWeightsError: VisionTransformer: verdict random, expected pretrained. ...
    """
    from ckpttool.verify import resolve_expected, verdict_meets, verify_file

    if isinstance(weights, (str, os.PathLike)):
        label = str(name if name is not None else weights)
        expected = resolve_expected(label, expect)
        with _one_blas_thread():
            report = verify_file(weights, expect=expected, include_head=include_head, count_stem=count_stem)
        if not report.passed:
            raise _error(label, report.verdict, expected, report.failure_reason)
        return report.verdict
    state_dict, label = _state_dict_of(weights)
    label = str(name) if name is not None else label
    if expect == "auto" and name is None:
        raise InvalidArgumentError(
            "expect='auto' reads the expectation from a name; pass name='<the file the weights came from>', "
            "or expect='pretrained' / 'random' / 'any'")
    expected = resolve_expected(label, expect)
    verdict = judge_state_dict(state_dict, include_head=include_head, count_stem=count_stem)
    if not verdict_meets(verdict.verdict, expected):
        raise _error(label, verdict, expected, f"verdict {verdict.verdict}, expected {expected}")
    return verdict


def _state_dict_of(weights: Any) -> tuple[Mapping[str, Any], str]:
    if isinstance(weights, Mapping):
        import torch

        if not any(isinstance(v, torch.Tensor) for v in weights.values()):
            # a whole training checkpoint ({'state_dict': ..., 'epoch': ...}) would judge as nothing
            keys = ", ".join(repr(k) for k in list(weights)[:5])
            raise InvalidArgumentError(
                f"ckpttool.require got a dict without tensors at its top level (keys: {keys or 'none'}); pass "
                "the state dict itself, e.g. checkpoint['state_dict'], or the checkpoint's path")
        return weights, "state dict"
    state_dict = getattr(weights, "state_dict", None)
    if callable(state_dict):  # an nn.Module (or anything that gives one)
        return state_dict(), type(weights).__name__
    raise InvalidArgumentError(
        f"ckpttool.require takes a state dict, an nn.Module or a checkpoint path, not {type(weights).__name__}")


def _error(label: str, verdict: Verdict, expected: str, why: str | None) -> UnexpectedWeightsError:
    return UnexpectedWeightsError(f"{label}: {why}. {verdict.reason}", verdict=verdict, expected=expected)

