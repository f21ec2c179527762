"""GRPO from an SFT checkpoint: constrained beam-search rollouts, rule + NDCG rewards, KL to a synced reference.

    accelerate launch recipes/grpo.py --config recipes/demo/grpo.yaml
    accelerate launch recipes/grpo.py --config recipes/industrial/tiny-cpu/grpo.yaml --model_name_or_path <sft dir>

YAML gives defaults, CLI flags override; unknown keys fail at launch. Add --debug for tracebacks on input errors.
"""

import logging

import torch
from datasets import Dataset
from transformers import EarlyStoppingCallback, set_seed
from trl import ModelConfig, TrlParser

from sidrec.configs import SidrecGRPOConfig, SidrecScriptArguments
from sidrec.data import build_tasks, fit_to_length, load_dataset
from sidrec.evaluation import ranking_eval_for
from sidrec.launch import LaunchReport, check_launch
from sidrec.modeling import (
    check_sid_tokens,
    checkpoint_prompt_style,
    disable_attention_dropout,
    get_model,
    get_tokenizer,
)
from sidrec.rewards import get_reward_funcs
from sidrec.tracking import active_run_info, setup_tracking
from sidrec.trainers import SidGRPOTrainer, best_model_record, check_group_layout
from sidrec.utils import RunSummary, UserError, check_output_dir, parse_config, process_state, resume_arg, run_main

logger = logging.getLogger("sidrec.grpo")


def main():
    script_args, training_args, model_args = parse_config(
        TrlParser((SidrecScriptArguments, SidrecGRPOConfig, ModelConfig))
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_launch(training_args.use_cpu, training_args.bf16)
    state = process_state(cpu=training_args.use_cpu)
    training_args.check_global_batch(state.num_processes)
    if not model_args.model_name_or_path:
        raise UserError(
            "set model_name_or_path to the SFT checkpoint to start from (TRL reloads the reference from it)"
        )
    resume = resume_arg(training_args.resume_from_checkpoint)
    check_output_dir(training_args.output_dir, training_args.overwrite_output_dir, resume=bool(resume))
    setup_tracking(script_args, training_args.output_dir, training_args)
    configs = (script_args, training_args, model_args)
    summary = RunSummary(training_args.output_dir, "grpo", configs, training_args.seed, state)
    try:
        # Data, checkpoint and layout checks before the model is loaded.
        with summary.timed("load_data"):
            max_rows = {"train": script_args.max_train_rows, "valid": script_args.max_valid_rows}
            splits = ("train", "valid") if training_args.ranking_eval_rows != 0 else ("train",)
            data = load_dataset(script_args.data_dir, script_args.category, splits, max_rows)
            summary.add_data_files(data.paths.all_files())
            catalog = data.catalog
            if training_args.max_completion_length != catalog.sid_length + 1:
                raise UserError(
                    f"max_completion_length must be the SID length + EOS = {catalog.sid_length + 1}, "
                    f"got {training_args.max_completion_length}"
                )
            check_group_layout(training_args, len(catalog.vocab))
            tokenizer = get_tokenizer(model_args, training_args.trust_remote_code)
            check_sid_tokens(tokenizer, catalog.vocab, model_args.model_name_or_path)
            style = checkpoint_prompt_style(model_args.model_name_or_path)  # prompt as the SFT did
            examples = build_tasks(
                training_args.rl_tasks,
                data.splits["train"],
                catalog,
                data.paths.splits["train"],
                script_args.max_description_words,
                style,
            )
            examples = [ex for ex in examples if ex.completion == ex.target_sid]  # SID answers only
            records = fit_to_length(examples, tokenizer, training_args.max_prompt_tokens)
            train_ds = Dataset.from_dict(
                {"prompt": [r["prompt"] for r in records], "target_sid": [r["target_sid"] for r in records]}
            )
            # Each evaluation ranks seeded valid users (Trainer wants them as an eval_dataset too).
            ranking = ranking_eval_for(training_args, data, tokenizer, style, training_args.max_prompt_tokens)
        logger.info(
            "RL prompts: %d (tasks %s, %s style), rewards %s",
            len(train_ds),
            training_args.rl_tasks,
            style,
            training_args.reward_funcs,
        )

        set_seed(training_args.seed)
        with summary.timed("build_model"):
            # A full SFT checkpoint or an SFT adapter (merged here); dtype follows bf16 unless set.
            dtype = torch.bfloat16 if training_args.bf16 else torch.float32
            model = get_model(model_args, dtype, training_args.trust_remote_code)
            if training_args.disable_dropout:
                disable_attention_dropout(model)
            trainer = SidGRPOTrainer(
                model=model,
                reward_funcs=get_reward_funcs(training_args.reward_funcs),
                args=training_args,
                train_dataset=train_ds,
                eval_dataset=ranking.as_dataset() if ranking else None,
                processing_class=tokenizer,
                sid_trie=catalog.vocab.compile(tokenizer),
                ranking_eval=ranking,
                callbacks=[EarlyStoppingCallback(patience)]
                if (patience := training_args.early_stopping_patience)
                else None,
                beam_search=training_args.beam_search,
                rollout_batch_size=training_args.rollout_batch_size,
            )
            trainer.add_callback(LaunchReport(trainer, summary))  # the engine that actually runs, ref model sync

        # Train, save.
        with summary.timed("train"):
            result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model(training_args.output_dir)
        trainer.save_state()  # trainer_state.json (log history) beside the model, for the results plots

        if state.is_main_process:
            history = [h for h in trainer.state.log_history if "reward" in h]
            summary.data["metrics"] = {
                **result.metrics,
                **(best_model_record(trainer) if ranking is not None else {}),
                "num_prompts": len(train_ds),
                "first_logged_reward": history[0]["reward"] if history else None,
                "last_logged_reward": history[-1]["reward"] if history else None,
            }
            summary.data["wandb"] = active_run_info() if script_args.tracking else {}
            summary.data["outputs"] = [training_args.output_dir]
            summary.write("ok")
            print(f"model saved to {training_args.output_dir}")
    except BaseException as e:
        summary.write("failed", error=f"{type(e).__name__}: {e}")
        raise


if __name__ == "__main__":
    run_main(main)
