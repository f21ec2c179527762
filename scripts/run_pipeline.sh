#!/usr/bin/env bash
# SFT -> eval -> GRPO -> eval -> baselines -> RESULTS.md, resumable: a stage whose run_summary.json says "ok" is
# skipped; an interrupted SFT or GRPO continues from its last checkpoint.
#
#   scripts/run_pipeline.sh --config-dir recipes/industrial/tiny-cpu
#   scripts/run_pipeline.sh --config-dir recipes/industrial/tiny-cpu --data_dir DIR --category NAME --run-dir DIR
#   scripts/run_pipeline.sh --config-dir recipes/industrial/tiny-cpu --seed 2 --run-dir results/tiny-cpu-seed2
#
# --seed N overrides the configs' seed in SFT and GRPO (scripts/run_seeds.sh runs one pipeline per seed).
# The run dir records what made it (pipeline.json: data dir, category, data and config file hashes, seed). Re-running
# into it with other data, configs or seed stops before any work (exit 2); --restart clears it and starts over.
#
# The config dir holds sft.yaml, eval.yaml, grpo.yaml (eval.yaml is used for both evals). Results land in
# --run-dir (default results/<config-dir name>): sft/ eval_sft/ grpo/ eval_grpo/ baselines.json (+ baselines/, each
# baseline's ranked SIDs per test user) RESULTS.md plots/.
# The last line printed is the metrics.json of the model the run reports, chosen on valid (see sidrec.analysis.results).
set -euo pipefail

CONFIG_DIR="" DATA_ARGS=() RUN_DIR="" ACCEL_CONFIG="accelerate_configs/cpu.yaml" DATA_DIR="" CATEGORY="" RESTART=()
SEED_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --config-dir) CONFIG_DIR="$2"; shift 2 ;;
    --data_dir) DATA_DIR="$2"; DATA_ARGS+=(--data_dir "$2"); shift 2 ;;
    --category) CATEGORY="$2"; DATA_ARGS+=(--category "$2"); shift 2 ;;
    --run-dir) RUN_DIR="$2"; shift 2 ;;
    --accelerate-config) ACCEL_CONFIG="$2"; shift 2 ;;
    --seed) SEED_ARGS=(--seed "$2"); shift 2 ;;
    --restart) RESTART=(--restart); shift ;;
    *) echo "error: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n "$CONFIG_DIR" ]] || { echo "error: --config-dir is required" >&2; exit 2; }
for f in sft.yaml eval.yaml grpo.yaml; do
  [[ -f "$CONFIG_DIR/$f" ]] || { echo "error: $CONFIG_DIR/$f does not exist" >&2; exit 2; }
done
RUN_DIR="${RUN_DIR:-results/$(basename "$CONFIG_DIR")}"
LAUNCH=(accelerate launch --config_file "$ACCEL_CONFIG")
yaml_value() { python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
DATA_DIR="${DATA_DIR:-$(yaml_value "$CONFIG_DIR/sft.yaml" data_dir)}"
CATEGORY="${CATEGORY:-$(yaml_value "$CONFIG_DIR/sft.yaml" category)}"
# The stages' data and config must be those that made the results already in the run dir (or there are none yet).
python -m sidrec.analysis.pipeline --run-dir "$RUN_DIR" --config-dir "$CONFIG_DIR" --data_dir "$DATA_DIR" --category "$CATEGORY" \
  --accelerate-config "$ACCEL_CONFIG" "${SEED_ARGS[@]}" "${RESTART[@]}"

done_ok() { python -c "import json, sys; sys.exit(json.load(open(sys.argv[1])).get('status') != 'ok')" "$1/run_summary.json" 2>/dev/null; }
train_stage() {  # name, script, config, extra args...
  local name="$1" script="$2" config="$3"; shift 3
  if done_ok "$RUN_DIR/$name"; then echo "== $name: done, skipped" >&2; return; fi
  local resume=()
  if compgen -G "$RUN_DIR/$name/checkpoint-*" > /dev/null; then resume=(--resume_from_checkpoint true); fi
  echo "== $name" >&2
  "${LAUNCH[@]}" "recipes/$script.py" --config "$config" "${DATA_ARGS[@]}" --output_dir "$RUN_DIR/$name" \
    --overwrite_output_dir true "${resume[@]}" "$@" >&2
}
eval_stage() {  # name, model dir
  local name="$1" model="$2"
  if done_ok "$RUN_DIR/$name"; then echo "== $name: done, skipped" >&2; return; fi
  local resume=()
  if [[ -d "$RUN_DIR/$name/shards" ]]; then resume=(--resume true); fi
  echo "== $name" >&2
  "${LAUNCH[@]}" recipes/evaluate.py --config "$CONFIG_DIR/eval.yaml" "${DATA_ARGS[@]}" --model_name_or_path "$model" \
    --output_dir "$RUN_DIR/$name" --overwrite_output_dir true "${resume[@]}" >&2
}

train_stage sft sft "$CONFIG_DIR/sft.yaml" "${SEED_ARGS[@]}"
eval_stage eval_sft "$RUN_DIR/sft"
train_stage grpo grpo "$CONFIG_DIR/grpo.yaml" --model_name_or_path "$RUN_DIR/sft" "${SEED_ARGS[@]}"
eval_stage eval_grpo "$RUN_DIR/grpo"
if [[ ! -f "$RUN_DIR/baselines.json" ]]; then
  echo "== baselines" >&2
  python -m sidrec.analysis.baselines --data_dir "$DATA_DIR" --category "$CATEGORY" --out "$RUN_DIR/baselines.json" >&2
fi
# RESULTS.md, then the last line: the metrics.json of the model the run reports (GRPO's, or SFT's when GRPO did not
# beat its start model on valid).
python -m sidrec.analysis.results "$RUN_DIR" --final-metrics \
  --command "scripts/run_pipeline.sh --config-dir $CONFIG_DIR ${DATA_ARGS[*]:+${DATA_ARGS[*]} }${SEED_ARGS[*]:+${SEED_ARGS[*]} }--run-dir $RUN_DIR"
