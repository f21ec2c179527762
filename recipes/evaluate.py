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

from sidrec.configs import EvalConfig, SidrecModelConfig, SidrecScriptArguments
from sidrec.data import last_history
from sidrec.evaluation import clear_shards, run_sharded_eval, sample_rows, write_eval_outputs
from sidrec.launch import describe_process_state
from sidrec.modeling import (
    check_sid_tokens,
    checkpoint_history_items,
    checkpoint_prompt_style,
    default_dtype,
    get_model,
    get_tokenizer,
    history_items_of,
    is_adapter_dir,
    prompt_style_of,
)
from sidrec.recipe import run_recipe
from sidrec.tracking import log_eval_metrics
from sidrec.utils import UserError, config_dict, parse_config, run_main

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
        first_n = args.max_samples if args.sample_seed is None else None
        data = run.load_data((split,), {split: first_n})
        rows = sample_rows(data.splits[split], args.max_samples, args.sample_seed or 0)
        if args.num_beams > len(data.catalog.vocab):
            raise UserError(
                f"num_beams={args.num_beams} is larger than the catalog's {len(data.catalog.vocab)} distinct "
                "SIDs; a ranked list cannot be that long"
            )
        set_seed(args.seed)
        with run.timed("load_model"):
            tokenizer = get_tokenizer(model_args, args.trust_remote_code)
            check_sid_tokens(tokenizer, data.catalog.vocab, model_args.model_name_or_path)
            model, ranker = None, None
            if args.backend == "vllm":
                ranker, engine = _vllm_ranker(args, model_args, tokenizer, data.catalog, run.state)
                style = checkpoint_prompt_style(model_args.model_name_or_path)
                history = checkpoint_history_items(model_args.model_name_or_path)
                run.summary.data["launch"] = {**describe_process_state(run.state), **engine}
            else:
                # A full checkpoint or an SFT adapter (merged); bfloat16 on CUDA, float32 on CPU unless dtype is set.
                model = get_model(model_args, default_dtype(None, run.state.device), args.trust_remote_code)
                model = model.to(run.state.device)
                style = prompt_style_of(model)
                history = history_items_of(model)
                run.summary.data["launch"] = describe_process_state(run.state, model)
            run.summary.data["prompt_style"] = style  # as the checkpoint was trained
            run.summary.data["history_items"] = history  # prompts show the history window SFT showed
            rows = last_history(rows, history)

        # Rank every row's next item shard by shard (shards split across processes), merge, score, write.
        with run.timed("rank"):
            settings = (
                "split", "max_samples", "sample_seed", "num_beams", "batch_size", "max_length", "decoder", "backend",
            )  # fmt: skip
            fingerprint = {
                "model": model_args.model_name_or_path,
                "data": run.summary.data["data_files"],
                "history_items": history,
                **{k: getattr(args, k) for k in settings},
            }
            result = run_sharded_eval(
                model,
                tokenizer,
                rows,
                data.catalog,
                args.output_dir,
                fingerprint,
                num_beams=args.num_beams,
                batch_size=args.batch_size,
                max_length=args.max_length,
                ks=args.topk,
                shard_size=args.shard_size,
                source=data.paths.splits[split],
                decoder=args.decoder,
                process_index=run.state.process_index,
                num_processes=run.state.num_processes,
                wait_for_everyone=run.state.wait_for_everyone,
                ranker=ranker,
                style=style,
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


def _vllm_ranker(args, model_args, tokenizer, catalog, state):
    """The vLLM engine and `VllmRanker` for ``backend: vllm``; returns ``(rank(prompts), engine description)``."""
    if state.num_processes > 1:
        raise UserError(
            "backend vllm runs in one process (the engine batches the beams itself); launch without "
            f"--num_processes, got {state.num_processes}"
        )
    if is_adapter_dir(model_args.model_name_or_path):
        raise UserError("backend vllm takes a full checkpoint; merge the adapter first or use backend hf")
    try:
        import vllm

        from sidrec.vllm_backend import VllmRanker, make_llm
    except ImportError as e:
        raise UserError(f"backend vllm needs vLLM (`make install-vllm`, then use .venv-vllm): {e}") from e
    dtype = model_args.dtype if model_args.dtype not in (None, "auto") else str(default_dtype(None, state.device))
    dtype = dtype.removeprefix("torch.")
    llm = make_llm(
        model_args.model_name_or_path,
        dtype=dtype,
        seed=args.seed,
        enforce_eager=args.vllm_enforce_eager,
        trust_remote_code=args.trust_remote_code,
    )
    ranker = VllmRanker(llm, tokenizer, catalog.vocab.compile(tokenizer))
    engine = {"engine": f"vllm {vllm.__version__} {type(llm.llm_engine).__name__}", "vllm_dtype": dtype}

    def rank(prompts):
        return ranker.rank(prompts, args.num_beams, args.batch_size, show_progress=False)

    return rank, engine


if __name__ == "__main__":
    run_main(main)
