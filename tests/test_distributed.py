"""Distributed: accelerate configs, and SFT / GRPO under two CPU processes (gloo)."""

import glob
import json
import math
import os

import pytest
import torch
import yaml
from safetensors.torch import load_file

from .conftest import REPO
from .helpers import TINY, quick_sft, recipe

CONFIGS = os.path.join(REPO, "accelerate_configs")
CPU_MULTI = os.path.join(CONFIGS, "cpu_multi.yaml")


def load(name):
    with open(os.path.join(CONFIGS, name)) as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize("name", sorted(os.path.basename(p) for p in glob.glob(os.path.join(CONFIGS, "*.yaml"))))
def test_every_accelerate_config_is_complete(name):
    cfg = load(name)
    for key in ("compute_environment", "distributed_type", "num_machines", "num_processes"):
        assert key in cfg, key
    # accelerate refuses mixed_precision next to a deepspeed_config_file: there precision comes from the recipe
    assert ("mixed_precision" in cfg) == (cfg["distributed_type"] != "DEEPSPEED")
    # batch sizes and grad accumulation come from the recipe YAML only
    assert not {k for k in cfg if "batch" in k or "accumulation" in k}
    assert set(cfg.get("deepspeed_config", {})) <= {
        "deepspeed_config_file",
        "deepspeed_multinode_launcher",
        "zero3_init_flag",
    }


def test_zero2_is_the_pinned_reference_setup():
    # The reference: DeepSpeed ZeRO-2 on 4 x A40, one machine, one process per GPU, optimizer states on the GPUs (no
    # offload); the batch and precision are the recipe's (SFT: 16 x 16 x 4 = 1024 in bf16).
    from trl import TrlParser

    from sidrec.configs import SidrecModelConfig, SidrecScriptArguments, SidrecSFTConfig
    from sidrec.run.recipe import parse_config

    cfg = load("zero2.yaml")
    assert cfg["distributed_type"] == "DEEPSPEED" and cfg["num_machines"] == 1 and cfg["num_processes"] == 4
    assert cfg["use_cpu"] is False
    with open(os.path.join(REPO, cfg["deepspeed_config"]["deepspeed_config_file"])) as f:
        ds = json.load(f)
    zero = ds["zero_optimization"]
    assert zero["stage"] == 2 and zero["offload_optimizer"]["device"] == "none" and "offload_param" not in zero

    # What DeepSpeed is given on each of the config's processes once Trainer fills the file's "auto" fields from the
    # recipe: the reference SFT recipe's 16 x 16 x 4 = 1024 in bfloat16, and another split of the same batch,
    # 8 x 32 x 4, as given; a number fixed in the file instead would stay, or be reported as a mismatch.
    pytest.importorskip(
        "deepspeed", reason="filling the DeepSpeed config needs DeepSpeed (pip install -e '.[deepspeed]')"
    )
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig, unset_hf_deepspeed_config

    class Launched:
        """The recipe's args as each process of the launch sees them (``world_size`` = the config's processes)."""

        def __init__(self, args, world_size):
            self.args, self.world_size = args, world_size

        def __getattr__(self, name):
            return getattr(self.args, name)

    def filled(*overrides):
        path = os.path.join(REPO, "recipes/industrial/qwen2.5-1.5b/sft.yaml")
        parser = TrlParser((SidrecScriptArguments, SidrecSFTConfig, SidrecModelConfig))
        _, args, _ = parse_config(parser, ["--config", path, "--use_cpu", "true", *overrides])  # bf16 as the recipe
        out = HfTrainerDeepSpeedConfig(json.loads(json.dumps(ds)))
        out.trainer_config_process(Launched(args, cfg["num_processes"]))
        micro, accum = (out.config.get(k) for k in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps"))
        # absent, DeepSpeed derives the global batch itself: micro x accumulation x processes
        total = out.config.get("train_batch_size", micro * accum * cfg["num_processes"])
        return [micro, accum, total], out.dtype(), out.mismatches

    try:
        assert filled() == ([16, 16, 1024], torch.bfloat16, [])
        split = ("--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "32")
        assert filled(*split) == ([8, 32, 1024], torch.bfloat16, [])
        assert filled("--bf16", "false") == ([16, 16, 1024], torch.float32, [])
    finally:
        unset_hf_deepspeed_config()


def test_other_configs_name_what_the_docs_say():
    assert load("ddp.yaml")["distributed_type"] == "MULTI_GPU" and load("ddp.yaml")["num_processes"] == 4
    assert load("single_gpu.yaml")["num_processes"] == 1 and load("single_gpu.yaml")["mixed_precision"] == "bf16"
    assert load("cpu.yaml")["use_cpu"] and load("cpu.yaml")["num_processes"] == 1
    assert load("cpu_multi.yaml")["num_processes"] == 2


@pytest.mark.parametrize(
    "procs, accum, ok",
    [(1, 16, False), (4, 16, True), (2, 16, False)],
)
def test_reference_sft_global_batch_is_checked_against_the_process_count(procs, accum, ok):
    from trl import TrlParser

    from sidrec.configs import SidrecModelConfig, SidrecScriptArguments, SidrecSFTConfig
    from sidrec.errors import UserError
    from sidrec.run.recipe import parse_config

    path = os.path.join(REPO, "recipes/industrial/qwen2.5-1.5b/sft.yaml")
    parser = TrlParser((SidrecScriptArguments, SidrecSFTConfig, SidrecModelConfig))
    _, cfg, _ = parse_config(
        parser, ["--config", path, "--bf16", "false", "--gradient_accumulation_steps", str(accum)]
    )
    if ok:
        cfg.check_global_batch(procs)
    else:
        with pytest.raises(UserError, match=f"use gradient_accumulation_steps {1024 // (16 * procs)}"):
            cfg.check_global_batch(procs)


@pytest.mark.slow
def test_sft_two_processes_shard_the_data(small_data_dir, tmp_path):
    out = str(tmp_path / "sft")
    r = recipe(
        "sft", "recipes/demo/sft.yaml", *TINY, launcher=CPU_MULTI, data_dir=small_data_dir, output_dir=out,
        num_train_epochs=1, per_device_train_batch_size=8, eval_strategy="epoch", ranking_eval_rows=9,
        ranking_eval_beams=10, per_device_eval_batch_size=1,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.load(open(os.path.join(out, "run_summary.json")))
    assert summary["status"] == "ok" and summary["hardware"]["processes"] == 2
    state = json.load(open(sorted(glob.glob(os.path.join(out, "checkpoint-*", "trainer_state.json")))[-1]))
    # each optimizer step consumed 8 examples on each of the 2 processes
    assert state["max_steps"] == math.ceil(summary["metrics"]["num_train_examples"] / 16)

    # the ranking eval: the 2 processes ranked 4 + 5 of the 9 users, gathered, and scored what one process scores
    (ranking,) = summary["metrics"]["evaluations"]
    assert ranking["eval_ranked_rows"] == 9
    r = recipe(
        "evaluate", "recipes/demo/eval.yaml", data_dir=small_data_dir, model_name_or_path=out,
        output_dir=tmp_path / "eval", split="valid", max_samples=9, sample_seed=42, num_beams=10, batch_size=1,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    single = json.load(open(os.path.join(tmp_path, "eval", "metrics.json")))
    assert single["num_samples"] == 9 and single["HR@10"] > 0  # equal zeros would prove nothing
    for k in (1, 5, 10):
        assert ranking[f"eval_hr@{k}"] == single[f"HR@{k}"]
        assert ranking[f"eval_ndcg@{k}"] == pytest.approx(single[f"NDCG@{k}"], abs=1e-12)


@pytest.mark.slow
def test_grpo_two_processes_sync_the_reference_and_checkpoint(small_data_dir, tmp_path):
    sft = quick_sft(small_data_dir, tmp_path / "sft", steps=2)
    out = str(tmp_path / "grpo")
    r = recipe(
        "grpo", "recipes/demo/grpo.yaml", launcher=CPU_MULTI, data_dir=small_data_dir, model_name_or_path=sft,
        output_dir=out, max_steps=2, per_device_train_batch_size=8, num_generations=4, ref_model_sync_steps=1,
        save_strategy="steps", save_steps=2, logging_steps=1,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.load(open(os.path.join(out, "run_summary.json")))
    assert summary["status"] == "ok" and summary["hardware"]["processes"] == 2
    start, policy = (
        load_file(os.path.join(sft, "model.safetensors")),
        load_file(os.path.join(out, "model.safetensors")),
    )
    ref = load_file(os.path.join(out, "checkpoint-2", "ref_model.safetensors"))
    key = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(policy[key], start[key])  # the policy trained
    assert not torch.equal(ref[key], start[key])  # the reference was synced towards it
