"""GRPO from an SFT checkpoint: constrained beam-search rollouts, rule + NDCG rewards, KL to a synced reference.

    accelerate launch recipes/grpo.py --config recipes/demo/grpo.yaml
    accelerate launch recipes/grpo.py --config recipes/industrial/tiny-cpu/grpo.yaml --model_name_or_path <sft dir>

YAML gives defaults, CLI flags override; unknown keys fail at launch. Add --debug for tracebacks on input errors.
"""

import logging

from transformers import EarlyStoppingCallback, set_seed
from trl import TrlParser

from sidrec.configs import SidrecGRPOConfig, SidrecModelConfig, SidrecScriptArguments
from sidrec.data import build_tasks, fit_to_length
from sidrec.data.holdout import grpo_rows
from sidrec.data.prompts import to_rl_dataset
from sidrec.errors import UserError
from sidrec.evaluation import ranking_eval_for
from sidrec.models.dropout import disable_attention_dropout
from sidrec.models.loading import default_dtype, load_trained
from sidrec.rewards import get_reward_funcs
from sidrec.run.launch import LaunchReport
from sidrec.run.recipe import parse_config, run_main, run_recipe
from sidrec.run.summary import best_model_record
from sidrec.trainers import SidGRPOTrainer

logger = logging.getLogger("sidrec.grpo")


def model_rewards(args, catalog, histories) -> dict:
    """The rewards that score with a trained model, built from their config fields (`MODEL_REWARDS`)."""
    if not args.cf_model:
        return {}
    from sidrec.models.seqrec import CFReward

    return {"cf": CFReward(args.cf_model, histories, {item.sid: item_id for item_id, item in catalog.items.items()})}


def main():
    script_args, args, model_args = parse_config(
        TrlParser((SidrecScriptArguments, SidrecGRPOConfig, SidrecModelConfig))
    )
    if not model_args.model_name_or_path:
        raise UserError(
            "set model_name_or_path to the SFT checkpoint to start from (TRL reloads the reference from it)"
        )
    with run_recipe("grpo", script_args, args, model_args) as run:
        # Data, checkpoint and layout checks before the model is loaded.
        data = run.load_data(("train", "valid") if args.ranking_eval_rows != 0 else ("train",))
        args.check_rollout_layout(data.catalog)
        checkpoint = load_trained(model_args, data.catalog, args.trust_remote_code)  # tokenizer, prompt style, window
        tokenizer, style = checkpoint.tokenizer, checkpoint.metadata.prompt_style  # prompt as the SFT did
        data.splits["train"] = grpo_rows(
            data.splits["train"], args.rl_rows, checkpoint.metadata.rl_holdout, script_args.max_train_rows,
            data.paths.splits["train"],
        )  # fmt: skip
        # The cf reward's recommender reads each GRPO row's whole history (the LLM's prompt may show fewer items).
        cf_histories = [r.history_item_ids for r in data.splits["train"]]
        data.splits = {split: checkpoint.cut_history(rows) for split, rows in data.splits.items()}
        run.summary.data["history_items"] = checkpoint.metadata.history_items
        examples = build_tasks(
            args.rl_tasks, data.splits["train"], data.catalog, data.paths.splits["train"],
            script_args.max_description_words, style,
        )  # fmt: skip
        train_ds = to_rl_dataset(fit_to_length(examples, tokenizer, args.max_prompt_tokens))
        # Each evaluation ranks seeded valid users (Trainer wants them as an eval_dataset too).
        ranking = ranking_eval_for(args, data, tokenizer, style, args.max_prompt_tokens)
        # Optionally the target's rank on GRPO's own prompt rows too (eval_train_*), never used for selection.
        train_ranking = ranking_eval_for(args, data, tokenizer, style, args.max_prompt_tokens, "train")
        logger.info(
            "RL prompts: %d (tasks %s, %s style), rewards %s", len(train_ds), args.rl_tasks, style, args.reward_funcs
        )

        set_seed(args.seed)
        with run.timed("build_model"):
            # A full SFT checkpoint or an SFT adapter (merged here).
            model = checkpoint.load_model(default_dtype(args.bf16))
            if args.disable_dropout:
                disable_attention_dropout(model)
            patience = args.early_stopping_patience
            trainer = SidGRPOTrainer(
                model=model,
                reward_funcs=get_reward_funcs(args.reward_funcs, model_rewards(args, data.catalog, cf_histories)),
                args=args,
                train_dataset=train_ds,
                eval_dataset=ranking.as_dataset() if ranking else None,
                processing_class=tokenizer,
                sid_trie=data.catalog.vocab.compile(tokenizer),
                ranking_eval=ranking,
                extra_rankings={"train": train_ranking} if train_ranking else None,
                callbacks=[EarlyStoppingCallback(patience)] if patience else None,
                beam_search=args.beam_search,
                guide_target=args.guide_target,
                rollout_batch_size=args.rollout_batch_size,
            )
            trainer.add_callback(LaunchReport(trainer, run.summary))  # the engine that actually runs, ref model sync

        # Train, keep the best (with a ranking eval), save.
        with run.timed("train"):
            result = trainer.train(resume_from_checkpoint=run.resume)
        trainer.save_model(args.output_dir)
        trainer.save_state()  # trainer_state.json (log history) beside the model, for the results plots

        rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
        metrics = {
            **result.metrics,
            **(best_model_record(trainer) if ranking is not None else {}),
            "num_prompts": len(train_ds),
            "rollouts": trainer.rollout_stats,  # engine, completions drawn on this process, invalid (always 0)
            "first_logged_reward": rewards[0] if rewards else None,
            "last_logged_reward": rewards[-1] if rewards else None,
        }
        run.finish(metrics, outputs=[args.output_dir])
        if run.is_main_process:
            print(f"model saved to {args.output_dir}")


if __name__ == "__main__":
    run_main(main)
