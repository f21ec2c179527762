"""Offline evaluation: SID-constrained beam search over a split, HR@K / NDCG@K and the per-level analysis.

    accelerate launch recipes/evaluate.py --config recipes/demo/eval.yaml
    accelerate launch recipes/evaluate.py --config recipes/industrial/tiny-cpu/eval.yaml --model_name_or_path <ckpt>
    accelerate launch --num_processes 2 recipes/evaluate.py --config ...   # shards the split, same metrics.json

Writes predictions.jsonl, metrics.json and run_summary.json to output_dir; the last line printed is metrics.json's path.
An interrupted run continues with --resume true (finished shards are kept).
"""

import logging

import torch
from transformers import set_seed
from trl import ModelConfig, TrlParser

from sidrec.configs import EvalConfig, SidrecScriptArguments
from sidrec.data import load_dataset
from sidrec.evaluation import clear_shards, run_sharded_eval, sample_rows, write_eval_outputs
from sidrec.launch import check_launch, describe_process_state
from sidrec.modeling import check_sid_tokens, get_model, get_tokenizer, prompt_style_of
from sidrec.tracking import log_eval_metrics, setup_tracking
from sidrec.utils import RunSummary, UserError, check_output_dir, config_dict, parse_config, process_state, run_main

logger = logging.getLogger("sidrec.evaluate")


def main():
    script_args, eval_args, model_args = parse_config(TrlParser((SidrecScriptArguments, EvalConfig, ModelConfig)))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_launch(eval_args.use_cpu)
    state = process_state(cpu=eval_args.use_cpu)
    if not model_args.model_name_or_path:
        raise UserError("set model_name_or_path to the checkpoint to evaluate (e.g. the SFT output_dir)")
    output_dir = eval_args.output_dir
    check_output_dir(output_dir, eval_args.overwrite_output_dir, resume=eval_args.resume)
    setup_tracking(script_args, output_dir)
    configs = (script_args, eval_args, model_args)
    summary = RunSummary(output_dir, "eval", configs, eval_args.seed, state)
    try:
        if state.is_main_process and not eval_args.resume:
            clear_shards(output_dir)  # an overwritten run's shards must not be taken for this run's
        # Data and checkpoint checks before any decoding.
        with summary.timed("load_data"):
            split = eval_args.split
            first_n = eval_args.max_samples if eval_args.sample_seed is None else None
            data = load_dataset(script_args.data_dir, script_args.category, (split,), {split: first_n})
            summary.add_data_files(data.paths.all_files())
            rows = sample_rows(data.splits[split], eval_args.max_samples, eval_args.sample_seed or 0)
            if eval_args.num_beams > len(data.catalog.vocab):
                raise UserError(
                    f"num_beams={eval_args.num_beams} is larger than the catalog's {len(data.catalog.vocab)} distinct "
                    "SIDs; a ranked list cannot be that long"
                )
        set_seed(eval_args.seed)
        with summary.timed("load_model"):
            tokenizer = get_tokenizer(model_args, eval_args.trust_remote_code)
            check_sid_tokens(tokenizer, data.catalog.vocab, model_args.model_name_or_path)
            # A full checkpoint or an SFT adapter (merged); bfloat16 on CUDA, float32 on CPU unless dtype is set.
            dtype = torch.bfloat16 if state.device.type == "cuda" else torch.float32
            model = get_model(model_args, dtype, eval_args.trust_remote_code)
            model = model.to(state.device)
            summary.data["launch"] = describe_process_state(state, model)
            summary.data["prompt_style"] = prompt_style_of(model)  # as the checkpoint was trained

        # Rank every row's next item shard by shard (shards split across processes), merge, score, write.
        with summary.timed("rank"):
            fingerprint = {
                "model": model_args.model_name_or_path,
                "data": summary.data["data_files"],
                **{
                    k: getattr(eval_args, k)
                    for k in ("split", "max_samples", "sample_seed", "num_beams", "batch_size", "max_length")
                },
                "decoder": eval_args.decoder,
            }
            result = run_sharded_eval(
                model,
                tokenizer,
                rows,
                data.catalog,
                output_dir,
                fingerprint,
                num_beams=eval_args.num_beams,
                batch_size=eval_args.batch_size,
                max_length=eval_args.max_length,
                ks=eval_args.topk,
                shard_size=eval_args.shard_size,
                source=data.paths.splits[split],
                decoder=eval_args.decoder,
                process_index=state.process_index,
                num_processes=state.num_processes,
                wait_for_everyone=state.wait_for_everyone,
            )
        if not state.is_main_process:
            return
        metrics, predictions = result
        metrics_path, pred_path = write_eval_outputs(output_dir, metrics, predictions)
        clear_shards(output_dir)
        if script_args.tracking:
            config = config_dict(script_args, eval_args, model_args)
            summary.data["wandb"] = log_eval_metrics(
                script_args, output_dir, model_args.model_name_or_path, metrics, config
            )
        summary.data["metrics"] = metrics
        summary.data["outputs"] = [metrics_path, pred_path]
        summary.write("ok")
        ks = [k for k in eval_args.topk if k <= eval_args.num_beams]
        logger.info("%s", "  ".join(f"HR@{k}={metrics[f'HR@{k}']:.4f}" for k in ks))
        logger.info("%s", "  ".join(f"NDCG@{k}={metrics[f'NDCG@{k}']:.4f}" for k in ks))
        logger.info(
            "invalid=%d  samples=%d  beams=%d", metrics["invalid"], metrics["num_samples"], metrics["num_beams"]
        )
        print(metrics_path)
    except BaseException as e:
        summary.write("failed", error=f"{type(e).__name__}: {e}")
        raise


if __name__ == "__main__":
    run_main(main)
