"""Recipes: every YAML parses, reference values are pinned, README paths exist, and the recipes run end to end."""

import dataclasses
import glob
import json
import os
import re

import pytest
import torch
import yaml
from trl import TrlParser

from sidrec.configs import EvalConfig, SidrecGRPOConfig, SidrecModelConfig, SidrecScriptArguments, SidrecSFTConfig
from sidrec.data import load_rec_dataset
from sidrec.errors import UserError
from sidrec.evaluation import sample_rows
from sidrec.models.loading import default_dtype, model_kwargs
from sidrec.run.recipe import parse_config

from .conftest import REPO
from .helpers import TINY, quick_sft, recipe

PARSERS = {
    "sft.yaml": (SidrecScriptArguments, SidrecSFTConfig, SidrecModelConfig),
    "eval.yaml": (SidrecScriptArguments, EvalConfig, SidrecModelConfig),
    "eval_grpo.yaml": (SidrecScriptArguments, EvalConfig, SidrecModelConfig),
    "grpo.yaml": (SidrecScriptArguments, SidrecGRPOConfig, SidrecModelConfig),
}
YAMLS = sorted(glob.glob(os.path.join(REPO, "recipes", "**", "*.yaml"), recursive=True))


def parse(path, *extra):
    return parse_config(TrlParser(PARSERS[os.path.basename(path)]), ["--config", path, *extra])


@pytest.mark.parametrize("path", YAMLS, ids=[os.path.relpath(p, REPO) for p in YAMLS])
def test_every_recipe_yaml_parses(path):
    assert os.path.basename(path) in PARSERS, f"no parser registered for {path}"
    # bf16 recipes target GPUs; on this CPU box parse them with bf16 switched off
    raw = yaml.safe_load(open(path))
    parsed = parse(path, *(["--bf16", "false"] if raw.get("bf16") else []))
    # every key of the YAML reaches a config with its value (none dropped, renamed or overridden by a default)
    for key, value in raw.items():
        if key in ("bf16", "config"):
            continue
        owners = [cfg for cfg in parsed if key in {f.name for f in dataclasses.fields(cfg)}]
        assert owners, f"{key} is in no config"
        got = getattr(owners[0], key)
        if key in ("lr_scheduler_type", "eval_strategy", "save_strategy", "train_sampling_strategy", "report_to"):
            got = got if isinstance(got, list) else str(getattr(got, "value", got))  # enums compare by value
        if key == "report_to" and value == "none":
            value = []
        assert got == value, f"{key}: YAML {value!r}, parsed {got!r}"


def test_dtype_left_unset_follows_the_recipe_and_the_device():
    """TRL 1.16's ModelConfig defaults dtype to float32, which made evaluation on CUDA load float32 (seen on an H200)."""
    path = os.path.join(REPO, "recipes/industrial/qwen2.5-1.5b/eval.yaml")
    _, _, model = parse(path)
    assert model.dtype == "auto"
    # evaluation: bfloat16 on CUDA, float32 on CPU; training follows bf16
    assert model_kwargs(model, default_dtype(None, "cuda"))["dtype"] is torch.bfloat16
    assert model_kwargs(model, default_dtype(None, "cpu"))["dtype"] is torch.float32
    _, _, sft_model = parse(os.path.join(REPO, "recipes/industrial/qwen2.5-1.5b/sft.yaml"), "--bf16", "false")
    assert model_kwargs(sft_model, default_dtype(True))["dtype"] is torch.bfloat16
    # an explicit dtype still wins
    _, _, forced = parse(path, "--dtype", "float32")
    assert model_kwargs(forced, default_dtype(None, "cuda"))["dtype"] is torch.float32


def parse_reference(name):
    """The reference recipe ``name`` as the 4xA40 setup runs it (bf16 in the YAML), with only ``use_cpu`` added so that
    bf16 parses on this CPU."""
    path = os.path.join(REPO, "recipes/industrial/qwen2.5-1.5b", name)
    assert yaml.safe_load(open(path))["bf16"] is True
    _, cfg, model = parse(path, "--use_cpu", "true")
    return cfg, model


def reference_processes():
    """Processes of the reference launch, read from the accelerate config the reference recipes name."""
    with open(os.path.join(REPO, "accelerate_configs", "zero2.yaml")) as f:
        return yaml.safe_load(f)["num_processes"]


def check_cosine_with_warmup(cfg, peak, steps=1000):
    """Over a ``steps``-step run, the schedule Trainer builds for ``cfg`` (`Trainer.create_scheduler`) rises linearly
    from 0 to ``peak`` over a short warmup of w steps, then falls as a half cosine to 0:
    ``lr(s) = peak * (1 + cos(pi * (s - w) / (steps - w))) / 2``."""
    import math

    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.learning_rate)
    scheduler = get_scheduler(
        cfg.lr_scheduler_type, optimizer, num_warmup_steps=cfg.get_warmup_steps(steps), num_training_steps=steps,
        scheduler_specific_kwargs=cfg.lr_scheduler_kwargs,
    )  # fmt: skip
    lrs = []
    for _ in range(steps + 1):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    w = lrs.index(max(lrs))
    assert 0 < w <= steps // 10, f"warmup of {w} steps"
    assert lrs[:w] == pytest.approx([peak * s / w for s in range(w)], rel=1e-9, abs=1e-15)
    cosine = [peak * (1 + math.cos(math.pi * (s - w) / (steps - w))) / 2 for s in range(w, steps + 1)]
    assert lrs[w:] == pytest.approx(cosine, rel=1e-9, abs=1e-15)
    assert lrs[w] == pytest.approx(peak) and lrs[-1] == pytest.approx(0, abs=1e-15)


def epochs_trained(cfg, scores):
    """Epochs a run of ``cfg`` trains when its evaluation after epoch e scores eval_ndcg@10 = ``scores[e - 1]``: the
    recipe's EarlyStoppingCallback, with Trainer's best-metric update after each evaluation, at most
    ``num_train_epochs``."""
    from transformers import EarlyStoppingCallback, TrainerControl, TrainerState

    assert cfg.eval_strategy == "epoch" and cfg.max_steps == -1  # one evaluation per epoch; epochs bound the run
    stopper = EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience)
    state, control = TrainerState(), TrainerControl()
    stopper.on_train_begin(cfg, state, control)
    for epoch, score in enumerate(scores, 1):
        metrics = {"eval_ndcg@10": score}
        stopper.on_evaluate(cfg, state, control, metrics=metrics)
        value = metrics[cfg.metric_for_best_model]
        best = state.best_metric
        if best is None or (value > best if cfg.greater_is_better else value < best):
            state.best_metric = value
        if control.should_training_stop or epoch == cfg.num_train_epochs:
            return epoch
    raise AssertionError("ran out of scores")


def test_reference_sft_recipe_values():
    # The reference: global batch 1024 = micro batch 16 x grad accum 16 x 4 GPUs; lr 3e-4, cosine with warmup; up to
    # 10 epochs, early stopping patience 3; cutoff 512.
    cfg, model = parse_reference("sft.yaml")
    procs = reference_processes()
    assert procs == 4 and cfg.per_device_train_batch_size == 16
    assert cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * procs == 1024
    cfg.check_global_batch(procs)  # the launch accepts the reference's process count ...
    with pytest.raises(UserError, match=r"x 8 \(processes\) = 2048, .* use gradient_accumulation_steps 8$"):
        cfg.check_global_batch(8)  # ... refuses 16 x 16 x 8 = 2048, and names 1024 / (16 x 8) = 8 ...
    with pytest.raises(UserError, match=r"x 3 \(processes\) = 768, but the recipe's global_batch_size is 1024$"):
        cfg.check_global_batch(3)  # ... and names none where 1024 / (16 x 3) is no whole number
    check_cosine_with_warmup(cfg, 3e-4)
    # checkpoints are chosen on the ranking: always better, all 10 epochs run; best after epoch 2 and no better at
    # epochs 3, 4 and 5 (a tie is no better), the run stops after epoch 5
    assert epochs_trained(cfg, [0.01 * e for e in range(1, 20)]) == 10
    assert epochs_trained(cfg, [0.10, 0.20, 0.20, 0.19, 0.15, 0.30]) == 5
    assert epochs_trained(cfg, [0.10, 0.20, 0.20, 0.21, 0.15, 0.15, 0.15, 0.30]) == 7
    assert cfg.max_length == 512
    assert model.model_name_or_path == "Qwen/Qwen2.5-1.5B-Instruct"


def test_reference_grpo_recipe_values():
    # The reference: per-device batch 64, grad accum 4 (on the 4 GPUs); 16 generations by beam search; lr 1e-5, cosine
    # with warmup; beta 1e-3, temperature 1.0; rewards rule + NDCG; a synced reference model; 2 epochs.
    from types import SimpleNamespace

    from sidrec.rewards import get_reward_funcs

    cfg, _ = parse_reference("grpo.yaml")
    procs = reference_processes()
    assert cfg.per_device_train_batch_size == 64 and cfg.gradient_accumulation_steps == 4
    # an optimizer step takes 64 x 4 x 4 = 1024 completions, i.e. 1024 / 16 = 64 prompts' groups
    assert cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * procs == 1024
    cfg.check_global_batch(procs)
    with pytest.raises(UserError, match=r"x 1 \(processes\) = 256, .* use gradient_accumulation_steps 16$"):
        cfg.check_global_batch(1)  # 64 x 4 x 1 = 256; 1024 / (64 x 1) = 16
    # G = 16 beams per prompt; each process generates once per optimizer step, 64 x 4 = 256 completions = 16 whole
    # groups, so no group is split; a catalog must hold 16 distinct SIDs, and a completion is 3 SID tokens + EOS
    assert cfg.num_generations == 16 and cfg.beam_search
    assert cfg.per_device_train_batch_size * cfg.steps_per_generation == 256
    cfg.check_rollout_layout(SimpleNamespace(sid_length=3, vocab=range(16)))
    with pytest.raises(UserError, match="larger than the catalog's 15 distinct SIDs"):
        cfg.check_rollout_layout(SimpleNamespace(sid_length=3, vocab=range(15)))
    with pytest.raises(UserError, match=r"SID length \+ EOS = 5, got 4"):
        cfg.check_rollout_layout(SimpleNamespace(sid_length=4, vocab=range(16)))
    check_cosine_with_warmup(cfg, 1e-5)
    assert cfg.beta == 1e-3 and cfg.temperature == 1.0
    assert [f.__name__ for f in get_reward_funcs(cfg.reward_funcs)] == ["rule", "ndcg_rule"]
    assert cfg.sync_ref_model
    assert cfg.num_train_epochs == 2 and cfg.max_steps == -1


def test_unknown_yaml_key_fails(tmp_path):
    bad = tmp_path / "sft.yaml"
    bad.write_text(open(os.path.join(REPO, "recipes/demo/sft.yaml")).read() + "\nlearnig_rate: 0.1\n")
    with pytest.raises(UserError, match="learnig_rate"):
        parse(str(bad))


def test_readme_paths_exist():
    readme = open(os.path.join(REPO, "README.md")).read()
    paths = set(re.findall(r"(?:recipes|accelerate_configs|scripts|docs)/[\w./-]+\.(?:py|yaml|sh|md)", readme))
    assert paths, "README names no recipe paths"
    missing = [p for p in paths if not os.path.exists(os.path.join(REPO, p))]
    assert missing == []


def test_sft_then_eval_recipes_end_to_end(small_data_dir, tmp_path):
    sft_dir, eval_dir, grpo_dir = str(tmp_path / "sft"), str(tmp_path / "eval"), str(tmp_path / "grpo")
    data = {"data_dir": small_data_dir}
    r = recipe(
        "sft",
        "recipes/demo/sft.yaml",
        *TINY,
        **data,
        output_dir=sft_dir,
        num_train_epochs=2,
        per_device_train_batch_size=16,
        prompt_style="compact",
        history_items=2,
        ranking_eval_rows=10,
        ranking_eval_seed=3,
        ranking_eval_beams=20,
        per_device_eval_batch_size=4,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    # the style and the history window travel with the checkpoint, so GRPO and eval prompt the model as SFT did
    config = json.load(open(os.path.join(sft_dir, "config.json")))
    assert config["sidrec_prompt_style"] == "compact" and config["sidrec_history_items"] == 2
    # (the ranked valid users have longer histories, so a stage that did not cut them would rank other prompts)
    valid = load_rec_dataset(small_data_dir, "Synthetic", ("valid",)).splits["valid"]
    assert sum(len(r.history_sids) > 2 for r in sample_rows(valid, 10, 3)) >= 5
    summary = json.load(open(os.path.join(sft_dir, "run_summary.json")))
    assert summary["status"] == "ok"
    # the recipe skeleton applied the TRL patch (sidrec.patches) and says so
    assert summary["patches"] == ["trl.trainer.utils._use_triton: score_labelled_positions_on_cpu"]
    # checkpoints were chosen on the ranking metric, logged at both epochs beside the loss
    assert summary["metrics"]["metric_for_best_model"] == "eval_ndcg@10"
    evals = summary["metrics"]["evaluations"]
    assert [e["epoch"] for e in evals] == [1.0, 2.0] and all(e["eval_loss"] > 0 for e in evals)
    best = max(evals, key=lambda e: e["eval_ndcg@10"])
    assert summary["metrics"]["best_metric"] == best["eval_ndcg@10"]
    assert "'eval_ndcg@10'" in r.stdout + r.stderr  # on the console too
    assert set(summary["versions"]) >= {"torch", "transformers", "trl", "accelerate", "sidrec"}
    assert all(len(h) == 64 for h in summary["data_files"].values())

    evaluate = {**data, "model_name_or_path": sft_dir, "output_dir": eval_dir}
    r = recipe("evaluate", "recipes/demo/eval.yaml", **evaluate, num_beams=20, max_samples=12)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics_path = r.stdout.strip().splitlines()[-1]
    assert metrics_path == os.path.join(eval_dir, "metrics.json")
    metrics = json.load(open(metrics_path))
    eval_summary = json.load(open(os.path.join(eval_dir, "run_summary.json")))
    assert eval_summary["prompt_style"] == "compact" and eval_summary["history_items"] == 2
    # the ranker describes itself: the demo's tiny Qwen2 (sdpa attention) takes the tree search under decoder auto
    assert eval_summary["launch"]["ranker"] == "tree"
    assert metrics["invalid"] == 0 and metrics["num_samples"] == 12 and metrics["num_beams"] == 20
    assert {f"HR@{k}" for k in (1, 3, 5, 10, 20)} <= set(metrics) and "HR@50" not in metrics
    assert set(metrics["per_level"]) == {"independent", "cumulative", "top1_dropoff"}
    preds = [json.loads(line) for line in open(os.path.join(eval_dir, "predictions.jsonl"))]
    assert len(preds) == 12 and all(len(p["predictions"]) == 20 for p in preds)

    # the saved (best) model ranks the same 10 valid users exactly as the training-time eval did
    r = recipe(
        "evaluate", "recipes/demo/eval.yaml", **data, model_name_or_path=sft_dir, output_dir=tmp_path / "eval_valid",
        split="valid", max_samples=10, sample_seed=3, num_beams=20, batch_size=4,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    valid_metrics = json.load(open(r.stdout.strip().splitlines()[-1]))
    assert valid_metrics["num_samples"] == 10
    for k in (1, 5, 10):
        assert valid_metrics[f"HR@{k}"] == best[f"eval_hr@{k}"]
        assert valid_metrics[f"NDCG@{k}"] == pytest.approx(best[f"eval_ndcg@{k}"], abs=1e-12)
    assert best["eval_hr@10"] > 0  # a comparison of zeros would prove nothing

    # GRPO from the SFT checkpoint, a few steps
    r = recipe(
        "grpo", "recipes/demo/grpo.yaml", **data, model_name_or_path=sft_dir, output_dir=grpo_dir,
        max_steps=2, per_device_train_batch_size=8, num_generations=4,
        eval_strategy="steps", eval_steps=1, ranking_eval_rows=10, ranking_eval_seed=3, ranking_eval_beams=20,
        per_device_eval_batch_size=4, eval_on_start="true",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.load(open(os.path.join(grpo_dir, "run_summary.json")))
    assert summary["status"] == "ok" and summary["stage"] == "grpo"
    # GRPO evaluates (and selects) on the same ranking of the same valid users
    assert summary["metrics"]["metric_for_best_model"] == "eval_ndcg@10"
    grpo_evals = summary["metrics"]["evaluations"]
    assert [e["step"] for e in grpo_evals] == [0, 1, 2] and all("eval_loss" not in e for e in grpo_evals)
    # step 0 (eval_on_start) ranks the start model: the SFT model's best evaluation, same users, same beams
    start = grpo_evals[0]
    assert [start[f"eval_hr@{k}"] for k in (1, 5, 10)] == [best[f"eval_hr@{k}"] for k in (1, 5, 10)]
    assert start["eval_ndcg@10"] == pytest.approx(best["eval_ndcg@10"], abs=1e-12)
    # only saved checkpoints (steps 1 and 2) can be the best model; whether GRPO beat step 0 is sidrec.results' call
    assert summary["metrics"]["best_metric"] == max(e["eval_ndcg@10"] for e in grpo_evals[1:])
    assert summary["metrics"]["last_logged_reward"] is not None
    config = json.load(open(os.path.join(grpo_dir, "config.json")))
    assert config["sidrec_prompt_style"] == "compact" and config["sidrec_history_items"] == 2
    assert summary["history_items"] == 2
    assert "compact style" in r.stderr

    # a second eval into the same (now non-empty) folder is refused without overwrite, and nothing is lost
    r = recipe("evaluate", "recipes/demo/eval.yaml", **evaluate, overwrite_output_dir="false")
    assert r.returncode == 2 and "is not empty" in r.stderr and "Traceback" not in r.stderr
    assert json.load(open(metrics_path)) == metrics


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data_dir", "/nonexistent"], "data_dir does not exist"),
        (["--sft_tasks", "sid_seq", "bogus_task"], "sft_tasks ['sid_seq', 'bogus_task']: unknown or not allowed"),
        (["--from_scratch", "false"], "set model_name_or_path"),
        (["--prompt_style", "chatty"], "prompt_style must be one of minionerec, compact, got 'chatty'"),
    ],
)
def test_sft_bad_input_is_one_line_no_traceback(tmp_path, args, message, small_data_dir):
    r = recipe("sft", "recipes/demo/sft.yaml", *args, data_dir=small_data_dir, output_dir=tmp_path / "o")
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max_completion_length", "8"], "max_completion_length must be the SID length + EOS = 4"),
        (["--reward_funcs", "rule", "bogus"], "unknown reward"),
        (["--num_generations", "64", "--per_device_train_batch_size", "64"], "larger than the catalog's 48"),
    ],
)
def test_grpo_bad_input_is_one_line_no_traceback(tmp_path, args, message, small_data_dir):
    r = recipe(
        "grpo", "recipes/demo/grpo.yaml", *args,
        data_dir=small_data_dir, output_dir=tmp_path / "o", model_name_or_path=tmp_path,  # a folder: no load
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert message in r.stderr and "Traceback" not in r.stderr


def test_eval_rejects_checkpoint_without_sid_tokens(tmp_path, small_data_dir):
    from sidrec.data.synthetic import SyntheticConfig, make_synthetic_dataset

    # a checkpoint trained on another catalog (different SID codes) lacks this catalog's SID tokens
    cfg = SyntheticConfig(num_categories=3, subcategories_per_category=2, num_items=48, num_users=30, seed=9)
    other = make_synthetic_dataset(str(tmp_path / "other"), cfg)
    sft_dir = quick_sft(other, tmp_path / "sft", steps=1)
    r = recipe(
        "evaluate",
        "recipes/demo/eval.yaml",
        data_dir=small_data_dir,
        model_name_or_path=sft_dir,
        output_dir=tmp_path / "e",
        num_beams=10,
    )
    assert r.returncode == 2 and "lacks" in r.stderr and "SID tokens" in r.stderr


def test_eval_too_many_beams_fails_before_loading_the_model(tmp_path, small_data_dir):
    r = recipe(
        "evaluate", "recipes/demo/eval.yaml", data_dir=small_data_dir, model_name_or_path=tmp_path,
        output_dir=tmp_path / "e", num_beams=49,
    )  # fmt: skip
    assert r.returncode == 2 and "num_beams=49 is larger than the catalog's 48" in r.stderr
    assert "Traceback" not in r.stderr  # the folder (no checkpoint in it) was never opened
