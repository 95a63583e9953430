#!/usr/bin/env bash
# The papers' claims on the toy world, in one command (README "The papers' claims"):
#   bash experiments/toy/claims.sh
# Trains every recipe with every seed into runs/toy/claims/<recipe>-s<seed>/, scores every run on its test sets
# (`lit-sllm test`), then prints the tables (also written to runs/toy/claims/claims.json);
# notebooks/claims.ipynb plots them.
# Finished runs are skipped, so an interrupted sweep resumes where it stopped.
#   SEEDS="0 1 2 3 4"        seeds of every recipe (5 for the README tables)
#   JOBS=2                   runs at once; each gets 2/JOBS CPU threads
#   FIT_ARGS="..."           extra `lit-sllm fit` overrides for every run (e.g. --trainer.max_steps 100)
#   LIT_SLLM, PYTHON         the lit-sllm and python to use (`make claims` passes the venv's)
set -euo pipefail
cd "$(dirname "$0")/../.."
LIT_SLLM=${LIT_SLLM:-lit-sllm}
SEEDS=${SEEDS:-"0 1 2 3 4"}
JOBS=${JOBS:-2}
ROOT=claims
RECIPES="joint_sft speech_only_sft mtbi mtbi_clip_interleave mtbi_no_interleave asr_only"
THREADS=$(( $(nproc) / JOBS > 0 ? $(nproc) / JOBS : 1 ))

run_one() {  # recipe seed
  local name="$ROOT/$1-s$2" dir="runs/toy/$ROOT/$1-s$2"
  [[ -f "$dir/done" ]] && return 0
  rm -rf "$dir"
  export LIT_SLLM_RUN_NAME="$name" OMP_NUM_THREADS="$THREADS"
  # shellcheck disable=SC2086
  $LIT_SLLM fit --config "experiments/toy/$1.yaml" --seed_everything "$2" --trainer.enable_progress_bar false \
    ${FIT_ARGS:-} > "runs/toy/$ROOT/$1-s$2.log" 2>&1
  $LIT_SLLM test --config "experiments/toy/$1.yaml" --seed_everything "$2" --trainer.enable_progress_bar false \
    --ckpt_path "$dir/checkpoints/last.ckpt" >> "runs/toy/$ROOT/$1-s$2.log" 2>&1
  touch "$dir/done"
}
export -f run_one
export LIT_SLLM ROOT THREADS FIT_ARGS

mkdir -p "runs/toy/$ROOT"
for seed in $SEEDS; do for recipe in $RECIPES; do echo "$recipe $seed"; done; done \
  | xargs -P "$JOBS" -L 1 bash -c 'run_one "$0" "$1" && echo "done: $0 seed $1" || { echo "FAILED: $0 seed $1 (see runs/toy/'"$ROOT"'/$0-s$1.log)"; exit 255; }'
${PYTHON:-python} -m lit_sllm.claims "runs/toy/$ROOT"
