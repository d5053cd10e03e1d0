"""Verdict on a random init of one model from every timm model family (module), on CPU.

The verdict is calibrated on a few architectures; this checks it against every family timm
registers, the architectures "that appear in none of your tests". For each model module
(``timm.models.<module>``) it takes the first of its registered models that builds on CPU with at
most ``--max-params`` parameters, preferring small variants, initialises it with ``pretrained=False``
and a fixed seed, and prints the verdict; anything but ``random`` is a miss and is listed with the
tensors that looked trained. Exit status 1 when there is a miss.

    python benchmarks/random_families.py [--max-params 120e6] [--all] [--out results.json]

``--all`` judges every registered model within ``--max-params`` instead of one per family.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings

_SMALL = ("test_", "atto", "femto", "pico", "nano", "tiny", "small", "_s", "b0", "a0", "_xs", "mini", "18",
          "xxs", "lite0", "_100")
_TRIES = 4


def _families() -> dict[str, list[str]]:
    """timm's model modules -> their registered models, small variants first."""
    import timm

    families = {module: timm.list_models(module=module) for module in timm.list_modules()}
    for names in families.values():
        names.sort(key=lambda n: (not any(p in n for p in _SMALL), len(n), n))
    return {module: names for module, names in sorted(families.items()) if names}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-params", type=float, default=120e6)
    ap.add_argument("--all", action="store_true", help="every registered model, not one per family")
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    import timm
    import torch

    from ckpttool.verdict import judge
    from ckpttool.verdict._calibration import stats_of_state_dict

    torch.set_num_threads(2)
    rows = []
    t_start = time.perf_counter()
    families = _families()
    if args.all:  # one "family" per model: every variant is judged
        families = {f"{module}:{name}": [name] for module, names in families.items() for name in names}
    for module, names in families.items():
        for name in names[:_TRIES]:
            try:
                with torch.device("meta"):  # size it first: a 7B-parameter variant must not be built
                    params = sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())
                if params > args.max_params:
                    continue
                torch.manual_seed(0)
                model = timm.create_model(name, pretrained=False)
            except Exception as e:  # a variant that needs extra packages or arguments: try the next
                print(f"   {module:<22} {name:<40} cannot build: {type(e).__name__}", flush=True)
                continue
            stats = stats_of_state_dict(model.state_dict())
            verdict = judge(stats)
            trained = [f"{s.name} ({s.note})" for s in stats if s.status == "trained"]
            matrices = [s for s in stats if s.spectral_ratio is not None]
            tails = [s for s in matrices if s.tail_ratio is not None]
            tail = max(tails, key=lambda s: s.tail_ratio, default=None)
            ratio = max(matrices, key=lambda s: s.spectral_ratio, default=None)
            evidence = max((s for s in matrices if s.evidence_z is not None), key=lambda s: s.evidence_z, default=None)
            rows.append({"module": module, "model": name, "params": params, "verdict": verdict.verdict,
                         "reason": verdict.reason, "trained": trained,
                         "max_tail_ratio": [tail.name, tail.tail_ratio, tail.numel] if tail else None,
                         "max_spectral_ratio": [ratio.name, ratio.spectral_ratio] if ratio else None,
                         "max_evidence_z": [evidence.name, evidence.evidence_z] if evidence else None})
            ok = verdict.verdict == "random"
            print(f"{'OK ' if ok else 'BAD'} {module:<22} {name:<40} {params / 1e6:7.1f}M {verdict.verdict}"
                  + ("" if ok else f"  {verdict.reason} e.g. {'; '.join(trained[:3])}"), flush=True)
            break
    misses = [r for r in rows if r["verdict"] != "random"]
    for key, label in (("max_tail_ratio", "tail ratio"), ("max_spectral_ratio", "spectral ratio"),
                       ("max_evidence_z", "combined evidence z (threshold 8)")):
        worst = max((r for r in rows if r[key]), key=lambda r: r[key][1])
        print(f"largest {label} in any random init: {worst[key][1]:.3f} ({worst['model']} {worst[key][0]})")
    print(f"\n{len(rows)} timm families judged, {len(rows) - len(misses)} random, {len(misses)} missed "
          f"(timm {timm.__version__}, {platform.machine()}, {time.perf_counter() - t_start:.0f}s)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"timm": timm.__version__, "rows": rows}, f, indent=1)
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
