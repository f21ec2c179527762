"""Supervised fine-tuning: history SIDs -> next item's SID, co-trained with item-alignment tasks.

    accelerate launch recipes/sft.py --config recipes/demo/sft.yaml
    accelerate launch recipes/sft.py --config recipes/industrial/tiny-cpu/sft.yaml --num_train_epochs 2

YAML gives defaults, CLI flags override; unknown keys fail at launch. Add --debug for tracebacks on input errors.
"""

import logging

from transformers import EarlyStoppingCallback, set_seed
from trl import ModelConfig, TrlParser

from sidrec.configs import SidrecScriptArguments, SidrecSFTConfig
from sidrec.data import build_tasks, fit_to_length, load_dataset
from sidrec.data.prompts import build_sid_seq, to_hf_dataset
from sidrec.evaluation import ranking_eval_for
from sidrec.launch import LaunchReport, check_launch
from sidrec.modeling import is_adapter_dir, lora_config_for_sids, prepare_sft_model, save_adapter_config
from sidrec.tracking import active_run_info, setup_tracking
from sidrec.trainers import SidSFTTrainer, best_model_record
from sidrec.utils import RunSummary, check_output_dir, parse_config, process_state, resume_arg, run_main

logger = logging.getLogger("sidrec.sft")


def main():
    script_args, training_args, model_args = parse_config(
        TrlParser((SidrecScriptArguments, SidrecSFTConfig, ModelConfig))
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_launch(training_args.use_cpu, training_args.bf16)
    state = process_state(cpu=training_args.use_cpu)
    training_args.check_global_batch(state.num_processes)
    resume = resume_arg(training_args.resume_from_checkpoint)
    check_output_dir(training_args.output_dir, training_args.overwrite_output_dir, resume=bool(resume))
    setup_tracking(script_args, training_args.output_dir, training_args)
    configs = (script_args, training_args, model_args)
    summary = RunSummary(training_args.output_dir, "sft", configs, training_args.seed, state)
    try:
        # Data first: every input error surfaces before a model is built.
        with summary.timed("load_data"):
            max_rows = {"train": script_args.max_train_rows, "valid": script_args.max_valid_rows}
            data = load_dataset(script_args.data_dir, script_args.category, ("train", "valid"), max_rows)
            summary.add_data_files(data.paths.all_files())
            examples = build_tasks(
                training_args.sft_tasks,
                data.splits["train"],
                data.catalog,
                data.paths.splits["train"],
                script_args.max_description_words,
                training_args.prompt_style,
            )
            eval_examples = build_sid_seq(data.splits["valid"], data.paths.splits["valid"], training_args.prompt_style)

        set_seed(training_args.seed)
        with summary.timed("build_model"):
            model, tokenizer = prepare_sft_model(training_args, model_args, data.catalog, examples)
            train_ds = to_hf_dataset(fit_to_length(examples, tokenizer, training_args.max_length))
            eval_ds = to_hf_dataset(fit_to_length(eval_examples, tokenizer, training_args.max_length))
            ranking = ranking_eval_for(
                training_args, data, tokenizer, training_args.prompt_style, training_args.max_length
            )
        logger.info(
            "train examples: %d (tasks %s), valid examples: %d, ranked at each eval: %s",
            len(train_ds),
            training_args.sft_tasks,
            len(eval_ds),
            len(ranking.rows) if ranking else 0,
        )

        patience = training_args.early_stopping_patience
        trainer = SidSFTTrainer(
            model=model,
            args=training_args,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=tokenizer,
            peft_config=lora_config_for_sids(model_args, model),
            callbacks=[EarlyStoppingCallback(early_stopping_patience=patience)] if patience else None,
            ranking_eval=ranking,
        )
        trainer.add_callback(LaunchReport(trainer, summary))  # records the engine that actually runs

        # Train (resume_from_checkpoint: true picks the last checkpoint in output_dir), keep the best, save.
        with summary.timed("train"):
            result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model(training_args.output_dir)
        if state.is_main_process and is_adapter_dir(training_args.output_dir):
            save_adapter_config(trainer.model, training_args.output_dir)  # resized vocab + prompt style, for loading
        trainer.save_state()  # trainer_state.json (log history) beside the model, for the results plots

        if state.is_main_process:
            summary.data["metrics"] = {
                **result.metrics,
                **best_model_record(trainer),
                "epochs_run": trainer.state.epoch,
                "num_train_examples": len(train_ds),
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
