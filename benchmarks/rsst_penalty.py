"""RSST: how far the penalty pushes the groups chosen for removal down, at the end of a realistic state.

Contract: design.md asks that at the end of an RSST state the penalised groups' norm relative to the
kept groups is << 1 (the runner logs it as ``rsst_norm_ratio``: mean L2 norm of the penalised groups
over that of the kept ones, the larger of the head and neuron ratios). This script runs the real
runner (``pruning_runner.run_pruning``) on scikit-learn's digits (the project's loader, 16 px), a small
timm ViT (embed 64, depth 4, 4 heads, patch 4), RSST, target both, rate 0.5, 2 states of ``--epochs``
epochs each (10 steps per epoch at batch 128: 60 epochs = 600 steps, the user's state length), the
default optimizer (AdamW, lr 1e-3, weight decay 0.05, cosine; ``--optimizers sgd`` adds SGD, lr 0.05),
the default penalty (reg-max 1, schedule x, added to the gradient), and reports the ratio after the
first epoch of state 1 (the baseline, same run), after every epoch, and at the state's end, for each
state length in ``--epochs``. CPU only, one thread; no dependency beyond the project's.

Usage:
    python benchmarks/rsst_penalty.py --epochs 10 60 --optimizers adamw sgd --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path


def _random_init(folder: Path) -> Path:
    import timm
    import torch

    from ckpttool.saving import save_checkpoint

    kwargs = dict(embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0)
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=16, patch_size=4,
                              **kwargs)
    path = folder / "vit_digits_random_init.safetensors"
    save_checkpoint(path, model.state_dict(), metadata={"timm_name": "vit_tiny_patch16_224", "img_size": 16,
                                                        "patch_size": 4, "num_classes": 10, **kwargs})
    return path


def measure(epochs: int, folder: Path, init: Path, optimizer: str) -> dict:
    from pruning_runner.config import resolve_config
    from pruning_runner.loop import run_pruning

    values = dict(init=str(init), allow_random=True, dataset="digits", method="rsst", target="both", rate=0.5,
                  states=2, epochs=epochs, batch_size=128, device="cpu", seed=0, optimizer=optimizer,
                  out=str(folder / f"run_{epochs}_{optimizer}"), checkpoint_every=0)
    cfg = resolve_config(None, values)
    t0 = time.perf_counter()
    result = run_pruning(cfg)
    seconds = time.perf_counter() - t0
    lines = [json.loads(s) for s in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    state1 = [m for m in lines if m["state"] == 1]
    return {
        "optimizer": optimizer, "lr": cfg.resolved_lr, "reg_max": cfg.reg_max,
        "reg_schedule": cfg.reg_schedule, "epochs": epochs, "steps_per_state": epochs * 10,
        "ratio_after_first_epoch": state1[0]["rsst_norm_ratio"],
        "ratio_at_state_end": result.states[1]["rsst_norm_ratio"],
        "ratio_per_epoch": [round(m["rsst_norm_ratio"], 5) for m in state1],
        "state1_test_acc_at_best_val": result.states[1]["test_acc_at_best_val"],
        "state0_test_acc_at_best_val": result.states[0]["test_acc_at_best_val"],
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, nargs="+", default=[10, 60], help="state lengths to measure")
    p.add_argument("--optimizers", nargs="+", default=["adamw"])
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # a shared 2-core machine: more threads only contend
    rows = []
    with tempfile.TemporaryDirectory(prefix="rsst-penalty-") as tmp:
        folder = Path(tmp)
        init = _random_init(folder)
        for optimizer in args.optimizers:
            for epochs in args.epochs:
                row = measure(epochs, folder, init, optimizer)
                rows.append(row)
                print(f"{optimizer:6s} epochs {row['epochs']:3d} ({row['steps_per_state']} steps): ratio after epoch 0 "
                      f"{row['ratio_after_first_epoch']:.4f}, at the state's end {row['ratio_at_state_end']:.4f}; "
                      f"state 1 test acc {row['state1_test_acc_at_best_val']:.3f} ({row['seconds']} s)", flush=True)
    doc = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "python": sys.version.split()[0],
           "torch": torch.__version__, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
