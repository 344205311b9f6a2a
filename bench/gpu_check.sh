#!/usr/bin/env bash
# The GPU check: lmlib's CUDA paths tested and measured in one short run (< 6 minutes).
#
#   bash bench/gpu_check.sh [RESULT_FILE]      (from anywhere; default $OUT/gpu_check.json or ./gpu_check.json)
#
# It installs nothing and needs no network: a CUDA build of PyTorch (2.11 or later),
# numpy, matplotlib and tqdm must already be installed. lmlib runs from this checkout
# (PYTHONPATH), Tiny Shakespeare is read from LMLIB_SHAKESPEARE (default
# ../shared/data/tinyshakespeare.txt beside the repository). See bench/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
result=${1:-${OUT:-.}/gpu_check.json}
data=${LMLIB_SHAKESPEARE:-../shared/data/tinyshakespeare.txt}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import torch, numpy, matplotlib, tqdm; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
timeout 345 python bench/gpu_check.py --out "$result" --data "$data"
