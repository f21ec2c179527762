#!/usr/bin/env bash
# The reference path, run for real at smoke size: the YAMLs in recipes/industrial/qwen2.5-1.5b/ unchanged, with
# command-line overrides only (model path, sizes, steps, CPU switch), every stage through
# accelerate_configs/zero2.yaml (DeepSpeed ZeRO-2) with 2 processes, on the Industrial data:
#   SFT -> eval -> GRPO (reference model synced) -> eval, and a LoRA SFT -> eval.
# The model is a locally built Qwen2.5-1.5B-Instruct stand-in (python -m sidrec.models.standin): same tokenizer and
# architecture, no SID tokens, so the recipes load it, add the SID tokens, resize, train, save and reload it exactly
# as they do the real checkpoint. The last line printed is the final metrics.json.
#
#   scripts/reference_smoke.sh                 # CPU: DeepSpeed on its CPU accelerator, gloo, float32
#   DEVICE=gpu scripts/reference_smoke.sh      # GPU: bf16 as pinned, NCCL
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/data/Amazon}
OUT=${OUT:-outputs/reference-smoke}
STANDIN=${STANDIN:-outputs/standin/qwen2.5-1.5b-instruct}
NPROC=${NPROC:-2}
DEVICE=${DEVICE:-cpu}
PYTHON=${PYTHON:-python}
REF=recipes/industrial/qwen2.5-1.5b

if [ ! -d "$DATA" ]; then
  echo "error: $DATA not found: the reference smoke runs on MiniOneRec's Industrial_and_Scientific data" >&2
  exit 2
fi
case "$DEVICE" in
  cpu) DEV=(--use_cpu true --bf16 false); EVAL_DEV=(--use_cpu true); export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} ;;
  gpu) DEV=(); EVAL_DEV=() ;;
  *) echo "error: DEVICE must be cpu or gpu, got $DEVICE" >&2; exit 2 ;;
esac

LAUNCH=("$PYTHON" -m accelerate.commands.launch --config_file accelerate_configs/zero2.yaml --num_processes "$NPROC")
COMMON=(--data_dir "$DATA" --overwrite_output_dir true)
# Smoke sizes: few rows and steps; global batch = 4 x 2 x processes.
GLOBAL=$((4 * 2 * NPROC))
SFT_SIZE=(--max_train_rows 256 --max_valid_rows 16 --max_steps 4 --per_device_train_batch_size 4
  --gradient_accumulation_steps 2 --global_batch_size "$GLOBAL" --eval_strategy steps --eval_steps 2
  --per_device_eval_batch_size 8 --logging_steps 1 --warmup_steps 1)
EVAL_SIZE=(--max_samples 32 --batch_size 8)
# One prompt x 16 beams per process per step; the reference model is synced after every step; the ranking eval
# (16 valid users, split across the processes) runs and picks the checkpoint at step 2.
GRPO_SIZE=(--max_train_rows 32 --max_steps 2 --per_device_train_batch_size 16 --gradient_accumulation_steps 1
  --global_batch_size $((16 * NPROC)) --ref_model_sync_steps 1 --eval_steps 2 --max_valid_rows 16
  --logging_steps 1 --warmup_steps 1)

step() { echo "== $*" >&2; }
# stage TITLE SCRIPT YAML MODEL OUT_SUBDIR [recipe args...]: one recipe through zero2.yaml, its output to stderr.
stage() {
  local title=$1 script=$2 yaml=$3 model=$4 out=$5
  shift 5
  step "$title"
  "${LAUNCH[@]}" "recipes/$script.py" --config "$REF/$yaml" "${COMMON[@]}" --model_name_or_path "$model" \
    --output_dir "$OUT/$out" "$@" >&2
}

step "stand-in checkpoint: $STANDIN"
"$PYTHON" -m sidrec.models.standin --out "$STANDIN" --if_missing >&2

stage "SFT (zero2, $NPROC processes)" sft sft.yaml "$STANDIN" sft "${SFT_SIZE[@]}" "${DEV[@]}"
stage "eval SFT" evaluate eval.yaml "$OUT/sft" eval "${EVAL_SIZE[@]}" "${EVAL_DEV[@]}"
stage "GRPO (zero2, $NPROC processes)" grpo grpo.yaml "$OUT/sft" grpo "${GRPO_SIZE[@]}" "${DEV[@]}"
stage "eval GRPO" evaluate eval_grpo.yaml "$OUT/grpo" eval_grpo "${EVAL_SIZE[@]}" "${EVAL_DEV[@]}"
stage "SFT with LoRA (zero2, $NPROC processes)" sft sft.yaml "$STANDIN" sft_lora "${SFT_SIZE[@]}" "${DEV[@]}" \
  --use_peft true --lora_r 8 --lora_alpha 16 --lora_target_modules q_proj k_proj v_proj o_proj
stage "eval LoRA SFT (base + adapter)" evaluate eval.yaml "$OUT/sft_lora" eval_lora "${EVAL_SIZE[@]}" "${EVAL_DEV[@]}"

step "check what ran"
"$PYTHON" -m sidrec.analysis.smoke "$OUT" --processes "$NPROC" >&2
echo "$OUT/eval_grpo/metrics.json"
