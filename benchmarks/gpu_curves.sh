#!/usr/bin/env bash
# Learning curves side by side on one CUDA device: the default recipe on 1-1 in bf16-mixed and
# in fp32 (32-true), and agent.huber_delta=10 in fp32, each with seeds 1 and 2. All six runs
# train at once (4 emulator workers and one learner thread each, the learners sharing the GPU),
# so they meet the same machine. Each evaluates at half and at the whole budget (10 episodes).
#
#     bash benchmarks/gpu_curves.sh OUT_DIR [ENV_STEPS] [SECONDS]
#
# ENV_STEPS: the budget of each run (default 85000). SECONDS: a run still going after this
# long is stopped as Ctrl-C stops it (default 1800). Writes OUT_DIR/<variant>-s<seed>/ (the run
# dirs), OUT_DIR/curves.csv (mario_rl.plot's CSV of eval/x_pos_mean, eval/clear_rate and
# rollout/x_pos; label = the variant and seed) and prints one JSON line per run: its env steps,
# env steps/s and last evaluation. PYTHON=... picks the interpreter; VARIANTS="bf16 fp32" and
# SEEDS="1" run a subset (default: all three variants, seeds 1 and 2). Exits 2 without CUDA, 1
# for an unknown variant.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
out=${1:?usage: gpu_curves.sh OUT_DIR [ENV_STEPS] [SECONDS]}
env_steps=${2:-85000}
seconds=${3:-1800}
mkdir -p "$out"

declare -A variants=(
    [bf16]="trainer.precision=bf16-mixed"
    [fp32]="trainer.precision=32-true"
    [fp32-huber10]="trainer.precision=32-true agent.huber_delta=10"
)
for variant in ${VARIANTS:-bf16 fp32 fp32-huber10}; do
    [[ -v "variants[$variant]" ]] || {
        echo "gpu_curves: VARIANTS: unknown variant '$variant'; allowed: ${!variants[*]}" >&2
        exit 1
    }
done
if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_curves: no CUDA device visible to torch; nothing to run" >&2
    exit 2
fi

names=()
for variant in ${VARIANTS:-bf16 fp32 fp32-huber10}; do
    for seed in ${SEEDS:-1 2}; do
        name=$variant-s$seed
        names+=("$name")
        # shellcheck disable=SC2086  # the variant's overrides are separate words
        timeout -s INT -k 60 "$seconds" "$python" train.py trainer=gpu env.level=1-1 \
            env_steps="$env_steps" checkpoint_every=$((env_steps / 2)) callbacks.eval.video=false \
            replay.save=false torch_threads=1 seed="$seed" ${variants[$variant]} \
            hydra.run.dir="$out/$name" >"$out/$name.log" 2>&1 &
    done
done
wait

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dirs=()
labels=()
for name in "${names[@]}"; do
    dirs+=("$out/$name")
    labels+=(--label "$name")
done
for metric in eval/x_pos_mean eval/clear_rate rollout/x_pos; do
    "$python" -m mario_rl.plot "${dirs[@]}" "${labels[@]}" --metric "$metric" \
        --out "$tmp/plot.png" --csv "$tmp/$(basename "$metric").csv" >/dev/null 2>&1 ||
        echo "gpu_curves: no $metric points" >&2
done
first=1
for csv in "$tmp"/*.csv; do
    [[ -e $csv ]] || continue
    if ((first)); then head -n 1 "$csv" >"$out/curves.csv"; first=0; fi
    tail -n +2 "$csv" >>"$out/curves.csv"
done

"$python" - "$out" "${names[@]}" <<'EOF'
import csv
import json
import sys
from pathlib import Path

out, names = Path(sys.argv[1]), sys.argv[2:]
rows = list(csv.DictReader(open(out / "curves.csv"))) if (out / "curves.csv").exists() else []
for name in names:
    line = {"run": name}
    throughput = out / name / "throughput.json"
    if throughput.exists():
        run = json.loads(throughput.read_text())
        line |= {key: round(run[key], 2) for key in ("env_steps", "env_steps_per_s", "updates_per_s")}
    for metric in ("eval/x_pos_mean", "eval/clear_rate"):
        points = [r for r in rows if r["label"] == name and r["metric"] == metric]
        if points:
            last = max(points, key=lambda r: int(r["env_step"]))
            line[metric] = [int(last["env_step"]), round(float(last["value"]), 3)]
    print(json.dumps(line))
EOF
