#!/usr/bin/env bash
# The whole pipeline (scripts/run_pipeline.sh) once per seed, then the spread over seeds: per stage and metric, each
# run's test value and the mean ± sd (sidrec-results --seeds).
#
#   scripts/run_seeds.sh --config-dir recipes/industrial/tiny-cpu --seeds "1 2 3"
#   scripts/run_seeds.sh --config-dir DIR --seeds "1 2" --data_dir DIR --category NAME --run-dir-prefix results/x
#
# Seed N runs into <prefix>-seed<N> (default prefix results/<config-dir name>) with --seed N given to SFT and GRPO;
# each run dir is resumable and records its seed, as run_pipeline.sh's are. The summary is <prefix>-seeds.md, and the
# last line printed is its path. --accelerate-config and --restart are passed on to every run.
set -euo pipefail

CONFIG_DIR="" SEEDS="" PREFIX="" PASS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --config-dir) CONFIG_DIR="$2"; shift 2 ;;
    --seeds) SEEDS="$2"; shift 2 ;;
    --run-dir-prefix) PREFIX="$2"; shift 2 ;;
    --data_dir | --category | --accelerate-config) PASS+=("$1" "$2"); shift 2 ;;
    --restart) PASS+=(--restart); shift ;;
    *) echo "error: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n "$CONFIG_DIR" ]] || { echo "error: --config-dir is required" >&2; exit 2; }
read -r -a SEED_LIST <<< "$SEEDS"
[[ ${#SEED_LIST[@]} -gt 0 ]] || { echo "error: --seeds \"1 2 3\" is required" >&2; exit 2; }
for seed in "${SEED_LIST[@]}"; do
  [[ "$seed" =~ ^[0-9]+$ ]] || { echo "error: seed '$seed' is not a non-negative integer" >&2; exit 2; }
done
PREFIX="${PREFIX:-results/$(basename "$CONFIG_DIR")}"

RUN_DIRS=()
for seed in "${SEED_LIST[@]}"; do
  echo "=== seed $seed: $PREFIX-seed$seed" >&2
  # run_pipeline.sh's last line (the reported metrics.json) goes to the log, so this script's last line is the summary.
  "$(dirname "$0")/run_pipeline.sh" --config-dir "$CONFIG_DIR" "${PASS[@]}" --run-dir "$PREFIX-seed$seed" \
    --seed "$seed" >&2
  RUN_DIRS+=("$PREFIX-seed$seed")
done
python -m sidrec.analysis.results --seeds "${RUN_DIRS[@]}" --out "$PREFIX-seeds.md"
