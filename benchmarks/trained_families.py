"""Verdict on models trained here, across timm's small ``test_*`` architectures, on CPU.

``verdict_matrix.py`` trains four architectures carefully; this trains every timm ``test_*`` model
(ViT variants, ConvNeXt, EfficientNet with BN/GN/LN and EvoNorm, NFNet, ByobNet, CoAtNet, MaxViT,
MambaOut, ResNet...) on scikit-learn's digits with one recipe, and checks three cases per model:
trained -> ``pretrained``; classifier reset -> ``pretrained``; one middle group re-initialised
(timm-style init, chosen from the verdict's own trained groups) -> ``partial`` naming that group.
Exit status 1 when a case is missed.

    python benchmarks/trained_families.py [--epochs 15] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings


def _middle_group(verdict) -> str | None:
    from ckpttool.verdict.grouping import is_input_group

    names = [g.name for g in verdict.groups if g.status == "trained" and not is_input_group(g.name)
             and g.name.split(".")[-1].isdigit()]
    return names[len(names) // 2] if names else None


def _build_for_32px(name: str):
    """The model built for 32 px input (``img_size=32`` where it takes one), or None if it cannot run there."""
    import torch

    from ckpttool.verdict import _calibration as cal

    for kwargs in ({"img_size": 32}, {}):
        torch.manual_seed(0)
        try:
            model = cal.create_random_model(name, **kwargs)
            with torch.no_grad():  # eval mode: the trial forward changes no weight or buffer
                model(torch.zeros(2, 3, 32, 32))
        except (TypeError, RuntimeError, ValueError, AssertionError):
            continue
        return model
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    import timm
    import torch

    from ckpttool.verdict import _calibration as cal
    from ckpttool.verdict import judge

    torch.set_num_threads(2)
    data = cal.load_digits_data(img_size=32, channels=3)
    rows = []
    t_start = time.perf_counter()
    for name in timm.list_models("test_*"):
        model = _build_for_32px(name)
        if model is None:
            print(f"    {name:<24} cannot run at 32 px: skipped", flush=True)
            continue
        info = cal.train_on_digits(model, data, epochs=args.epochs, lr=2e-3, max_seconds=120)
        trained = judge(cal.stats_of_state_dict(model.state_dict()))
        cases = [("trained", "pretrained", trained, None),
                 ("head reset", "pretrained", judge(cal.stats_of_state_dict(cal.reset_head(model).state_dict())), None)]
        group = _middle_group(trained)
        if group is not None:
            reinit = judge(cal.stats_of_state_dict(cal.reinit_modules(model, [group]).state_dict()))
            cases.append((f"reinit {group}", "partial", reinit, [group]))
        for label, expected, v, groups in cases:
            if groups is not None:  # re-initialising a module resets every group below it too
                groups = [g.name for g in v.groups if g.status != "unjudged"
                          and (g.name == groups[0] or g.name.startswith(groups[0] + "."))]
            ok = v.verdict == expected and (groups is None or list(v.untouched_groups) == groups)
            rows.append({"model": name, "acc": info["acc"], "case": label, "expected": expected,
                         "verdict": v.verdict, "untouched": list(v.untouched_groups),
                         "uncounted": list(v.uncounted_groups), "ok": ok, "reason": v.reason})
            print(f"{'OK ' if ok else 'BAD'} {name:<24} acc {info['acc']:.2f} {label:<28} {v.verdict:<10}"
                  + ("" if ok else f"  untouched={list(v.untouched_groups)}  {v.reason}"), flush=True)
    bad = [r for r in rows if not r["ok"]]
    print(f"\n{len(rows)} cases over {len({r['model'] for r in rows})} architectures, {len(rows) - len(bad)} right "
          f"(timm {timm.__version__}, {platform.machine()}, {time.perf_counter() - t_start:.0f}s)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
