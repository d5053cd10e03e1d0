"""How `ckpttool verify` scales with file size: wall time, GB/s and peak RSS on seeded synthetic
random inits (Llama- and ViT-shaped; bf16, fp16, fp32; 0.1, 1, 4 and 12 GB on disk), each beside
baselines measured in the same run on the same file:

- **page-cache read**: reading the file into a 16 MiB buffer (second read; the floor of any tool
  that looks at every byte);
- **sha256**: hashlib over the file, as ``verify`` reports it (the floor of any tool that reports
  a file hash: ~1.5 GB/s per core here);
- **naive torch loop**: what a user could write: ``safe_open(..., framework="pt")`` and, per
  tensor, ``t.float().std()`` and ``torch.isfinite(t).all()``.

``verify`` runs as the CLI does (``ckpttool.cli.main(["verify", FILE, "--format", "json",
"--expect", "any"])`` in a fresh process), each measurement in its own process, which reports its
own peak RSS (``VmHWM``; ``wait4``'s figure would include the benchmark's pages copied at fork). ``verify --no-hashes`` is the
same check without the file sha256 and the weights digest. With ``--baseline-tree DIR`` the verify
of another checkout (e.g. a worktree of an older commit) is timed too, for before/after tables.

Files are written one at a time (a streaming safetensors writer; tensors drawn with a fixed seed)
into ``--out-dir`` and deleted after measuring unless ``--keep``. Run alone: two torch processes
on 2 cores slow each other badly.

    python benchmarks/verify_scale.py                       # the full table (~25 GB written in turn)
    python benchmarks/verify_scale.py --sizes 0.1 --quick   # the small size only (seconds)

Writes ``benchmarks/results/verify_scale.json`` (or ``--json PATH``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
_GB = 1e9
_DTYPES = {"bf16": ("BF16", 2), "fp16": ("F16", 2), "fp32": ("F32", 4)}


# ---------------------------------------------------------------- synthetic models

def llama_tensors(hidden: int, layers: int, vocab: int = 32000) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, init) of a Llama-shaped model (GQA with 4x fewer key/value heads)."""
    inter = int(hidden * 8 / 3) // 256 * 256 or 256
    kv = max(64, hidden // 4)
    out = [("model.embed_tokens.weight", (vocab, hidden), "normal")]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (hidden,), "ones"),
                (p + "self_attn.q_proj.weight", (hidden, hidden), "normal"),
                (p + "self_attn.k_proj.weight", (kv, hidden), "normal"),
                (p + "self_attn.v_proj.weight", (kv, hidden), "normal"),
                (p + "self_attn.o_proj.weight", (hidden, hidden), "normal"),
                (p + "post_attention_layernorm.weight", (hidden,), "ones"),
                (p + "mlp.gate_proj.weight", (inter, hidden), "normal"),
                (p + "mlp.up_proj.weight", (inter, hidden), "normal"),
                (p + "mlp.down_proj.weight", (hidden, inter), "normal")]
    return out + [("model.norm.weight", (hidden,), "ones"), ("lm_head.weight", (vocab, hidden), "normal")]


def vit_tensors(dim: int, depth: int, classes: int = 1000) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, init) of a timm-style ViT (patch 16, 224 px)."""
    out = [("cls_token", (1, 1, dim), "tiny"), ("pos_embed", (1, 197, dim), "normal"),
           ("patch_embed.proj.weight", (dim, 3, 16, 16), "normal"), ("patch_embed.proj.bias", (dim,), "zeros")]
    for i in range(depth):
        p = f"blocks.{i}."
        out += [(p + "norm1.weight", (dim,), "ones"), (p + "norm1.bias", (dim,), "zeros"),
                (p + "attn.qkv.weight", (3 * dim, dim), "normal"), (p + "attn.qkv.bias", (3 * dim,), "zeros"),
                (p + "attn.proj.weight", (dim, dim), "normal"), (p + "attn.proj.bias", (dim,), "zeros"),
                (p + "norm2.weight", (dim,), "ones"), (p + "norm2.bias", (dim,), "zeros"),
                (p + "mlp.fc1.weight", (4 * dim, dim), "normal"), (p + "mlp.fc1.bias", (4 * dim,), "zeros"),
                (p + "mlp.fc2.weight", (dim, 4 * dim), "normal"), (p + "mlp.fc2.bias", (dim,), "zeros")]
    return out + [("norm.weight", (dim,), "ones"), ("norm.bias", (dim,), "zeros"),
                  ("head.weight", (classes, dim), "normal"), ("head.bias", (classes,), "zeros")]


def model_for(shape: str, gb: float, itemsize: int) -> list[tuple[str, tuple[int, ...], str]]:
    """The model of ``shape`` whose file is closest to ``gb``: width by size, then the depth that fits."""
    params = gb * _GB / itemsize
    if shape == "llama":
        hidden = 512 if params < 2e8 else 2048 if params < 3e9 else 4096
        per_layer = sum(math.prod(s) for _, s, _ in llama_tensors(hidden, 1)) - sum(
            math.prod(s) for _, s, _ in llama_tensors(hidden, 0))
        fixed = sum(math.prod(s) for _, s, _ in llama_tensors(hidden, 0))
        return llama_tensors(hidden, max(1, round((params - fixed) / per_layer)))
    dim = 768 if params < 2e8 else 1280 if params < 1.5e9 else 2048
    per_block = 12 * dim * dim
    return vit_tensors(dim, max(1, round(params / per_block)))


def write_model(path: Path, tensors: list[tuple[str, tuple[int, ...], str]], dtype: str, seed: int) -> int:
    """Stream a safetensors file (never the whole model in memory); returns its size in bytes."""
    code, itemsize = _DTYPES[dtype]
    header, offset = {}, 0
    for name, shape, _ in tensors:
        n = math.prod(shape) * itemsize
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".partial")
    with open(tmp, "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob)
        for _, shape, init in tensors:
            numel = math.prod(shape)
            for i in range(0, numel, 1 << 24):
                k = min(1 << 24, numel - i)
                if init == "normal":
                    x = rng.standard_normal(k, dtype=np.float32) * np.float32(0.02)
                elif init == "tiny":
                    x = rng.standard_normal(k, dtype=np.float32) * np.float32(1e-6)
                else:
                    x = np.full(k, 1.0 if init == "ones" else 0.0, dtype=np.float32)
                if dtype == "bf16":
                    f.write((x.view(np.uint32) >> 16).astype(np.uint16).tobytes())
                elif dtype == "fp16":
                    f.write(x.astype(np.float16).tobytes())
                else:
                    f.write(x.tobytes())
    os.replace(tmp, path)
    return path.stat().st_size


# ---------------------------------------------------------------- measurements

# Each measured process prints its own peak RSS (VmHWM: the high-water mark of its memory map since
# exec) as its last stderr line: wait4's ru_maxrss would count the benchmark's own pages, copied at fork.
_HWM = """
import sys
for _line in open("/proc/self/status"):
    if _line.startswith("VmHWM:"):
        print("hwm", int(_line.split()[1]), file=sys.stderr)
"""
_CLI = """
import sys
from ckpttool.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
else:
    code = 0
""" + _HWM + """
sys.exit(code if isinstance(code, int) else 1)
"""
_READ = """
import sys
buf = bytearray(16 << 20); mv = memoryview(buf)
for _ in range(2):
    with open(sys.argv[1], 'rb', buffering=0) as f:
        while f.readinto(mv):
            pass
"""
_READ += _HWM
_READ_ONCE = _READ.replace("range(2)", "range(1)")
_SHA = """
import hashlib, sys
buf = bytearray(16 << 20); mv = memoryview(buf); h = hashlib.sha256()
with open(sys.argv[1], 'rb', buffering=0) as f:
    while (n := f.readinto(mv)):
        h.update(mv[:n])
print(h.hexdigest())
""" + _HWM
_NAIVE = """
import sys, torch
from safetensors import safe_open
with safe_open(sys.argv[1], framework="pt") as f:
    for k in f.keys():
        t = f.get_tensor(k)
        t.float().std(); bool(torch.isfinite(t).all())
""" + _HWM


def _timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of one process."""
    start = time.perf_counter()
    # run from a neutral folder: `python -c` puts the current folder first on sys.path, which would
    # import this checkout's ckpttool whatever PYTHONPATH names
    proc = subprocess.run(cmd, capture_output=True, env=env, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode()[-400:]}")
    hwm = [ln for ln in proc.stderr.decode().splitlines() if ln.startswith("hwm ")]
    return wall, int(hwm[-1].split()[1]) / 1024, proc.stdout.decode()


def _env(tree: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(tree))


def measure(path: Path, repeats: int, baseline_tree: Path | None, naive: bool) -> dict:
    py = sys.executable
    _timed([py, "-c", _READ_ONCE, str(path)])  # into the page cache
    rows: dict[str, list[tuple[float, float]]] = {}
    out_json = None
    for _ in range(repeats):
        wall, rss, _ = _timed([py, "-c", _READ, str(path)])
        rows.setdefault("read", []).append((wall / 2, rss))  # two reads in one process
        rows.setdefault("sha256", []).append(_timed([py, "-c", _SHA, str(path)])[:2])
        wall, rss, out = _timed([py, "-c", _CLI, "verify", str(path), "--format", "json", "--expect", "any"],
                                env=_env(ROOT))
        rows.setdefault("verify", []).append((wall, rss))
        out_json = out
        rows.setdefault("verify_no_hashes", []).append(_timed(
            [py, "-c", _CLI, "verify", str(path), "--format", "json", "--expect", "any", "--no-hashes"],
            env=_env(ROOT))[:2])
        if baseline_tree is not None:
            rows.setdefault("verify_baseline", []).append(_timed(
                [py, "-c", _CLI, "verify", str(path), "--format", "json", "--expect", "any"],
                env=_env(baseline_tree))[:2])
        if naive:
            rows.setdefault("naive_torch", []).append(_timed([py, "-c", _NAIVE, str(path)])[:2])
    report = json.loads(out_json)["files"][0]
    med = {k: (statistics.median(w for w, _ in v), max(r for _, r in v)) for k, v in rows.items()}
    return {"seconds": {k: w for k, (w, _) in med.items()}, "peak_rss_mb": {k: r for k, (_, r) in med.items()},
            "verdict": report["verdict"], "tensors": report["tensors_total"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="0.1,1,4,12", help="GB on disk, comma-separated")
    ap.add_argument("--plan", default="full", choices=("full", "quick"),
                    help="full: every shape x dtype at 0.1 and 1 GB, llama-bf16 and vit-fp32 at 4, llama-bf16 at 12")
    ap.add_argument("--quick", action="store_true", help="one run per file and no naive torch loop")
    ap.add_argument("--repeats", type=int, default=3, help="runs per file below 4 GB (1 at and above)")
    ap.add_argument("--out-dir", type=Path, default=None, help="where the files go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the files")
    ap.add_argument("--baseline-tree", type=Path, default=None, help="also time verify of this checkout")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "verify_scale.json")
    args = ap.parse_args(argv)
    sizes = [float(s) for s in args.sizes.split(",")]
    combos = []
    for gb in sizes:
        if gb <= 1.0 and args.plan == "full":
            combos += [(gb, s, d) for s in ("llama", "vit") for d in ("bf16", "fp16", "fp32")]
        elif gb <= 4.0:
            combos += [(gb, "llama", "bf16"), (gb, "vit", "fp32")] if args.plan == "full" else [(gb, "llama", "bf16")]
        else:
            combos += [(gb, "llama", "bf16")]
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="verify_scale_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    print(f"{'file':28s} {'GB':>6s} {'verdict':>8s} {'verify s':>9s} {'GB/s':>6s} {'RSS MB':>7s} "
          f"{'x read':>7s} {'x sha256':>8s} {'no-hash s':>9s} {'x read':>7s} {'RSS MB':>7s} {'naive s':>8s} "
          f"{'naive RSS':>9s} {'before s':>9s} {'before RSS':>10s}")
    for seed, (gb, shape, dtype) in enumerate(combos):
        tensors = model_for(shape, gb, _DTYPES[dtype][1])
        path = out_dir / f"{shape}_{dtype}_{gb:g}GB.safetensors"
        size = path.stat().st_size if path.exists() else write_model(path, tensors, dtype, seed)
        repeats = 1 if args.quick or gb >= 4 else args.repeats
        m = measure(path, repeats, args.baseline_tree, naive=not args.quick)
        s, r = m["seconds"], m["peak_rss_mb"]
        row = {"file": path.name, "shape": shape, "dtype": dtype, "bytes": size, **m,
               "gb_per_s": size / _GB / s["verify"], "x_read": s["verify"] / s["read"],
               "x_sha256": s["verify"] / s["sha256"], "x_read_no_hashes": s["verify_no_hashes"] / s["read"]}
        if "naive_torch" in s:
            row["x_naive"] = s["verify"] / s["naive_torch"]
        results.append(row)
        print(f"{path.name:28s} {size / _GB:6.2f} {m['verdict']:>8s} {s['verify']:9.2f} {row['gb_per_s']:6.2f} "
              f"{r['verify']:7.0f} {row['x_read']:7.1f} {row['x_sha256']:8.2f} {s['verify_no_hashes']:9.2f} "
              f"{row['x_read_no_hashes']:7.1f} {r['verify_no_hashes']:7.0f} "
              f"{s.get('naive_torch', float('nan')):8.2f} {r.get('naive_torch', float('nan')):9.0f} "
              f"{s.get('verify_baseline', float('nan')):9.2f} {r.get('verify_baseline', float('nan')):10.0f}",
              flush=True)
        if not args.keep:
            path.unlink()
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
               "processor": platform.processor() or platform.machine()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
