"""Supervised fine-tuning: history SIDs -> next item's SID, co-trained with item-alignment tasks.

    accelerate launch recipes/sft.py --config recipes/demo/sft.yaml
    accelerate launch recipes/sft.py --config recipes/industrial/tiny-cpu/sft.yaml --num_train_epochs 2

YAML gives defaults, CLI flags override; unknown keys fail at launch. Add --debug for tracebacks on input errors.
"""

import logging

from transformers import EarlyStoppingCallback, set_seed
from trl import TrlParser

from sidrec.configs import SidrecModelConfig, SidrecScriptArguments, SidrecSFTConfig
from sidrec.data import build_tasks, fit_to_length, last_history
from sidrec.data.holdout import sft_rows
from sidrec.data.prompts import to_hf_dataset
from sidrec.data.tasks import build_sid_seq
from sidrec.errors import UserError
from sidrec.evaluation import ranking_eval_for
from sidrec.models.loading import is_adapter_dir, lora_config_for_sids, prepare_sft_model, save_adapter_config
from sidrec.run.launch import LaunchReport
from sidrec.run.recipe import parse_config, run_main, run_recipe
from sidrec.run.summary import best_model_record
from sidrec.trainers import SidSFTTrainer

logger = logging.getLogger("sidrec.sft")


def main():
    script_args, args, model_args = parse_config(
        TrlParser((SidrecScriptArguments, SidrecSFTConfig, SidrecModelConfig))
    )
    with run_recipe("sft", script_args, args, model_args) as run:
        if args.average_checkpoints and model_args.use_peft:
            raise UserError("average_checkpoints averages full-model checkpoints; it cannot be used with use_peft")
        # Data first: every input error surfaces before a model is built.
        data = run.load_data(("train", "valid"))
        train_src, valid_src = data.paths.splits["train"], data.paths.splits["valid"]
        # rl_holdout: each user's latest train row is left to GRPO (sidrec.data.holdout).
        data.splits["train"], held_out = sft_rows(
            data.splits["train"], args.rl_holdout, script_args.max_train_rows, train_src
        )
        run.summary.data["rl_holdout_rows"] = held_out
        # Every prompt (the tasks, the valid loss, the ranking) shows the history window that GRPO and eval will.
        data.splits = {split: last_history(rows, args.history_items) for split, rows in data.splits.items()}
        examples = build_tasks(
            args.sft_tasks, data.splits["train"], data.catalog, train_src, script_args.max_description_words,
            args.prompt_style,
        )  # fmt: skip
        eval_examples = build_sid_seq(data.splits["valid"], valid_src, args.prompt_style)

        set_seed(args.seed)
        with run.timed("build_model"):
            model, tokenizer = prepare_sft_model(args, model_args, data.catalog, examples)
            train_ds = to_hf_dataset(fit_to_length(examples, tokenizer, args.max_length))
            eval_ds = to_hf_dataset(fit_to_length(eval_examples, tokenizer, args.max_length))
            ranking = ranking_eval_for(args, data, tokenizer, args.prompt_style, args.max_length)
        logger.info(
            "train examples: %d (tasks %s), valid examples: %d, ranked at each eval: %s",
            len(train_ds), args.sft_tasks, len(eval_ds), len(ranking.rows) if ranking else 0,
        )  # fmt: skip

        patience = args.early_stopping_patience
        trainer = SidSFTTrainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=tokenizer,
            peft_config=lora_config_for_sids(model_args, model),
            callbacks=[EarlyStoppingCallback(early_stopping_patience=patience)] if patience else None,
            ranking_eval=ranking,
        )
        trainer.add_callback(LaunchReport(trainer, run.summary))  # records the engine that actually runs

        # Train (resume_from_checkpoint: true picks the last checkpoint in output_dir), keep the best, save.
        with run.timed("train"):
            result = trainer.train(resume_from_checkpoint=run.resume)
        averaged = None
        if args.average_checkpoints:
            with run.timed("average_checkpoints"):
                averaged = trainer.average_from_best()
            if averaged is None:
                logger.info("average_checkpoints: no checkpoint after the best one; the best checkpoint is saved")
            else:
                logger.info(
                    "average of %s: %s %.4f vs the best checkpoint's %.4f: %s", averaged["checkpoints"],
                    args.metric_for_best_model, averaged["metrics"][args.metric_for_best_model],
                    averaged["best_metric"], "the average is saved" if averaged["kept"] else "the best checkpoint is saved",
                )  # fmt: skip
        trainer.save_model(args.output_dir)
        if run.is_main_process and is_adapter_dir(args.output_dir):
            save_adapter_config(trainer.model, args.output_dir)  # resized vocab + prompt style, for loading
        trainer.save_state()  # trainer_state.json (log history) beside the model, for the results plots

        metrics = {
            **result.metrics,
            **best_model_record(trainer),
            "checkpoint_average": averaged,
            "epochs_run": trainer.state.epoch,
            "num_train_examples": len(train_ds),
        }
        run.finish(metrics, outputs=[args.output_dir])
        if run.is_main_process:
            print(f"model saved to {args.output_dir}")


if __name__ == "__main__":
    run_main(main)
