"""Calibration cases for the verdict: random timm inits, models trained on scikit-learn's digits,
head resets, re-initialised blocks, injected NaN/Inf.

Used by ``benchmarks/verdict_matrix.py`` and the tests; imports torch/timm/sklearn lazily inside
functions, so importing this module stays cheap (it is never imported by ``verify``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ckpttool.torch_state import state_dict_arrays
from ckpttool.verdict.stats import TensorStats, compute_stats_from_arrays


def stats_of_state_dict(state_dict: Mapping[str, Any]) -> list[TensorStats]:
    """The statistics of every tensor of a torch state dict, as ``verify`` computes them for a file."""
    return compute_stats_from_arrays(state_dict_arrays(state_dict))


# --------------------------------------------------------------------------------------------
# models

def create_random_model(name: str, **kwargs: Any):
    """A randomly initialised timm model (``pretrained=False``), eval mode.

    ``name="mlp_mixer"`` builds ``timm.models.mlp_mixer.MlpMixer(**kwargs)`` directly (the registered
    mixer variants fix ``patch_size``).
    """
    import timm

    kwargs.setdefault("num_classes", 10)
    if name == "mlp_mixer":
        from timm.models.mlp_mixer import MlpMixer

        return MlpMixer(**kwargs).eval()
    return timm.create_model(name, pretrained=False, **kwargs).eval()


DIGITS_ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    # name: (timm model, kwargs). All take 1-channel 32x32 digits.
    "vit": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=4, depth=4, embed_dim=192, num_heads=3)),
    "vit-mini": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=4, depth=2, embed_dim=64, num_heads=2)),
    "resnet": ("resnet18", dict()),
    "convnext": ("convnext_atto", dict()),
    "mixer": ("mlp_mixer", dict(img_size=32, patch_size=4, num_blocks=4, embed_dim=128)),
}


def create_digits_model(arch: str, seed: int = 0):
    """A fresh model for the digits task (1 input channel, 10 classes)."""
    import torch

    name, kwargs = DIGITS_ARCHS[arch]
    torch.manual_seed(seed)
    return create_random_model(name, in_chans=1, **kwargs)


@dataclass(frozen=True)
class DigitsData:
    train_x: Any  # float tensor [N, 1, S, S], normalised
    train_y: Any
    test_x: Any
    test_y: Any


def load_digits_data(img_size: int = 32, seed: int = 0, channels: int = 1) -> DigitsData:
    """scikit-learn's 1797 8x8 digits, upscaled (bilinear) to ``img_size``, 80/20 split.

    ``channels=3`` repeats the grey image into three equal channels for RGB models."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
    x = (x - 0.3) / 0.4
    if channels != 1:
        x = x.repeat(1, channels, 1, 1)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(y))
    tr, te = perm[:cut], perm[cut:]
    return DigitsData(x[tr], y[tr], x[te], y[te])


def _shift_batch(x, gen):
    """Random translation by up to 2 pixels (cheap augmentation)."""
    import torch

    dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def evaluate(model, x, y, batch: int = 512) -> float:
    """Top-1 accuracy."""
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            correct += int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
    return correct / len(y)


@dataclass(frozen=True)
class TrainProgress:
    """Where :func:`train_on_digits` is: after a batch, or (``test_acc`` set) after an epoch's evaluation."""

    epoch: int  # 0-based
    epochs: int  # the maximum (training may stop early at its target accuracy)
    batch: int  # batches done in this epoch
    batches: int  # batches per epoch
    test_acc: float | None  # set once the epoch is evaluated


def train_on_digits(model, data: DigitsData, *, epochs: int = 20, lr: float = 1e-3, batch: int = 64,
                    seed: int = 0, max_seconds: float | None = None,
                    target_acc: float | None = None,
                    lr_scale: dict[str, float] | None = None,
                    on_progress: Callable[[TrainProgress], None] | None = None) -> dict[str, float]:
    """Train with AdamW + cosine schedule; stop early at ``max_seconds`` or ``target_acc`` (checked
    per epoch on the test split). ``lr_scale`` maps a parameter-name prefix to a learning-rate
    multiplier: 1,797 grey 8x8 digits move a ViT's patch embedding far less than ImageNet does, so
    callers that need it to look trained give it a larger rate. ``on_progress`` is called after
    every batch and after each epoch's evaluation (with its accuracy). Returns
    ``{"acc", "epochs", "seconds"}``."""
    import torch

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    scale = lr_scale or {}
    groups: dict[float, list] = {}
    for name, p in model.named_parameters():
        mult = next((m for prefix, m in scale.items() if name.startswith(prefix)), 1.0)
        groups.setdefault(mult, []).append(p)
    opt = torch.optim.AdamW([{"params": ps, "lr": lr * m} for m, ps in groups.items()], lr=lr, weight_decay=0.05)
    steps = epochs * ((len(data.train_y) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[lr * m for m in groups], total_steps=steps,
                                                pct_start=0.15)
    t0 = time.perf_counter()
    done = 0
    acc = 0.0
    batches = (len(data.train_y) + batch - 1) // batch
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(data.train_y), generator=gen)
        for i in range(0, len(perm), batch):
            idx = perm[i : i + batch]
            xb = _shift_batch(data.train_x[idx], gen)
            loss = torch.nn.functional.cross_entropy(model(xb), data.train_y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if on_progress is not None:
                on_progress(TrainProgress(epoch, epochs, i // batch + 1, batches, None))
        done += 1
        acc = evaluate(model, data.test_x, data.test_y)
        if on_progress is not None:
            on_progress(TrainProgress(epoch, epochs, batches, batches, acc))
        if target_acc is not None and acc >= target_acc:
            break
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            break
    model.eval()
    return {"acc": acc, "epochs": done, "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------
# derived cases

def reset_head(model, num_classes: int = 7):
    """A copy of ``model`` with a freshly initialised classifier of another class count (timm API)."""
    m = copy.deepcopy(model)
    m.reset_classifier(num_classes)
    return m


def _vit_init_fn(model) -> Callable:
    from timm.models.vision_transformer import init_weights_vit_timm

    return init_weights_vit_timm


def reinit_modules(model, names: list[str]):
    """A copy of ``model`` whose submodules ``names`` (e.g. ``["blocks.1", "blocks.2"]``) are
    re-initialised the way timm initialises them: ViT blocks by ``init_weights_vit_timm`` (trunc
    normal .02 Linear, zero bias) plus LayerNorm reset; other models (ResNet, ConvNeXt...) by
    kaiming-normal convolutions, trunc-normal linears, BatchNorm/LayerNorm reset (timm's
    ``_init_weights`` / ``init_weights`` choices)."""
    import torch
    from timm.models import VisionTransformer
    from timm.models._manipulate import named_apply

    m = copy.deepcopy(model)
    is_vit = isinstance(m, VisionTransformer)
    for name in names:
        sub = m.get_submodule(name)
        if is_vit:
            named_apply(_vit_init_fn(m), sub)
        for mod in sub.modules():
            if isinstance(mod, torch.nn.Conv2d) and is_vit:
                mod.reset_parameters()  # timm's ViT init leaves convolutions at torch's default
            elif isinstance(mod, torch.nn.Conv2d):
                if hasattr(mod, "gain"):
                    mod.reset_parameters()  # timm's weight-standardised convs: the gain back to its init
                torch.nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
                if mod.bias is not None:
                    torch.nn.init.zeros_(mod.bias)
            elif isinstance(mod, torch.nn.Linear) and not is_vit:
                torch.nn.init.trunc_normal_(mod.weight, std=0.02)
                if mod.bias is not None:
                    torch.nn.init.zeros_(mod.bias)
            elif isinstance(mod, torch.nn.modules.batchnorm._BatchNorm | torch.nn.LayerNorm | torch.nn.GroupNorm):
                mod.reset_parameters()
            elif not isinstance(mod, torch.nn.Linear) and callable(getattr(mod, "reset_parameters", None)):
                mod.reset_parameters()  # other layers with their own init (timm's EvoNorm, ...)
        for pname, p in sub.named_parameters(recurse=True):
            if pname.endswith("gamma") or pname.endswith("gamma_1") or pname.endswith("gamma_2"):
                with torch.no_grad():
                    p.fill_(1e-6)
    return m


def reinit_vit_embeddings(model):
    """A copy of a timm ViT with ``patch_embed`` and ``pos_embed`` re-initialised as timm does
    (what a shape-mismatched load into a 32x32 / patch-4 ViT leaves behind)."""
    import torch

    m = copy.deepcopy(model)
    m.patch_embed.proj.reset_parameters()
    with torch.no_grad():
        torch.nn.init.trunc_normal_(m.pos_embed, std=0.02)
    return m


def prune_structurally(model, keep_heads: int, keep_neurons: float):
    """A copy of a timm ViT with pruning_runner's own masks applied: in every block only the first
    ``keep_heads`` heads and the first ``keep_neurons`` fraction of MLP neurons kept, the rest zeroed
    in place (what a masked, not yet compacted, runner checkpoint holds)."""
    from pruning_runner.groups import GroupMasks, VitLayout, apply_param_masks_, create_param_masks

    m = copy.deepcopy(model)
    layout = VitLayout.from_model(m)
    keep = GroupMasks.full(layout)
    keep.heads[:, keep_heads:] = False
    keep.neurons[:, int(keep_neurons * layout.mlp_hidden):] = False
    params = dict(m.named_parameters())
    apply_param_masks_(params, create_param_masks(params, keep, GroupMasks.full(layout), layout.head_dim))
    return m


def inject_nonfinite(state_dict: Mapping[str, Any], name: str, *, value: float = float("nan"),
                     count: int = 1) -> dict[str, Any]:
    """A copy of ``state_dict`` with ``count`` entries of tensor ``name`` set to ``value``."""
    sd = {k: v.clone() for k, v in state_dict.items()}
    flat = sd[name].view(-1)
    step = max(1, flat.numel() // count)
    flat[::step][:count] = value
    return sd


def old_guard(stats: list[TensorStats]) -> str:
    """The retired ad-hoc rule, for contrast: std of one tensor > 0.05 means pretrained."""
    for key in ("blocks.0.attn.qkv.weight", "layer1.0.conv2.weight"):
        for s in stats:
            if s.name == key and s.std is not None:
                return "pretrained" if s.std > 0.05 else "random"
    return "n/a"
