#!/usr/bin/env bash
# The GPU path measured in one table (issue 22): lstm and transformer recipes with --device cuda
# --strict-device, fp32 vs auto (bf16 / fp16) vs auto + torch.compile, samples/s and its ratio to
# CPU, peak CUDA memory, CPU-vs-GPU test-score correlation (>= 0.999) and bundle verification.
# Under 8 minutes on one GPU (3 epochs per GPU run, 1 on CPU). Without a CUDA device it says so
# and exits 0. Details: benchmarks/gpu_check.py.
#
#   benchmarks/gpu_check.sh                     # from the repository root
#   PYTHON=.venv/bin/python benchmarks/gpu_check.sh --epochs 2 --recipes lstm
#   benchmarks/gpu_check.sh --device cpu --modes fp32,auto --shrink --recipes lstm   # dry run of the script on CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 )}"
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "gpu_check: torch is not importable with $PYTHON; set PYTHON=/path/to/venv/bin/python" >&2
    exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout "${GPU_CHECK_TIMEOUT:-480}" "$PYTHON" benchmarks/gpu_check.py "$@"
