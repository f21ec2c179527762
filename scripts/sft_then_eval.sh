#!/usr/bin/env bash
# SFT then constrained-beam evaluation for one recipe folder (holding sft.yaml and eval.yaml).
# Usage: scripts/sft_then_eval.sh recipes/industrial/tiny-cpu [accelerate config, default accelerate_configs/cpu.yaml]
# Prints the eval's metrics.json path last.
set -euo pipefail
dir=${1:?usage: $0 RECIPE_DIR [ACCELERATE_CONFIG]}
acc=${2:-accelerate_configs/cpu.yaml}
for f in "$dir/sft.yaml" "$dir/eval.yaml" "$acc"; do
  [[ -f $f ]] || { echo "error: $f not found" >&2; exit 2; }
done
accelerate launch --config_file "$acc" recipes/sft.py --config "$dir/sft.yaml"
accelerate launch --config_file "$acc" recipes/evaluate.py --config "$dir/eval.yaml"
