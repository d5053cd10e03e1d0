"""Verdict confusion matrix: does ``ckpttool.verdict.judge`` tell trained from random, everywhere?

Contract
--------
Measures, on CPU, the checkpoint verdict (``compute_tensor_stats`` + ``judge``) against the known
truth of each case, and prints a confusion table (expected x predicted), per-case margins and the
retired guard ``std(blocks.0.attn.qkv.weight) > 0.05`` (``layer1.0.conv2`` for ResNets) for contrast.

Cases:
- random: fresh timm inits (``pretrained=False``) of >= 12 families: ViT with weight_init '', 'jax',
  'moco', the 32x32 / patch-4 ViT, DeiT (distilled), Swin, BEiT, EVA-02, ConvNeXt, ResNet-18/50,
  EfficientNet, MobileNetV3, RegNet, MLP-Mixer, LeViT, DenseNet, RepVGG (norm gains drawn from
  N(0.1, 0.1)), EfficientViM (state decay from U(1, 16)) -> expected ``random``
  (``benchmarks/random_families.py`` covers one model of every timm family);
- trained: ViT, ResNet-18, ConvNeXt-atto and MLP-Mixer trained here on scikit-learn's digits
  (upscaled to 16x16, 32x32 for ConvNeXt; test accuracy printed) -> ``pretrained``;
- derived from each trained model: classifier reset via ``reset_classifier`` -> ``pretrained``;
  middle blocks re-initialised with timm-style init -> ``partial`` naming exactly those groups;
  ViT structurally pruned with the runner's masks (zeroed heads and neurons) -> ``pretrained``,
  and the same masks on a random ViT -> ``random``;
  ViT with patch_embed and pos_embed re-initialised (the 32x32 / patch-4 bug) -> ``partial``
  naming pos_embed, patch_embed reported as an uncounted input layer; ResNet with its stem alone
  re-initialised -> ``pretrained`` with the stem reported (the price of not counting input layers);
  NaN / Inf injected in one tensor -> ``corrupt``.
Margins per case: min / median spectral ratio of body matrices, trained / judgeable tensors,
trained / untouched groups, and the largest ratio seen in any random init (vs the threshold).
Also the in-process verdict time of a vit_base_patch16_224 random state dict (numpy float32).

Run: ``python benchmarks/verdict_matrix.py [--out results.json] [--quick]``; about 5-10 minutes on
2 CPU cores (training dominates). Exit status 1 if any case is misclassified.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

RANDOM_CASES = [
    ("vit_tiny", "vit_tiny_patch16_224", {}),
    ("vit_tiny jax", "vit_tiny_patch16_224", {"weight_init": "jax"}),
    ("vit_tiny moco", "vit_tiny_patch16_224", {"weight_init": "moco"}),
    ("vit_small 32/p4", "vit_small_patch16_224", {"img_size": 32, "patch_size": 4}),
    ("deit_tiny_distilled", "deit_tiny_distilled_patch16_224", {}),
    ("swin_tiny", "swin_tiny_patch4_window7_224", {}),
    ("beit_base d2", "beit_base_patch16_224", {"depth": 2}),
    ("eva02_tiny", "eva02_tiny_patch14_224", {}),
    ("convnext_atto", "convnext_atto", {}),
    ("resnet18", "resnet18", {}),
    ("resnet50", "resnet50", {}),
    ("efficientnet_b0", "efficientnet_b0", {}),
    ("mobilenetv3_small", "mobilenetv3_small_100", {}),
    ("regnety_002", "regnety_002", {}),
    ("mixer_s16", "mixer_s16_224", {}),
    ("levit_128s", "levit_128s", {}),
    ("densenet121", "densenet121", {}),
    ("repvgg_a0", "repvgg_a0", {}),
    ("efficientvim_m1", "efficientvim_m1", {}),
]

TRAINED = {
    # arch: (timm name, kwargs, epochs, lr, groups to re-initialise for the partial case)
    "vit": ("vit_tiny_patch16_224", dict(img_size=16, patch_size=4, depth=4, embed_dim=64, num_heads=2,
                                         in_chans=3), 80, 3e-3, ["blocks.1", "blocks.2"]),
    "resnet18": ("resnet18", dict(in_chans=1), 8, 3e-3, ["layer2.0", "layer2.1"]),
    "convnext_atto": ("convnext_atto", dict(in_chans=1), 15, 3e-3, ["stages.1.blocks.0", "stages.1.blocks.1"]),
    # ViT and Mixer see gray digits replicated to 3 channels (RGB-like correlated channels). The
    # Mixer's patch embedding (`stem`) stays iid-like after training on 1437 images (spectral ratio
    # ~0.99-1.1 with 1 or 3 channels, 98% accuracy): it is reported as an uncounted input layer.
    "mixer": ("mlp_mixer", dict(img_size=16, patch_size=4, num_blocks=4, embed_dim=96, in_chans=3), 40, 2e-3,
              ["blocks.1", "blocks.2"]),
}


def _margins(stats, verdict) -> dict:
    from ckpttool.verdict.grouping import is_head_tensor
    from ckpttool.verdict.stats import spectral_threshold

    body = [s for s in stats if not is_head_tensor(s.name)]
    ratios = [s.spectral_ratio for s in body if s.spectral_ratio is not None]
    judgeable = [s for s in body if s.status in ("trained", "init-like")]
    # distance of each matrix to its own threshold (negative: below)
    gaps = [s.spectral_ratio - spectral_threshold(*_mat_shape(s.shape)) for s in body if s.spectral_ratio is not None]
    return {
        "min_ratio": min(ratios) if ratios else None,
        "median_ratio": statistics.median(ratios) if ratios else None,
        "max_ratio": max(ratios) if ratios else None,
        "max_gap": max(gaps) if gaps else None,
        "trained_of_judgeable": f"{sum(s.status == 'trained' for s in judgeable)}/{len(judgeable)}",
        "groups_trained": sum(g.status == "trained" for g in verdict.groups),
        "groups_untouched": sum(g.status == "untouched" for g in verdict.groups),
    }


def _mat_shape(shape):
    core = [d for d in shape if d != 1]
    return core[0], max(1, int(__import__("math").prod(core)) // core[0])


def _evaluate(label, expected, state_dict, rows, expected_groups=None, expected_uncounted=None):
    from ckpttool.verdict import judge
    from ckpttool.verdict._calibration import old_guard, stats_of_state_dict

    stats = stats_of_state_dict(state_dict)
    t0 = time.perf_counter()
    verdict = judge(stats)
    ok = verdict.verdict == expected
    if ok and expected_groups is not None:
        ok = sorted(verdict.untouched_groups) == sorted(expected_groups)
    if ok and expected_uncounted is not None:
        ok = sorted(verdict.uncounted_groups) == sorted(expected_uncounted)
    row = {"case": label, "expected": expected, "predicted": verdict.verdict, "ok": ok,
           "untouched": list(verdict.untouched_groups), "uncounted": list(verdict.uncounted_groups),
           "old_guard": old_guard(stats),
           **_margins(stats, verdict), "judge_s": time.perf_counter() - t0}
    rows.append(row)
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    print(f"{'OK ' if ok else 'BAD'} {label:<30} exp={expected:<10} got={verdict.verdict:<10} old={row['old_guard']:<10}"
          f" ratio min/med/max {fmt(row['min_ratio'])}/{fmt(row['median_ratio'])}/{fmt(row['max_ratio'])}"
          f" trained {row['trained_of_judgeable']} groups T/U {row['groups_trained']}/{row['groups_untouched']}"
          + (f" untouched={row['untouched']}" if row["untouched"] else "")
          + (f" uncounted={row['uncounted']}" if row["uncounted"] else ""), flush=True)
    return row


def _time_vit_base() -> float:
    from ckpttool.torch_state import state_dict_arrays
    from ckpttool.verdict import judge
    from ckpttool.verdict._calibration import create_random_model
    from ckpttool.verdict.stats import compute_stats_from_arrays

    items = list(state_dict_arrays(create_random_model("vit_base_patch16_224", num_classes=1000).state_dict()))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        judge(compute_stats_from_arrays(items))
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--quick", action="store_true", help="fewer epochs (smoke run)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    import torch
    from timm.models._manipulate import named_apply  # noqa: F401  (timm present)

    from ckpttool.verdict import _calibration as cal

    torch.set_num_threads(2)
    rows: list[dict] = []
    t_start = time.perf_counter()

    print("== random inits")
    for label, name, kwargs in RANDOM_CASES:
        torch.manual_seed(0)
        sd = cal.create_random_model(name, **kwargs).state_dict()
        _evaluate(f"random {label}", "random", sd, rows)
    torch.manual_seed(0)
    pruned = cal.prune_structurally(cal.create_random_model("vit_tiny_patch16_224"), 1, 0.3)
    _evaluate("random vit_tiny pruned (runner masks)", "random", pruned.state_dict(), rows)

    print("== trained on digits (16x16), derived cases")
    trained_info = {}
    for arch, (name, kwargs, epochs, lr, reinit) in TRAINED.items():
        data = cal.load_digits_data(img_size=32 if arch == "convnext_atto" else 16,  # 4 downsamplings
                                    channels=kwargs.get("in_chans", 1))
        torch.manual_seed(0)
        model = cal.create_random_model(name, **kwargs)
        info = cal.train_on_digits(model, data, epochs=max(2, epochs // 4) if args.quick else epochs, lr=lr,
                                   max_seconds=300)
        trained_info[arch] = info
        print(f"   trained {arch}: acc {info['acc']:.3f} in {info['epochs']} epochs, {info['seconds']:.0f}s")
        sd = model.state_dict()
        _evaluate(f"trained {arch} (acc {info['acc']:.2f})", "pretrained", sd, rows)
        _evaluate(f"{arch} head reset", "pretrained", cal.reset_head(model).state_dict(), rows)
        _evaluate(f"{arch} reinit {'+'.join(reinit)}", "partial", cal.reinit_modules(model, reinit).state_dict(),
                  rows, expected_groups=reinit)
        if arch == "vit":
            _evaluate("vit patch_embed+pos_embed reinit", "partial",
                      cal.reinit_vit_embeddings(model).state_dict(), rows,
                      expected_groups=["pos_embed", "patch_embed"], expected_uncounted=[])  # issue 20: counted
        if arch == "vit":
            _evaluate("vit pruned (runner masks, 1 of 2 heads, 30% neurons)", "pretrained",
                      cal.prune_structurally(model, 1, 0.3).state_dict(), rows)
        if arch == "resnet18":
            _evaluate("resnet18 stem reinit (its BatchNorms never ran)", "partial",
                      cal.reinit_modules(model, ["conv1", "bn1"]).state_dict(), rows, expected_groups=["stem"],
                      expected_uncounted=[])  # issue 20: the old blind spot, now caught
        first_matrix = next(k for k, v in sd.items() if v.ndim >= 2 and v.is_floating_point())
        _evaluate(f"{arch} NaN in {first_matrix}", "corrupt", cal.inject_nonfinite(sd, first_matrix), rows)
        _evaluate(f"{arch} Inf in last tensor", "corrupt",
                  cal.inject_nonfinite(sd, list(sd)[-1], value=float("inf")), rows)

    vit_base_s = _time_vit_base()

    labels = ("pretrained", "random", "partial", "corrupt")
    print("\n== confusion (rows expected, columns predicted)")
    print(f"{'':<12}" + "".join(f"{p:>12}" for p in labels))
    for e in labels:
        print(f"{e:<12}" + "".join(f"{sum(r['expected'] == e and r['predicted'] == p for r in rows):>12}"
                                   for p in labels))
    bad = [r for r in rows if not r["ok"]]
    from ckpttool.verdict.stats import SPECTRAL_TRAINED

    worst_random = max(r["max_ratio"] for r in rows if r["expected"] == "random" and r["max_ratio"])
    worst_gap = max(r["max_gap"] for r in rows if r["expected"] == "random" and r["max_gap"] is not None)
    old_wrong = sum(r["old_guard"] not in ("n/a", r["expected"]) for r in rows if r["expected"] in ("random", "pretrained"))
    print(f"\ncases {len(rows)}, misclassified {len(bad)}; old std>0.05 guard wrong on {old_wrong} of the "
          f"random/pretrained cases it applies to")
    print(f"largest spectral ratio in any random init {worst_random:.3f} (closest approach to its threshold "
          f"{worst_gap:+.3f}; large-matrix threshold {SPECTRAL_TRAINED})")
    print(f"verdict time vit_base_patch16_224 (86M params, numpy float32): {vit_base_s:.3f}s (best of 3)")
    print(f"total {time.perf_counter() - t_start:.0f}s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "trained": trained_info, "vit_base_seconds": vit_base_s,
                       "config": {"random": [c[:2] for c in RANDOM_CASES],
                                  "trained": {k: [v[0], v[1], v[2], v[3]] for k, v in TRAINED.items()},
                                  "quick": args.quick}}, f, indent=1, default=str)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
