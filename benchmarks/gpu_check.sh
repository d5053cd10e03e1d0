#!/usr/bin/env bash
# One short GPU check of the runner's training throughput (benchmarks/runner_throughput.py).
#
# Runs, on one CUDA device, baseline (torchvision DataLoader, fp32) vs the runner's path
# (DeviceLoader, bf16 autocast, fused SGD, torch.compile) vs the 70%-pruned compacted model, for
# vit_small_patch16_224 at 224/16 and at 32/4 on synthetic CIFAR-shaped data (50,000 images).
# Prints both tables; writes throughput_224.json / throughput_32.json (+ env.txt) into $OUT when set.
# Budget: under ~6 minutes on an H100, torch.compile warm-ups included.
#
# Needs python3 with torch (CUDA) and timm (torchvision comes with timm). When they are missing it
# installs them: from $WHEELS_DIR with `pip install --no-index --find-links` when that is set (for a
# machine without network), otherwise `pip install -e .` from the repo root. The benchmark imports
# the repo's packages from the checkout, so the project itself need not be installed.
#
# Usage (repo root):  WHEELS_DIR=/path/to/wheels OUT=/tmp/out bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

if ! "$PY" -c 'import torch, timm' 2>/dev/null; then
  if [ -n "${WHEELS_DIR:-}" ]; then
    echo "installing torch/timm from $WHEELS_DIR (no index)"
    "$PY" -m pip install --quiet --no-index --find-links "$WHEELS_DIR" timm torchvision torch
  else
    echo "installing the project and its dependencies (pip install -e .)"
    "$PY" -m pip install --quiet -e .
  fi
fi

"$PY" - <<'EOF'
import torch, timm, torchvision
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), torchvision {torchvision.__version__}, timm {timm.__version__}")
assert torch.cuda.is_available(), "no CUDA device visible"
print("device:", torch.cuda.get_device_name(0))
EOF

out_dir="${OUT:-}"
json_arg() { [ -n "$out_dir" ] && echo "--json $out_dir/$1" || true; }
if [ -n "$out_dir" ]; then
  mkdir -p "$out_dir"
  { nvidia-smi 2>/dev/null || true; "$PY" -c 'import torch; print(torch.__config__.show())'; } > "$out_dir/env.txt"
fi

# The DeviceLoader's CUDA test (determinism on the device, equality with the CPU ops), if pytest is there.
if "$PY" -c 'import pytest' 2>/dev/null; then
  "$PY" -m pytest -q -p no:cacheprovider tests/runner/test_device_loader.py -k cuda || echo "CUDA loader test FAILED"
fi

common=(--device cuda --model vit_small_patch16_224 --compile --windows 3)
echo "== ViT-S/16 at 224 =="
"$PY" benchmarks/runner_throughput.py "${common[@]}" --img-size 224 --patch-size 16 \
  --batch-size 256 --steps 15 --warmup 8 $(json_arg throughput_224.json)
echo "== ViT-S at 32, patch 4 =="
"$PY" benchmarks/runner_throughput.py "${common[@]}" --img-size 32 --patch-size 4 \
  --batch-size 512 --steps 15 --warmup 8 $(json_arg throughput_32.json)
