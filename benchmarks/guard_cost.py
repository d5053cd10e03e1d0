"""guard_cost: what ``ckpttool.require(model, expect="pretrained")`` costs a training script.

Contract
  Builds a random-init timm ``vit_small_patch16_224`` (22M parameters, 10 classes) once and
  measures, in the same run, medians of --repeat runs each:
    * require    -- ``ckpttool.require(model, expect="any")`` on the nn.Module in memory: the
                    guard as a script calls it (torch -> numpy copies, statistics, verdict); no
                    file is touched
    * adapter    -- the torch -> numpy copies alone (``ckpttool.loading.state_dict_arrays``)
    * old_guard  -- ``state_dict()['blocks.0.attn.qkv.weight'].std() > 0.05``: the ad-hoc check
                    of the incident, wrong both ways (the floor of any in-memory check)
    * from_file  -- ``torch.save`` once, then ``ckpttool.verify_file`` on it: the route without the
                    guard (read back from disk, hashed, judged)
  Both wall and CPU time (all threads of this process) are reported: on a shared machine the wall
  time grows with the others' load. Target (issue 23): require well under a second on 2 CPU cores. ``expect="any"`` so that the
  random weights do not raise: the work is the same whatever the expectation.
  Needs the torch extra only (no benchmark-only dependency).

Usage: python benchmarks/guard_cost.py [--repeat 7] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def median_time(fn, repeat: int) -> tuple[float, float]:
    """Median wall time and median CPU time of this process (all its threads) over ``repeat`` calls:
    on a shared machine the wall time grows with the others' load, the CPU time much less."""
    walls, cpus = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    load_before = os.getloadavg()

    import timm
    import torch

    import ckpttool
    from ckpttool.torch_state import state_dict_arrays

    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", num_classes=10).eval()
    ckpttool.require(model, expect="any")  # warm-up: imports, first-touch allocations
    figures = {
        "require": median_time(lambda: ckpttool.require(model, expect="any"), args.repeat),
        "adapter": median_time(lambda: list(state_dict_arrays(model.state_dict())), args.repeat),
        "old_guard": median_time(
            lambda: bool(model.state_dict()["blocks.0.attn.qkv.weight"].std() > 0.05), args.repeat),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vit_small_random.pth"
        torch.save(model.state_dict(), path)
        figures["from_file"] = median_time(lambda: ckpttool.verify_file(path, expect="any"), args.repeat)
    result = {
        "benchmark": "guard_cost",
        "model": "vit_small_patch16_224 (random init, 10 classes)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "repeat": args.repeat,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu(s), {platform.platform()}",
        "torch_threads": torch.get_num_threads(),
        "load_average_before": load_before,
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "timm": timm.__version__},
        "median_wall_s": {k: round(v[0], 4) for k, v in figures.items()},
        "median_cpu_s": {k: round(v[1], 4) for k, v in figures.items()},
        "require_over_from_file_wall": round(figures["require"][0] / figures["from_file"][0], 3),
        "adapter_share_of_require_wall": round(figures["adapter"][0] / figures["require"][0], 3),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
