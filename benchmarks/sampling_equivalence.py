"""Do sampled statistics keep every verdict? Each corpus benchmark is run as it is, and every
checkpoint it judges is judged again, in the same run, from its file through ``ckpttool.sweep`` with
tensors above a threshold judged from exact raw-bit scans and fixed samples
(``compute_sampled_tensor_stats``), then compared with the exact statistics the benchmark used:

- **default**: the shipped threshold (``SAMPLED_ABOVE``, 1M entries);
- **stress**: 65,536 entries, so that most matrices of these small corpora go through sampling.

Reported per corpus: checkpoints judged, tensors sampled, and the number of checkpoints whose
verdict, per-group statuses (``Verdict.groups``) or per-tensor statuses differ from the exact ones.

    python benchmarks/sampling_equivalence.py wild            # wild_weights.py (safetensors and pt)
    python benchmarks/sampling_equivalence.py holdout holdout2 random_families trained_families verdict_matrix

The corpora's own benchmarks run unchanged inside (their verdicts and output are the exact ones);
only this script's table is new. Writes ``benchmarks/results/cpu_sampling_equivalence.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

MODES = {"default": None, "stress": 65_536}
RECORDS: list[dict] = []
_CORPUS = ["?"]

CORPORA = {
    "wild": ("wild_weights", [["--format", "safetensors"], ["--format", "pt"]]),
    "holdout": ("wild_weights", [["--holdout", "--format", "safetensors"], ["--holdout", "--format", "pt"]]),
    "holdout2": ("wild_weights", [["--holdout2", "--format", "safetensors"], ["--holdout2", "--format", "pt"]]),
    "random_families": ("random_families", [[]]),
    "trained_families": ("trained_families", [[]]),
    "verdict_matrix": ("verdict_matrix", [[]]),
}


def _compare(path: Path, ordered: bool, exact_stats) -> None:
    """Judge ``path`` in each sampled mode and record how it differs from ``exact_stats``."""
    from ckpttool.loading import load_checkpoint
    from ckpttool.sweep import sweep_checkpoint
    from ckpttool.verdict import judge
    from ckpttool.verdict.stats import SAMPLED_ABOVE

    exact = judge(exact_stats, ordered=ordered)
    row = {"corpus": _CORPUS[0], "tensors": len(exact_stats), "verdict": exact.verdict}
    with load_checkpoint(path) as ckpt:
        for mode, threshold in MODES.items():
            threshold = SAMPLED_ABOVE if threshold is None else threshold
            stats = sweep_checkpoint(ckpt, digest=False, sampled_above=threshold).stats
            by_name = {s.name: s for s in stats}
            stats = [by_name[s.name] for s in exact_stats]
            v = judge(stats, ordered=ordered)
            row[mode] = {
                "sampled": sum(1 for s in stats if s.sampled is not None),
                "verdict": v.verdict,
                "groups_differ": [(a.name, a.status, b.status) for a, b in zip(exact.groups, v.groups, strict=False)
                                  if (a.name, a.status) != (b.name, b.status)],
                "tensors_differ": [(a.name, a.status, b.status) for a, b in zip(exact_stats, stats, strict=True)
                                   if a.status != b.status],
            }
    RECORDS.append(row)


def _patched_judge_file(original):
    def judge_file(path, *, include_head=False, count_stem=False):
        from ckpttool.loading import load_checkpoint
        from ckpttool.sweep import sweep_checkpoint

        v = original(path, include_head=include_head, count_stem=count_stem)
        with load_checkpoint(path) as ckpt:
            exact = sweep_checkpoint(ckpt, digest=False, sampled_above=1 << 62).stats
            ordered = ckpt.format != "safetensors"
        _compare(Path(path), ordered, exact)
        return v
    return judge_file


def _patched_state_dict_stats(original):
    def stats_of_state_dict(state_dict, *args, **kwargs):
        import torch

        stats = original(state_dict, *args, **kwargs)
        with tempfile.TemporaryDirectory(prefix="sampling-") as d:
            path = Path(d) / "sd.pt"  # torch zip keeps the state dict's order, as the exact stats have it
            torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()
                        if isinstance(v, torch.Tensor)}, path)
            _compare(path, True, stats)
        return stats
    return stats_of_state_dict


def _patched_arrays_stats(original):
    def compute_stats_from_arrays(items):
        import torch

        items = list(items)
        stats = original(items)
        with tempfile.TemporaryDirectory(prefix="sampling-") as d:
            path = Path(d) / "sd.pt"
            torch.save({info.name: torch.from_numpy(np.ascontiguousarray(a)) for info, a in items}, path)
            _compare(path, True, stats)
        return stats
    return compute_stats_from_arrays


def _install() -> None:
    import ckpttool.verdict._calibration as cal
    import ckpttool.verdict.stats as st
    import ckpttool.verify as ver

    ver.judge_file = _patched_judge_file(ver.judge_file)
    cal.stats_of_state_dict = _patched_state_dict_stats(cal.stats_of_state_dict)
    st.compute_stats_from_arrays = _patched_arrays_stats(st.compute_stats_from_arrays)


def summary(records: list[dict]) -> list[dict]:
    by = defaultdict(list)
    for r in records:
        by[r["corpus"]].append(r)
    out = []
    for corpus, rows in by.items():
        line = {"corpus": corpus, "checkpoints": len(rows), "tensors": sum(r["tensors"] for r in rows)}
        for mode in MODES:
            line[mode] = {
                "tensors_sampled": sum(r[mode]["sampled"] for r in rows),
                "verdicts_differ": sum(r[mode]["verdict"] != r["verdict"] for r in rows),
                "groups_differ": sum(bool(r[mode]["groups_differ"]) for r in rows),
                "tensors_differ": sum(len(r[mode]["tensors_differ"]) for r in rows),
            }
        out.append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpora", nargs="+", choices=sorted(CORPORA))
    ap.add_argument("--only", help="wild corpora only: passed to wild_weights.py --only")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "cpu_sampling_equivalence.json")
    args = ap.parse_args(argv)
    _install()
    t0 = time.perf_counter()
    for corpus in args.corpora:
        module, runs = CORPORA[corpus]
        bench = importlib.import_module(module)
        for run_args in runs:
            if module == "wild_weights":  # its rows (errors included) beside this table
                run_args = run_args + (["--only", args.only] if args.only else []) + [
                    "--out", str(args.json.with_name(f"sampling_equivalence_rows_{corpus}_{run_args[-1]}.json"))]
            fmt = run_args[run_args.index("--format") + 1] if "--format" in run_args else None
            _CORPUS[0] = corpus + (f" ({fmt})" if fmt else "")
            try:
                bench.main(run_args)
            except SystemExit:
                pass
    table = summary(RECORDS)
    print(f"\n{'corpus':32s} {'files':>6s} {'tensors':>8s} | {'sampled':>8s} {'verdict':>7s} {'groups':>6s} "
          f"{'tensors':>7s} | {'stress sampled':>14s} {'verdict':>7s} {'groups':>6s} {'tensors':>7s}")
    for t in table:
        d, s = t["default"], t["stress"]
        print(f"{t['corpus']:32s} {t['checkpoints']:6d} {t['tensors']:8d} | {d['tensors_sampled']:8d} "
              f"{d['verdicts_differ']:7d} {d['groups_differ']:6d} {d['tensors_differ']:7d} | "
              f"{s['tensors_sampled']:14d} {s['verdicts_differ']:7d} {s['groups_differ']:6d} {s['tensors_differ']:7d}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    previous = json.loads(args.json.read_text()) if args.json.exists() else {}
    previous.update({corpus: [r for r in RECORDS if r["corpus"].split(" ")[0] == corpus] for corpus in args.corpora})
    args.json.write_text(json.dumps(previous, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
