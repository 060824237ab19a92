#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA device, run the tests marked `gpu` (the learner on
# CUDA with the replay in host memory, bf16 with fp32 Q-values, a checkpoint saved on the GPU
# and resumed on the CPU), then a 20,000 env-step run of the default recipe with trainer=gpu
# and 16 env workers, and print one JSON line: its env steps/s and updates/s (steady state,
# from the first update) and the peak GPU memory torch allocated.
#
#     bash benchmarks/gpu_check.sh                 # PYTHON=... to pick the interpreter
#     bash benchmarks/gpu_check.sh env_steps=50000 # extra overrides go to train.py
#
# Exits 2 without a CUDA device, 1 when a test or the run fails.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}

if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA device visible to torch; nothing to check" >&2
    exit 2
fi

"$python" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py >&2

run_dir=$(mktemp -d)
trap 'rm -rf "$run_dir"' EXIT
"$python" train.py trainer=gpu env.num_envs=16 env_steps=20000 replay.save=false \
    hydra.run.dir="$run_dir" "$@" >"$run_dir/train.log" 2>&1 || {
    tail -n 40 "$run_dir/train.log" >&2
    exit 1
}

"$python" - "$run_dir/throughput.json" <<'EOF'
import json
import sys

import torch

run = json.load(open(sys.argv[1]))
print(json.dumps({
    "env_steps": run["env_steps"],
    "updates": run["updates"],
    "env_steps_per_s": round(run["env_steps_per_s"], 2),
    "updates_per_s": round(run["updates_per_s"], 2),
    "peak_gpu_mb": round(run["peak_gpu_mb"], 1),
    "peak_rss_mb": round(run["peak_rss_mb"], 1),
    "num_envs": 16,
    "gpu": torch.cuda.get_device_name(0),
}))
EOF
