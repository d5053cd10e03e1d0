"""verify_speed: how fast `ckpttool verify` judges a vit_base-sized checkpoint, against its floors.

Contract
  Builds a random-init timm ``vit_base_patch16_224`` (86M parameters) once, saved both as
  ``.safetensors`` and as a torch-zip ``.pth.tar``, and measures in the same run, per format:
    * cli      -- wall time of the whole ``ckpttool verify FILE`` process (import, load, verdict, hash)
    * verdict  -- the in-process verdict (load + statistics + judge), no interpreter start
    * floor    -- reading every byte of the file once (page cache warm): no tool can beat it
    * naive    -- ``torch.load`` (or safetensors ``load_file``) then ``.std()`` per tensor: the old guard's cost
    * rss      -- peak RSS of the cli process above that of a bare ``python -c 'import torch'``,
                  as a multiple of the file size
  Each figure is the median of --repeat runs. Targets on 2 CPU cores (issue 2): cli < 2 s,
  verdict < 1 s, rss excess < 1.5x the file size. Issue 13 (torch-free reader), same run:
    * cli(.pth.tar) / bare ``python -c "import torch"`` process  <= 0.5
    * cli(.pth.tar) / cli(.safetensors)                          <= 1.3
    * light venv (core package alone, no torch): install time and size on disk (< 100 MB), and
      ``verify --format json`` byte-for-byte the same as the full install on both files.

Usage: python benchmarks/verify_speed.py [--repeat 5] [--workdir DIR] [--json OUT] [--no-light]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_RSS_WRAPPER = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024); sys.exit(0)"
)


def build_files(workdir: Path) -> dict[str, Path]:
    import timm
    import torch

    from ckpttool.saving import save_checkpoint

    torch.manual_seed(0)
    sd = timm.create_model("vit_base_patch16_224", pretrained=False).state_dict()
    out = {}
    for name in ("vit_base_random.safetensors", "vit_base_random.pth.tar"):
        p = workdir / name
        if not p.exists():
            save_checkpoint(p, sd, metadata={"arch": "vit_base_patch16_224", "bench": True})
        out[name.split(".", 1)[1]] = p
    return out


def median_time(fn, repeat: int) -> float:
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def read_floor(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(16 << 20):
            pass


def naive(path: Path) -> None:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(path)
    else:
        sd = torch.load(path, weights_only=True, map_location="cpu")["state_dict"]
    for t in sd.values():
        if t.is_floating_point():
            t.float().std()


def in_process_verdict(path: Path) -> None:
    from ckpttool.loading import load_checkpoint
    from ckpttool.verdict import judge
    from ckpttool.verdict.stats import compute_checkpoint_stats

    with load_checkpoint(path) as ckpt:
        judge(compute_checkpoint_stats(ckpt))


def cli(path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "ckpttool", "verify", "--expect", "any", str(path)], capture_output=True)
    if r.returncode not in (0, 1):
        raise SystemExit(f"ckpttool verify failed: {r.stderr.decode()}")


def peak_rss(argv: list[str]) -> int:
    r = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *argv], capture_output=True, text=True, check=True)
    return int(r.stdout.strip())


CORE = ["numpy", "safetensors", "click", "rich", "huggingface_hub"]
# Build our wheel with this environment's setuptools when it has one (fast, offline); else pip fetches it.
_NO_ISOLATION = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def light_install(workdir: Path, files: dict[str, Path]) -> dict:
    """Install the core package alone into a fresh venv; time it, size it, compare its JSON with ours."""
    import shutil

    repo = Path(__file__).resolve().parents[1]
    root = workdir / "light"
    shutil.rmtree(root, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *_NO_ISOLATION, "-w",
                    str(root / "wheels"), str(repo)], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    py = root / "venv" / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(py), "install", "-q"]
    subprocess.run([*pip, "--no-deps", *(root / "wheels").glob("*.whl")], check=True, capture_output=True, env=env)
    subprocess.run([*pip, *CORE], check=True, capture_output=True, env=env)
    install_s = time.perf_counter() - t
    site = next((root / "venv").glob("lib/python*/site-packages"))
    sizes = sorted(((_dir_size(p) if p.is_dir() else p.stat().st_size, p.name) for p in site.iterdir()), reverse=True)
    has_torch = subprocess.run([str(py), "-c", "import torch"], capture_output=True, env=env).returncode == 0
    same = {}
    for fmt, path in files.items():
        argv = ["verify", "--expect", "any", "--format", "json", str(path)]
        light = subprocess.run([str(root / "venv" / "bin" / "ckpttool"), *argv], capture_output=True, env=env).stdout
        full = subprocess.run([sys.executable, "-m", "ckpttool", *argv], capture_output=True).stdout
        same[fmt] = light == full and bool(light)
    light_cli = median_time(lambda: subprocess.run([str(root / "venv" / "bin" / "ckpttool"), "verify", "--expect",
                                                    "any", str(files["pth.tar"])], capture_output=True, env=env), 3)
    return {"install_s": install_s, "size_mb": _dir_size(root / "venv") / 1e6, "has_torch": has_torch,
            "largest": [(n, b / 1e6) for b, n in sizes[:6]], "same_json": same, "cli_pth_tar_s": light_cli}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-light", action="store_true", help="skip the light-venv install and comparison")
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ckpttool-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    files = build_files(workdir)
    bare = statistics.median(peak_rss([sys.executable, "-c", "import torch"]) for _ in range(3))
    # the yardstick: a bare torch import, which verify no longer pays for any format
    torch_s = median_time(lambda: subprocess.run([sys.executable, "-c", "import torch"], check=True), args.repeat)
    rows = []
    for fmt, path in files.items():
        size = path.stat().st_size
        read_floor(path)  # warm the page cache so every figure reads from memory
        row = {
            "format": fmt,
            "size_mb": size / 1e6,
            "floor_s": median_time(lambda p=path: read_floor(p), args.repeat),
            "naive_s": median_time(lambda p=path: naive(p), args.repeat),
            "verdict_s": median_time(lambda p=path: in_process_verdict(p), args.repeat),
            "cli_s": median_time(lambda p=path: cli(p), args.repeat),
        }
        rss = statistics.median(
            peak_rss([sys.executable, "-m", "ckpttool", "verify", "--expect", "any", str(path)]) for _ in range(3)
        )
        row["rss_excess_x_file"] = (rss - bare) / size
        row["rss_mb"] = rss / 1e6
        rows.append(row)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    print(f"verify speed, vit_base_patch16_224 (86M params), medians of {args.repeat}; machine: {machine}")
    print(f"bare 'python -c \"import torch\"' process: {torch_s:.3f} s, peak RSS {bare / 1e6:.0f} MB "
          f"(verify never imports torch, in any format)")
    hdr = f"{'format':<12}{'size MB':>9}{'floor s':>9}{'naive s':>9}{'verdict s':>11}{'cli s':>8}{'verdict/naive':>15}{'RSS-torch / file':>18}"
    print(hdr)
    for r in rows:
        print(
            f"{r['format']:<12}{r['size_mb']:>9.0f}{r['floor_s']:>9.3f}{r['naive_s']:>9.3f}{r['verdict_s']:>11.3f}"
            f"{r['cli_s']:>8.3f}{r['verdict_s'] / r['naive_s']:>15.2f}{r['rss_excess_x_file']:>18.2f}"
        )
    by_fmt = {r["format"]: r for r in rows}
    vs_torch = by_fmt["pth.tar"]["cli_s"] / torch_s
    vs_st = by_fmt["pth.tar"]["cli_s"] / by_fmt["safetensors"]["cli_s"]
    print(f"cli(.pth.tar) / bare import torch: {vs_torch:.2f}x (target <= 0.5)  "
          f"{'OK' if vs_torch <= 0.5 else 'MISSED'}")
    print(f"cli(.pth.tar) / cli(.safetensors): {vs_st:.2f}x (target <= 1.3)  {'OK' if vs_st <= 1.3 else 'MISSED'}")
    light = None
    if not args.no_light:
        light = light_install(workdir, files)
        print(f"light venv (core package alone): install {light['install_s']:.1f} s (pip cache warm), "
              f"{light['size_mb']:.0f} MB on disk (target < 100 MB), torch importable: {light['has_torch']}")
        print("  largest: " + ", ".join(f"{n} {mb:.0f} MB" for n, mb in light["largest"]))
        print(f"  verify --format json identical to the full install: {light['same_json']}; "
              f"cli(.pth.tar) there {light['cli_pth_tar_s']:.3f} s")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "bare_torch_rss": bare, "bare_torch_s": torch_s,
                                         "rows": rows, "cli_vs_torch_import": vs_torch,
                                         "cli_pth_tar_vs_safetensors": vs_st, "light": light}, indent=2))


if __name__ == "__main__":
    main()
