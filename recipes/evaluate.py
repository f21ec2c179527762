"""Offline evaluation: SID-constrained beam search over a split, HR@K / NDCG@K and the per-level analysis.

    accelerate launch recipes/evaluate.py --config recipes/demo/eval.yaml
    accelerate launch recipes/evaluate.py --config recipes/industrial/tiny-cpu/eval.yaml --model_name_or_path <ckpt>
    accelerate launch --num_processes 2 recipes/evaluate.py --config ...   # shards the split, same metrics.json
    python recipes/evaluate.py --config ... --backend vllm                   # the same search on a vLLM engine

Writes predictions.jsonl, metrics.json and run_summary.json to output_dir; the last line printed is metrics.json's path.
An interrupted run continues with --resume true (finished shards are kept).
"""

import logging

from transformers import set_seed
from trl import TrlParser

from sidrec.backends import build_ranker
from sidrec.configs import EvalConfig, SidrecModelConfig, SidrecScriptArguments
from sidrec.errors import UserError
from sidrec.evaluation import clear_shards, eval_fingerprint, run_sharded_eval, sample_rows, write_eval_outputs
from sidrec.models.loading import load_trained
from sidrec.run.launch import describe_process_state
from sidrec.run.recipe import parse_config, run_main, run_recipe
from sidrec.run.summary import config_dict
from sidrec.run.tracking import log_eval_metrics

logger = logging.getLogger("sidrec.evaluate")


def main():
    script_args, args, model_args = parse_config(TrlParser((SidrecScriptArguments, EvalConfig, SidrecModelConfig)))
    if not model_args.model_name_or_path:
        raise UserError("set model_name_or_path to the checkpoint to evaluate (e.g. the SFT output_dir)")
    with run_recipe("eval", script_args, args, model_args) as run:
        if run.is_main_process and not args.resume:
            clear_shards(args.output_dir)  # an overwritten run's shards must not be taken for this run's
        # Data and checkpoint checks before any decoding.
        split = args.split
        data = run.load_data((split,), {split: args.max_samples if args.sample_seed is None else None})
        args.check_catalog(data.catalog)
        checkpoint = load_trained(model_args, data.catalog, args.trust_remote_code)  # tokenizer, prompt style, window
        rows = checkpoint.cut_history(sample_rows(data.splits[split], args.max_samples, args.sample_seed or 0))
        run.summary.data.update(checkpoint.metadata.as_dict())  # prompts as the checkpoint was trained

        # Build the ranker the config names (hf: tree or generate search on the weights; vllm: an engine).
        set_seed(args.seed)
        with run.timed("load_model"):
            ranker = build_ranker(args, checkpoint, data.catalog, run.state)
        run.summary.data["launch"] = {**describe_process_state(run.state, ranker.model), **ranker.describe()}

        # Rank every row's next item shard by shard (shards split across processes), merge, score, write.
        with run.timed("rank"):
            result = run_sharded_eval(
                ranker,
                checkpoint.tokenizer,
                rows,
                args.output_dir,
                eval_fingerprint(args, checkpoint, run.summary.data["data_files"]),
                style=checkpoint.metadata.prompt_style,
                num_beams=args.num_beams,
                max_length=args.max_length,
                ks=args.topk,
                shard_size=args.shard_size,
                source=data.paths.splits[split],
                process_index=run.state.process_index,
                num_processes=run.state.num_processes,
                wait_for_everyone=run.state.wait_for_everyone,
            )
        if not run.is_main_process:
            return
        metrics, predictions = result
        metrics_path, pred_path = write_eval_outputs(args.output_dir, metrics, predictions)
        clear_shards(args.output_dir)
        wandb = {}
        if script_args.tracking:
            config = config_dict(script_args, args, model_args)
            wandb = log_eval_metrics(script_args, args.output_dir, model_args.model_name_or_path, metrics, config)
        run.finish(metrics, outputs=[metrics_path, pred_path], wandb=wandb)
        ks = [k for k in args.topk if k <= args.num_beams]
        logger.info("%s", "  ".join(f"HR@{k}={metrics[f'HR@{k}']:.4f}" for k in ks))
        logger.info("%s", "  ".join(f"NDCG@{k}={metrics[f'NDCG@{k}']:.4f}" for k in ks))
        logger.info(
            "invalid=%d  samples=%d  beams=%d", metrics["invalid"], metrics["num_samples"], metrics["num_beams"]
        )
        print(metrics_path)


if __name__ == "__main__":
    run_main(main)
