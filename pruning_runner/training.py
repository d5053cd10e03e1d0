"""Training pieces of one state: optimizer, learning-rate schedule, autocast, evaluation.

Example:
    >>> lr_at(0, total_steps=100, warmup_steps=0, base_lr=1.0, schedule="cosine")
    1.0
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

import torch
from torch import nn

from pruning_runner.config import RunConfig


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    from ckpttool.errors import InvalidArgumentError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return torch.device(name)


def create_optimizer(model: nn.Module, cfg: RunConfig, device: torch.device) -> torch.optim.Optimizer:
    """SGD (nesterov) or AdamW; weight decay on matrices only (not biases, norms, tokens, pos_embed)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or name.endswith(("pos_embed", "cls_token", "reg_token")):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    extra = {"fused": True} if device.type == "cuda" else {}
    lr = cfg.resolved_lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, **extra)
    return torch.optim.AdamW(groups, lr=lr, **extra)


def lr_at(step: int, *, total_steps: int, warmup_steps: int, base_lr: float, schedule: str) -> float:
    """Learning rate at ``step`` of a state: linear warm-up, then cosine to 0 or x0.1 at 50% and 75%."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "multistep":
        frac = step / max(1, total_steps)
        return base_lr * (0.1 ** ((frac >= 0.5) + (frac >= 0.75)))
    span = max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))


def autocast_factory(device: torch.device, amp: bool):
    """A callable returning the autocast context: bf16 on CUDA with amp, a no-op otherwise."""
    if device.type == "cuda" and amp:
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


@torch.inference_mode()
def count_correct(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], autocast,
                  device: torch.device) -> torch.Tensor:
    """``[correct, count]`` on the device (one host sync happens later, at the caller)."""
    was_training = model.training
    model.eval()
    out = torch.zeros(2, dtype=torch.int64, device=device)
    for x, y in batches:
        with autocast():
            logits = model(x)
        out[0] += (logits.argmax(dim=1) == y).sum()
        out[1] += y.numel()
    model.train(was_training)
    return out
