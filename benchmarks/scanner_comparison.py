"""scanner_comparison: what ckpttool, picklescan and modelscan say about the issue-19 reader differentials.

Contract: for each file of tests/reliability/_differential_files.py (one or more per class: which zip
folder, name case, central-directory location, hidden payload, Parameter state, tensor metadata,
string decoding), print what torch.load(weights_only=True) returns (the values the model would
get: 7 = "trained", what the scanner should have judged, -1 = "random"), whether
torch.load(weights_only=False) runs a payload, ckpttool verify's exit code (0 passed, 1 failed,
2 refused), and the exit code and verdict of picklescan and modelscan. A scanner "catches" a file
when it refuses or flags it. Results to benchmarks/results/scanner_comparison.json.

Benchmark-only dependencies (not in pyproject): picklescan and modelscan, e.g.
    pip install --target /tmp/scanners picklescan modelscan
    SCANNERS=/tmp/scanners python benchmarks/scanner_comparison.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "reliability"))

import _differential_files as D  # noqa: E402
import torch  # noqa: E402


def _run(args: list[str], extra_path: str = "") -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (extra_path, str(REPO)) if p))
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)
    return done.returncode, done.stdout + done.stderr


def _picklescan(path: Path, scanners: str) -> str:
    _, text = _run(["-m", "picklescan", "-p", str(path)], scanners)
    if "Infected files: 0" in text and "Suspicious globals: 0" in text:
        return "clean"
    return "flagged" if "SCAN SUMMARY" in text else f"error: {text.strip()[-120:]}"


def _modelscan(path: Path, scanners: str) -> str:
    _, text = _run(["-m", "modelscan.cli", "-p", str(path)], scanners)
    if "No issues found" in text:
        return "clean"
    if "Total Issues" in text:
        return "flagged"
    return "skipped (not scanned)" if "skipped" in text else f"error: {text.strip()[-120:]}"


def _torch_values(path: Path, **kw) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, weights_only=True, **kw)
        return str(obj["w"].resolve_neg().tolist()[0])
    except Exception as e:  # noqa: BLE001
        return f"refused ({type(e).__name__})"


def main() -> int:
    scanners = os.environ.get("SCANNERS", "")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cls, builders in D.CLASSES.items():
            for label, build in builders:
                folder = Path(tmp) / f"{len(rows)}"
                folder.mkdir()
                marker = folder / "pwned"
                path = folder / "init_pretrained.pth"
                build(path, marker) if build.__code__.co_argcount == 2 else build(path)
                row = {"class": cls, "file": label, "torch": _torch_values(path),
                       "torch_mmap": _torch_values(path, mmap=True)}
                if cls.startswith("4"):
                    try:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            torch.load(path, weights_only=False)
                    except Exception:  # noqa: BLE001
                        pass
                    row["payload_runs_without_weights_only"] = marker.exists()
                code, text = _run(["-m", "ckpttool", "verify", str(path), "--expect", "any"])
                row["ckpttool_exit"] = code  # 2: refused; 0/1: judged (what torch loads)
                row["ckpttool_says"] = text.strip().splitlines()[-1][:200] if text.strip() else ""
                row["picklescan"] = _picklescan(path, scanners)
                row["modelscan"] = _modelscan(path, scanners)
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = REPO / "benchmarks" / "results" / "scanner_comparison.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
