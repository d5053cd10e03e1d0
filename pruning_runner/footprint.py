"""What a pruned structure costs: parameters and forward FLOPs per image at the run's geometry.

FLOPs are counted by torch's own ``torch.utils.flop_counter.FlopCounterMode`` on a shapes-only
(``meta``) copy of the compacted model, one image of ``img_size`` x ``img_size``: matrix multiplies,
convolutions and attention, a multiply-add counted as 2 FLOPs (norms, activations and softmax are
not counted, as in torch's counter). Parameters are those of the compacted model; fixed zeros (EVA's k
bias) are not parameters.

Example:
    >>> fp = measure_footprint(spec, kept, layout)  # doctest: +SKIP
    >>> fp.params, fp.flops  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pruning_runner.groups import GroupMasks, VitLayout
from pruning_runner.model import ModelSpec


@dataclass(frozen=True)
class Footprint:
    """Size and cost of one structure."""

    params: int  # parameters of the compacted model
    flops: int  # forward FLOPs per image (torch.utils.flop_counter)


def measure_footprint(spec: ModelSpec, kept: GroupMasks, layout: VitLayout) -> Footprint:
    """Parameters and FLOPs per image of the model that keeps ``kept`` (nothing is allocated or initialised)."""
    from torch.utils.flop_counter import FlopCounterMode

    from pruning_runner.compaction import create_compact_vit

    model = create_compact_vit(spec, kept, device="meta").eval()
    params = sum(p.numel() for p in model.parameters())
    for slot in layout.all_slots():
        if slot.zero_outer:  # a fixed zero is not a parameter
            count = kept.heads if slot.kind == "head" else kept.neurons
            params -= int(count.sum()) * slot.inner * len(slot.zero_outer)
    x = torch.empty(1, 3, spec.img_size, spec.img_size, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return Footprint(params=int(params), flops=int(counter.get_total_flops()))
