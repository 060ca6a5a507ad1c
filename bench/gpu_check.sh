#!/usr/bin/env bash
# The GPU path, measured in one short run (< 8 minutes on one H200, install included):
# installs curatune the README's way (plus the gpu extra and TRL), then runs bench/gpu_check.py:
# a LoRA, a full and a QLoRA cell of the 135M default model in bf16 on 300 demo records, each
# beside a plain TRL SFTTrainer script on the same records, and the evaluation with generation.
# Prints tokens/s, peak GPU memory and wall time; writes gpu_check.{json,md} to $OUT if set,
# else to bench/results/.
#
#   bash bench/gpu_check.sh                      # on a GPU machine, from anywhere
#   CURATUNE_SKIP_INSTALL=1 bash bench/gpu_check.sh --records 500 --model /path/to/model
#   bash bench/gpu_check.sh --cpu-smoke          # no GPU: tiny model, 8 records, checks it runs
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export PYTHONUNBUFFERED=1
started=$(date +%s)

if [[ -z "${CURATUNE_SKIP_INSTALL:-}" ]]; then
  # The README's install, with the torch that is already there when there is one (a GPU
  # machine's CUDA build); bitsandbytes (the gpu extra) for QLoRA; TRL for the peer script.
  if python -c "import torch" 2>/dev/null; then
    python -m pip install -q -e ".[dev,gpu]" trl
  else
    python -m pip install -q -e ".[dev,gpu]" "torch==2.13.0" trl
  fi
fi
python -c "import torch, transformers, peft, trl; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'| transformers', transformers.__version__, '| peft', peft.__version__, '| trl', trl.__version__)"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi

out="${OUT:-$repo/bench/results}"
mkdir -p "$out"
python bench/gpu_check.py --out "$out" "$@"
echo "gpu_check.sh: $(( $(date +%s) - started )) s wall in all (install included); results in $out"
