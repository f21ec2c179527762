"""Benchmark one SFT training step on CPU: TRL's fused LM head over every position vs over the labelled ones only.

    python scripts/bench_sft_step.py                                   # the tiny-cpu recipe, 2 threads
    python scripts/bench_sft_step.py --config recipes/demo/sft.yaml --data_dir data/synthetic --batches 10

On CPU, TRL 1.16 scores every position of the batch in its fused LM head (prompt tokens included, then masked);
sidrec's trainers make it score only the labelled (completion) positions, as TRL already does where Triton runs
(`sidrec.patches.score_labelled_positions_on_cpu`). Both modes run forward + backward on the same batches of the
recipe's own training data, interleaved, ``--repeats`` times; the median seconds per step and their ratio are
printed, with the largest loss difference between the modes (the arithmetic per scored row is the same, so ~0). The
last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import torch
import trl.trainer.utils as trl_trainer_utils
from transformers import set_seed
from trl import ModelConfig, TrlParser

from sidrec.configs import SidrecScriptArguments, SidrecSFTConfig
from sidrec.data import build_tasks, fit_to_length, load_rec_dataset
from sidrec.data.prompts import to_hf_dataset
from sidrec.models.loading import prepare_sft_model
from sidrec.patches import apply_patches
from sidrec.run.recipe import parse_config
from sidrec.trainers import SidSFTTrainer


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="recipes/industrial/tiny-cpu/sft.yaml")
    p.add_argument("--data_dir", help="override the config's data_dir")
    p.add_argument("--category", help="override the config's category")
    p.add_argument("--batches", type=int, default=20, help="training batches per timed pass")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per mode (median reported)")
    p.add_argument("--threads", type=int, default=2, help="torch threads, pinned")
    opts = p.parse_args(argv)
    torch.set_num_threads(opts.threads)

    with tempfile.TemporaryDirectory() as tmp:
        parser = TrlParser((SidrecScriptArguments, SidrecSFTConfig, ModelConfig))
        flags = ["--output_dir", tmp, "--report_to", "none", "--eval_strategy", "no", "--early_stopping_patience"]
        flags += ["null", "--load_best_model_at_end", "false"]
        if opts.data_dir:
            flags += ["--data_dir", opts.data_dir]
        if opts.category:
            flags += ["--category", opts.category]
        script_args, args, model_args = parse_config(parser, ["--config", opts.config, *flags])
        data = load_rec_dataset(script_args.data_dir, script_args.category)
        examples = build_tasks(
            args.sft_tasks, data.splits["train"], data.catalog, opts.config, script_args.max_description_words,
            args.prompt_style,
        )  # fmt: skip
        set_seed(args.seed)
        model, tokenizer = prepare_sft_model(args, model_args, data.catalog, examples)
        train_ds = to_hf_dataset(fit_to_length(examples, tokenizer, args.max_length))
        apply_patches()  # as run_recipe does for every recipe
        trainer = SidSFTTrainer(model=model, args=args, train_dataset=train_ds, processing_class=tokenizer)
        loader = iter(trainer.get_train_dataloader())
        batches = [next(loader) for _ in range(opts.batches)]

    compact = trl_trainer_utils._use_triton  # as every recipe runs (sidrec.patches.apply_patches)
    assert getattr(compact, "sidrec_compact_cpu", False), "apply_patches did not install the labelled-positions mode"

    def every_position(device: torch.device) -> bool:
        return False  # TRL's own CPU behaviour

    modes = {"every_position": every_position, "labelled_only": compact}
    model.train()
    times = {m: [] for m in modes}
    losses = {m: [] for m in modes}

    def one_pass(mode: str) -> float:
        trl_trainer_utils._use_triton = modes[mode]
        start = time.perf_counter()
        out = []
        for batch in batches:
            model.zero_grad(set_to_none=True)
            loss = trainer.compute_loss(model, dict(batch))
            loss.backward()
            out.append(loss.item())
        elapsed = time.perf_counter() - start
        losses[mode] = out
        return elapsed / len(batches)

    try:
        for mode in modes:  # warm-up, untimed
            one_pass(mode)
        for _ in range(opts.repeats):
            for mode in modes:  # interleaved
                times[mode].append(one_pass(mode))
    finally:
        trl_trainer_utils._use_triton = compact  # as apply_patches set it

    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    labelled = sum(int((b["labels"] != -100).sum()) for b in batches)
    result = {
        "config": opts.config,
        "threads": opts.threads,
        "batches": opts.batches,
        "repeats": opts.repeats,
        "tokens": tokens,
        "labelled_tokens": labelled,
        **{f"{m}_s_per_step": statistics.median(t) for m, t in times.items()},
        **{f"{m}_min_max": [min(t), max(t)] for m, t in times.items()},
        "ratio_every_over_labelled": statistics.median(times["every_position"])
        / statistics.median(times["labelled_only"]),
        "max_loss_diff": max(
            abs(a - b) for a, b in zip(losses["every_position"], losses["labelled_only"], strict=True)
        ),
    }
    for m in modes:
        print(f"{m:>15}: {result[f'{m}_s_per_step']:.4f} s/step (min {min(times[m]):.4f}, max {max(times[m]):.4f})")
    print(
        f"every position / labelled only: {result['ratio_every_over_labelled']:.2f}x; labelled tokens "
        f"{labelled} of {tokens}; largest loss difference {result['max_loss_diff']:.2e}"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
