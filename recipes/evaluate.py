"""Offline evaluation: SID-constrained beam search over a split, HR@K / NDCG@K and the per-level analysis.

    accelerate launch recipes/evaluate.py --config recipes/demo/eval.yaml
    accelerate launch recipes/evaluate.py --config recipes/industrial/tiny-cpu/eval.yaml --model_name_or_path <ckpt>

Writes predictions.jsonl, metrics.json and run_summary.json to output_dir; the last line printed is metrics.json's path.
"""

import logging

import torch
from transformers import AutoModelForCausalLM, set_seed
from trl import ModelConfig, TrlParser

from sidrec.configs import EvalConfig, SidrecScriptArguments
from sidrec.data import load_dataset
from sidrec.evaluation import evaluate_rows, write_eval_outputs
from sidrec.modeling import check_sid_tokens, load_tokenizer
from sidrec.utils import RunSummary, UserError, check_output_dir, parse_config, run_main

logger = logging.getLogger("sidrec.evaluate")


def main():
    script_args, eval_args, model_args = parse_config(TrlParser((SidrecScriptArguments, EvalConfig, ModelConfig)))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not model_args.model_name_or_path:
        raise UserError("set model_name_or_path to the checkpoint to evaluate (e.g. the SFT output_dir)")
    check_output_dir(eval_args.output_dir, eval_args.overwrite_output_dir)
    summary = RunSummary(eval_args.output_dir, "eval", (script_args, eval_args, model_args), eval_args.seed)
    try:
        # Data and checkpoint checks before any decoding.
        with summary.timed("load_data"):
            split = eval_args.split
            data = load_dataset(script_args.data_dir, script_args.category, (split,), {split: eval_args.max_samples})
            summary.add_data_files(data.paths.all_files())
        set_seed(eval_args.seed)
        with summary.timed("load_model"):
            tokenizer = load_tokenizer(model_args.model_name_or_path)
            check_sid_tokens(tokenizer, data.catalog.vocab, model_args.model_name_or_path)
            device = "cuda" if torch.cuda.is_available() else "cpu"
            dtype = getattr(torch, model_args.dtype) if model_args.dtype not in (None, "auto") else None
            model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, dtype=dtype).to(device)

        # Rank every row's next item, score, write.
        with summary.timed("rank"):
            metrics, predictions = evaluate_rows(
                model,
                tokenizer,
                data.splits[split],
                data.catalog,
                num_beams=eval_args.num_beams,
                batch_size=eval_args.batch_size,
                max_length=eval_args.max_length,
                ks=eval_args.topk,
                source=data.paths.splits[split],
                decoder=eval_args.decoder,
            )
        metrics_path, pred_path = write_eval_outputs(eval_args.output_dir, metrics, predictions)
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
