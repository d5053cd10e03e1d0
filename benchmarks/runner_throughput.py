"""Training throughput of the pruning runner's step against the research pipeline, same run, same model.

Contract
--------
Measures training images/s (forward, backward, optimizer step, masks re-applied) of one timm ViT on
one device, for three paths measured in the same process on the same synthetic CIFAR-shaped data
(uint8 3x32x32, 10 classes; 50,000 images on CUDA, fewer on CPU):

  baseline   the research pipeline: torchvision transforms on PIL images (RandomCrop(32, padding=4),
             RandomHorizontalFlip, Resize when img_size != 32, ToTensor, Normalize) in a
             torch DataLoader with worker processes, fp32, plain SGD (torch's default foreach),
             masked dense model: weights multiplied by their masks after each step.
  masked     the runner's path on the same masked dense model: DeviceLoader (whole split on the
             device as uint8, augmentation as batched tensor ops), bf16 autocast + fused SGD +
             TF32 on CUDA (fp32 on CPU), optional torch.compile, masks applied with one foreach op.
  compacted  the runner's path on the physically smaller model after removing 70% of the heads and
             MLP neurons of every block (pruning_runner.compaction when present).

Each row: median over --windows timed windows of --steps steps, after --warmup steps (compile
included in the warm-up); windows are timed with time.perf_counter around torch.cuda.synchronize,
no host syncs inside a window. Printed: a table with the device name, images/s, ms/step and the
ratios masked/baseline and compacted/masked; --json OUT saves it with the config that produced it.

Targets (to be measured on an H100, vit_small_patch16_224 at 224/16, batch 256, bf16 + compile):
masked >= 5,000 images/s; masked/baseline >= 8x; compacted/masked >= 2x.

Usage:
    python benchmarks/runner_throughput.py                 # CPU: tiny ViT (depth 4, 32/4), ~1 min
    python benchmarks/runner_throughput.py --device cuda --model vit_small_patch16_224 \
        --img-size 224 --patch-size 16 --batch-size 256 --compile --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pruning_runner.device_loader import DeviceLoader  # noqa: E402

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
NUM_CLASSES = 10


# ------------------------------------------------------------------------------------------ models


def create_model(args) -> nn.Module:
    import timm

    kwargs = dict(img_size=args.img_size, patch_size=args.patch_size, num_classes=NUM_CLASSES)
    if args.depth:
        kwargs["depth"] = args.depth
    return timm.create_model(args.model, pretrained=False, **kwargs)


def choose_kept(model: nn.Module, remove: float, seed: int, align: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Random kept heads ``[depth, H]`` and neurons ``[depth, M]`` (bool), removing ``remove`` per block.

    Kept neurons are rounded to a multiple of ``align``: a hidden width like 461 is not 16-byte
    aligned in bf16, and cuBLAS then falls back to slow legacy GEMM kernels (seen on H200: the
    compacted model gained 1.1x instead of 2x+).
    """
    gen = torch.Generator().manual_seed(seed)
    depth, heads, hidden = len(model.blocks), model.blocks[0].attn.num_heads, model.blocks[0].mlp.fc1.out_features

    def keep(n, multiple=1):
        k = max(multiple, multiple * round(n * (1 - remove) / multiple))
        rows = [torch.zeros(n, dtype=torch.bool).index_fill_(0, torch.randperm(n, generator=gen)[:k], True)
                for _ in range(depth)]
        return torch.stack(rows)

    return keep(heads), keep(hidden, align)


def param_masks(model: nn.Module, keep_heads, keep_neurons) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """(parameter, broadcastable float mask) pairs that zero the removed heads' and neurons' weights."""
    pairs = []
    for b, blk in enumerate(model.blocks):
        d = blk.attn.head_dim
        h = keep_heads[b].to(torch.float32)
        rows = h.repeat_interleave(d).repeat(3)  # qkv rows: [3, H, d]
        pairs.append((blk.attn.qkv.weight, rows[:, None]))
        if blk.attn.qkv.bias is not None:
            pairs.append((blk.attn.qkv.bias, rows))
        pairs.append((blk.attn.proj.weight, h.repeat_interleave(d)[None, :]))
        n = keep_neurons[b].to(torch.float32)
        pairs.append((blk.mlp.fc1.weight, n[:, None]))
        if blk.mlp.fc1.bias is not None:
            pairs.append((blk.mlp.fc1.bias, n))
        pairs.append((blk.mlp.fc2.weight, n[None, :]))
    return [(p, m.to(p.device).expand_as(p).contiguous()) for p, m in pairs]


@torch.no_grad()
def compact(model: nn.Module, args, keep_heads, keep_neurons) -> tuple[nn.Module, str]:
    """The physically smaller model. Uses the runner's compaction when it is importable."""
    try:
        from pruning_runner.compaction import compact_model
        from pruning_runner.groups import GroupMasks
        from pruning_runner.model import ModelSpec
    except ImportError:
        return _compact_fallback(model, keep_heads, keep_neurons), "benchmark fallback"
    kwargs = {"depth": args.depth} if args.depth else {}
    spec = ModelSpec(arch=args.model, img_size=args.img_size, patch_size=args.patch_size,
                     num_classes=NUM_CLASSES, model_kwargs=kwargs)
    full = GroupMasks(torch.ones_like(keep_heads), torch.ones_like(keep_neurons))
    return compact_model(model, spec, full, GroupMasks(keep_heads, keep_neurons)), "pruning_runner.compaction"


def _compact_fallback(model: nn.Module, keep_heads, keep_neurons) -> nn.Module:
    import copy

    small = copy.deepcopy(model)
    for b, blk in enumerate(small.blocks):
        attn, mlp = blk.attn, blk.mlp
        d, dim = attn.head_dim, attn.qkv.in_features
        hi = keep_heads[b].nonzero().reshape(-1)
        ni = keep_neurons[b].nonzero().reshape(-1)
        h = attn.num_heads

        def linear(w, bias):
            lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None, device=w.device, dtype=w.dtype)
            lin.weight.copy_(w)
            if bias is not None:
                lin.bias.copy_(bias)
            return lin

        qkv_w = attn.qkv.weight.reshape(3, h, d, dim)[:, hi].reshape(-1, dim)
        qkv_b = None if attn.qkv.bias is None else attn.qkv.bias.reshape(3, h, d)[:, hi].reshape(-1)
        proj_w = attn.proj.weight.reshape(dim, h, d)[:, hi].reshape(dim, -1)
        attn.qkv, attn.proj = linear(qkv_w, qkv_b), linear(proj_w, attn.proj.bias)
        attn.num_heads, attn.attn_dim = len(hi), len(hi) * d
        fc1_b = None if mlp.fc1.bias is None else mlp.fc1.bias[ni]
        mlp.fc1, mlp.fc2 = linear(mlp.fc1.weight[ni], fc1_b), linear(mlp.fc2.weight[:, ni], mlp.fc2.bias)
    return small


# -------------------------------------------------------------------------------------------- data


def synthetic_cifar(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    return x, torch.randint(0, NUM_CLASSES, (n,), generator=gen)


class _PilDataset(torch.utils.data.Dataset):
    """uint8 HWC arrays -> PIL images -> torchvision transforms, as the research code's CIFAR dataset."""

    def __init__(self, x_hwc: np.ndarray, y: np.ndarray, transform):
        self.x, self.y, self.transform = x_hwc, y, transform

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def baseline_batches(x, y, args, device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    from torchvision import transforms as T

    steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    if args.img_size != 32:
        steps.append(T.Resize(args.img_size))
    steps += [T.ToTensor(), T.Normalize(MEAN, STD)]
    dataset = _PilDataset(x.permute(0, 2, 3, 1).numpy().copy(), y.numpy(), T.Compose(steps))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.workers,
        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
        prefetch_factor=4 if args.workers > 0 else None,
    )
    while True:
        for xb, yb in loader:
            yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)


def device_batches(x, y, args, device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    loader = DeviceLoader(x, y, batch_size=args.batch_size, device=device, train=True, img_size=args.img_size,
                          mean=MEAN, std=STD, seed=0, drop_last=True,
                          dtype=torch.bfloat16 if device.type == "cuda" else torch.float32,
                          channels_last=args.channels_last)
    while True:
        yield from loader


# --------------------------------------------------------------------------------------- train steps


def baseline_step(model: nn.Module, masks) -> Callable:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p, m in masks:  # as the research code: one multiply per tensor
                p.mul_(m)

    return step


def runner_step(model: nn.Module, masks, device, use_compile: bool, channels_last: bool = False) -> Callable:
    cuda = device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)  # only the patch embedding's conv weight is 4-D
    kwargs = {"fused": True} if cuda else {}
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, **kwargs)
    forward = torch.compile(model) if use_compile else model
    params, factors = [p for p, _ in masks], [m for _, m in masks]

    def step(x, y):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(forward(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if params:
            with torch.no_grad():
                torch._foreach_mul_(params, factors)

    return step


def measure(step, batches, args, device) -> dict:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step(*next(batches))
    sync()
    warmup_s = time.perf_counter() - t0
    rates = []
    for _ in range(args.windows):
        sync()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step(*next(batches))
        sync()
        rates.append(args.steps * args.batch_size / (time.perf_counter() - t0))
    median = statistics.median(rates)
    return {"images_per_s": median, "ms_per_step": 1000 * args.batch_size / median,
            "windows_images_per_s": rates, "warmup_s": warmup_s}


# ---------------------------------------------------------------------------------------------- main


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", default=None, help="timm ViT (default: vit_small_patch16_224 on CUDA, "
                                                   "vit_tiny_patch16_224 at depth 4 on CPU)")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--patch-size", type=int, default=None)
    p.add_argument("--depth", type=int, default=None, help="override the model's depth")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="steps per timed window")
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (compile happens here)")
    p.add_argument("--images", type=int, default=None, help="synthetic images (50,000 on CUDA)")
    p.add_argument("--workers", type=int, default=None, help="baseline DataLoader workers")
    p.add_argument("--remove", type=float, default=0.7, help="fraction of heads / neurons removed")
    p.add_argument("--align", type=int, default=8, help="kept MLP neurons rounded to a multiple of this")
    p.add_argument("--compile", action="store_true", help="torch.compile the runner's model")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last input and patch embedding in the runner's path (default: on CUDA)")
    p.add_argument("--rows", default="baseline,masked,compacted")
    p.add_argument("--json", type=Path, default=None, help="write results and config here")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    defaults = dict(
        model="vit_small_patch16_224" if cuda else "vit_tiny_patch16_224",
        img_size=224 if cuda else 32, patch_size=16 if cuda else 4, depth=None if cuda else 4,
        batch_size=256 if cuda else 64, steps=20 if cuda else 4, warmup=10 if cuda else 2,
        images=50_000 if cuda else 2_048, workers=min(8, os.cpu_count() or 1) if cuda else 0,
    )
    defaults["channels_last"] = cuda
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    torch.manual_seed(0)
    x, y = synthetic_cifar(args.images, seed=0)

    dense = create_model(args)
    keep_heads, keep_neurons = choose_kept(dense, args.remove, seed=0, align=args.align)
    results: dict[str, dict] = {}

    def masked_model():
        model = create_model(args)
        model.load_state_dict(dense.state_dict())
        model.to(device).train()
        masks = param_masks(model, keep_heads, keep_neurons)
        with torch.no_grad():
            for p, m in masks:
                p.mul_(m)
        return model, masks

    if "baseline" in rows:
        torch.set_float32_matmul_precision("highest")  # the research code's fp32 default
        model, masks = masked_model()
        results["baseline"] = measure(baseline_step(model, masks), baseline_batches(x, y, args, device), args, device)
        del model, masks
    torch.set_float32_matmul_precision("high")  # TF32 for whatever stays fp32 in the runner's path
    if "masked" in rows:
        model, masks = masked_model()
        step = runner_step(model, masks, device, args.compile, args.channels_last)
        results["masked"] = measure(step, device_batches(x, y, args, device), args, device)
        del model, masks, step
    compaction = None
    max_diff = None
    if "compacted" in rows:
        reference, masks = masked_model()
        small, compaction = compact(reference, args, keep_heads, keep_neurons)
        small.to(device).train()
        with torch.no_grad():  # the compacted model must compute what the masked one does
            probe = (torch.randn(4, 3, args.img_size, args.img_size, device=device))
            reference.eval(), small.eval()
            max_diff = float((reference(probe) - small(probe)).abs().max())
            small.train()
        del reference, masks
        results["compacted"] = measure(runner_step(small, [], device, args.compile, args.channels_last),
                                       device_batches(x, y, args, device), args, device)

    ratios = {}
    if "masked" in results and "baseline" in results:
        ratios["masked/baseline"] = results["masked"]["images_per_s"] / results["baseline"]["images_per_s"]
    if "compacted" in results and "masked" in results:
        ratios["compacted/masked"] = results["compacted"]["images_per_s"] / results["masked"]["images_per_s"]
    kept = {"heads_per_block": int(keep_heads[0].sum()), "heads_total": keep_heads.shape[1],
            "neurons_per_block": int(keep_neurons[0].sum()), "neurons_total": keep_neurons.shape[1]}
    report = {
        "device": device_name(device),
        "torch": torch.__version__,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "kept": kept,
        "compaction": compaction,
        "compacted_vs_masked_max_abs_diff": max_diff,
        "rows": results,
        "ratios": ratios,
    }
    print_table(report, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return report


def print_table(report: dict, args) -> None:
    kept = report["kept"]
    print(f"device: {report['device']}  torch {report['torch']}")
    print(f"model: {args.model} img {args.img_size} patch {args.patch_size}"
          f"{f' depth {args.depth}' if args.depth else ''}  batch {args.batch_size}  compile {args.compile}  "
          f"channels_last {args.channels_last}  "
          f"kept heads {kept['heads_per_block']}/{kept['heads_total']}, "
          f"neurons {kept['neurons_per_block']}/{kept['neurons_total']} per block")
    print(f"{'row':<10} {'images/s':>10} {'ms/step':>9} {'warm-up s':>10}  windows (images/s)")
    for name, r in report["rows"].items():
        windows = " ".join(f"{v:.0f}" for v in r["windows_images_per_s"])
        print(f"{name:<10} {r['images_per_s']:>10.1f} {r['ms_per_step']:>9.2f} {r['warmup_s']:>10.1f}  {windows}")
    for name, value in report["ratios"].items():
        print(f"{name:<18} {value:6.2f}x")
    if report["compaction"]:
        print(f"compaction: {report['compaction']}; max |masked - compacted| logit difference "
              f"{report['compacted_vs_masked_max_abs_diff']:.2e}")


if __name__ == "__main__":
    main()
