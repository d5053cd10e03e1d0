"""Which parameters never got optimizer state: a parameter the optimizer never stepped received no
gradient, strong evidence that its module is untouched.

A torch optimizer's ``state_dict()`` numbers parameters (``param_groups[*]['params']``, in group
order) instead of naming them; ``state`` maps those numbers to per-parameter state (``exp_avg``,
``momentum_buffer``...). The numbers follow the order the parameters were handed to the
optimizer, usually ``model.parameters()``, which is the state dict's order minus its buffers. The
mapping is used only when it is unambiguous: exactly one optimizer, as many numbered parameters
as state-dict parameters, and every per-parameter state tensor shaped like the parameter it maps to.
"""

from __future__ import annotations

from collections.abc import Sequence

# Buffers a state dict holds beside parameters (BatchNorm statistics); non-float tensors are buffers too.
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
_FLOAT_DTYPES = frozenset(
    {"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
     "float8_e5m2fnuz", "float8_e8m0fnu"}
)  # fmt: skip


def is_buffer(name: str, dtype: str) -> bool:
    """A state-dict entry that is a buffer, not a parameter (by name, or by a non-float dtype)."""
    return name.endswith(BUFFER_SUFFIXES) or dtype not in _FLOAT_DTYPES


def params_without_optimizer_state(
    tensors: Sequence[tuple[str, tuple[int, ...], str]], optimizer: object
) -> tuple[str, ...] | None:
    """The parameters an optimizer holds no state for, or None when that cannot be told for sure.

    Args:
        tensors: the state dict's entries in order, as ``(name, shape, dtype)``.
        optimizer: an optimizer ``state_dict()`` (``{'state': {int: {...}}, 'param_groups':
            [{'params': [int, ...]}, ...]}``), or a one-element list of them (Lightning's
            ``optimizer_states``). Per-parameter state values with a ``shape`` are checked.

    Returns:
        Names, in state-dict order; ``()`` when every parameter has state; None when the mapping
        from the optimizer's numbers to names is ambiguous or the optimizer state is malformed.

    Example:
        >>> opt = {"state": {0: {"step": 3}}, "param_groups": [{"params": [0, 1]}]}
        >>> params_without_optimizer_state([("a", (2,), "float32"), ("b", (3,), "float32")], opt)
        ('b',)
    """
    if isinstance(optimizer, list | tuple):
        if len(optimizer) != 1:
            return None
        optimizer = optimizer[0]
    if not isinstance(optimizer, dict):
        return None
    state, groups = dict.get(optimizer, "state"), dict.get(optimizer, "param_groups")
    if not isinstance(state, dict) or not isinstance(groups, list):
        return None
    order: list[int] = []
    for group in groups:
        params = dict.get(group, "params") if isinstance(group, dict) else None
        if not isinstance(params, list) or not all(type(i) is int for i in params):
            return None
        order.extend(params)
    if len(set(order)) != len(order) or not set(dict.keys(state)) <= set(order):
        return None
    params = [(name, shape) for name, shape, dtype in tensors if not is_buffer(name, dtype)]
    if len(params) != len(order):
        return None
    untouched = []
    for index, (name, shape) in zip(order, params, strict=True):
        entry = dict.get(state, index)
        if not entry:
            untouched.append(name)
            continue
        if not isinstance(entry, dict):
            return None
        for value in dict.values(entry):
            value_shape = getattr(value, "shape", None)
            if value_shape is not None and len(value_shape) > 0 and tuple(value_shape) != tuple(shape):
                return None  # the numbers do not follow the state dict's order
    return tuple(untouched)
