"""The reference path: a pretrained (stand-in) Qwen2.5 checkpoint under accelerate_configs/zero2.yaml, 2 processes.

Every launch goes through the pinned zero2.yaml with command-line overrides only (``--num_processes 2`` and
``--use_cpu true --bf16 false``), as a user on a machine without GPUs would run it. What ran is asserted from the
run's own record of the live engine (``run_summary.json`` -> ``launch``), so a launch that quietly became DDP, or
two processes each training alone, fails here.
"""

import glob
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from .conftest import REPO
from .helpers import killer_env, run

ZERO2 = os.path.join(REPO, "accelerate_configs", "zero2.yaml")
REF = "recipes/industrial/qwen2.5-1.5b"
CPU = ["--use_cpu", "true", "--bf16", "false"]
QWEN_ROWS = 151936  # embedding rows of Qwen2.5 checkpoints (151,665 tokens, padded)

pytestmark = pytest.mark.slow


def zero2(script, config, *args, env=None):
    """``accelerate launch --config_file zero2.yaml --num_processes 2 recipes/<script>.py --config <config> ...``."""
    env = {"OMP_NUM_THREADS": "1", **(env or {})}
    return run(
        "-m", "accelerate.commands.launch", "--config_file", ZERO2, "--num_processes", "2",
        f"recipes/{script}.py", "--config", config, *args, env=env,
    )  # fmt: skip


def flags(**kw):
    return [x for k, v in kw.items() for x in (f"--{k}", str(v))]


def summary(path):
    with open(os.path.join(path, "run_summary.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    if os.environ.get("CI"):
        import deepspeed  # noqa: F401  (CI installs the extra: a missing DeepSpeed must fail, not skip)
    pytest.importorskip("deepspeed", reason="the reference path needs DeepSpeed (pip install -e '.[deepspeed]')")
    from sidrec.models.standin import build_standin

    out = str(tmp_path_factory.mktemp("standin") / "qwen")
    build_standin(out, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    return out


def sft_args(standin, data_dir, out, **extra):
    base = flags(
        model_name_or_path=standin, data_dir=data_dir, category="Synthetic", output_dir=out, max_train_rows=40,
        max_valid_rows=8, max_steps=4, per_device_train_batch_size=4, gradient_accumulation_steps=1,
        global_batch_size=8, eval_strategy="no", early_stopping_patience="null", save_strategy="steps",
        save_steps=2, save_total_limit="null", logging_steps=1, warmup_steps=0, lr_scheduler_type="constant",
        learning_rate=1e-3,
    )  # fmt: skip
    return [*base, *flags(**extra), *CPU]  # later flags win


def evaluate(model, data_dir, out, launch=zero2):
    """The reference eval YAML on ``model``: under zero2.yaml with 2 processes, or (``launch=None``) one process."""
    args = flags(
        model_name_or_path=model, data_dir=data_dir, category="Synthetic", output_dir=out, max_samples=12,
        num_beams=10, batch_size=4, use_cpu="true",
    )  # fmt: skip
    if launch is None:
        r = run("recipes/evaluate.py", "--config", f"{REF}/eval.yaml", *args)
    else:
        r = launch("evaluate", f"{REF}/eval.yaml", *args)
    assert r.returncode == 0, r.stderr[-4000:]
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def sft(standin, small_data_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref") / "sft")
    r = zero2("sft", f"{REF}/sft.yaml", *sft_args(standin, small_data_dir, out))
    assert r.returncode == 0, r.stderr[-4000:]
    return out


def test_standin_has_qwen25_tokenizer_and_config(standin):
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(standin)
    assert type(tok).__name__ == "Qwen2Tokenizer" and len(tok) == 151643 + 22
    # byte-level ids: '!' is 0, so '1' (0x31) is 0x31 - 0x21 = 16; Qwen splits numbers into single digits
    assert tok("12345")["input_ids"] == [16, 17, 18, 19, 20]
    assert tok("Hello world")["input_ids"] == [9707, 1879]
    assert tok("<|im_start|>user<|im_end|>")["input_ids"] == [151644, 872, 151645]
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    cfg = AutoConfig.from_pretrained(standin)
    assert cfg.model_type == "qwen2" and cfg.tie_word_embeddings and cfg.vocab_size == QWEN_ROWS
    assert (cfg.num_key_value_heads, cfg.rope_parameters["rope_theta"], cfg.rms_norm_eps) == (2, 1e6, 1e-6)


def assert_zero2(launch):
    assert launch["engine"] == "deepspeed.runtime.engine.DeepSpeedEngine", launch
    assert launch["distributed_type"] == "DEEPSPEED" and launch["zero_stage"] == 2
    assert launch["num_processes"] == 2 and launch["world_size"] == 2 and launch["backend"] == "gloo"
    # ZeRO-2: each of the 2 ranks holds half of the fp32 optimizer state (DDP would hold all of it on each)
    assert len(launch["optimizer_partition_fraction"]) == 2
    assert all(abs(f - 0.5) < 0.01 for f in launch["optimizer_partition_fraction"])
    assert launch["precision"] == "fp32"


def test_sft_from_a_pretrained_checkpoint_runs_as_zero2_and_adds_sid_tokens(sft, standin, small_data):
    from transformers import AutoConfig, AutoTokenizer

    s = summary(sft)
    assert s["status"] == "ok"
    assert_zero2(s["launch"])
    # a ZeRO checkpoint: the optimizer state is saved as one partition per rank
    for rank in (0, 1):
        assert glob.glob(
            os.path.join(sft, "checkpoint-2", "global_step2", f"*zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
        )
    # the stand-in had no SID tokens: the recipe added the catalog's and padded the embedding to a multiple of 64
    base = AutoTokenizer.from_pretrained(standin)
    tok = AutoTokenizer.from_pretrained(sft)
    sid_tokens = small_data.catalog.vocab.level_tokens()
    assert not any(t in base.get_vocab() for t in sid_tokens)
    assert len(tok) == len(base) + len(sid_tokens)
    assert tok.convert_tokens_to_ids("<|im_end|>") == 151645 and tok.convert_tokens_to_ids("<|endoftext|>") == 151643
    rows = AutoConfig.from_pretrained(sft).vocab_size
    assert rows == QWEN_ROWS if len(tok) <= QWEN_ROWS else rows == -(-len(tok) // 64) * 64
    weights = load_file(os.path.join(sft, "model.safetensors"))
    assert weights["model.embed_tokens.weight"].shape[0] == rows


def test_resume_from_a_zero_checkpoint_after_a_kill_ends_where_an_uninterrupted_run_does(
    sft, standin, small_data_dir, tmp_path
):
    out = str(tmp_path / "sft")
    r = zero2("sft", f"{REF}/sft.yaml", *sft_args(standin, small_data_dir, out), env=killer_env(tmp_path, "2"))
    assert r.returncode != 0 and os.path.isdir(os.path.join(out, "checkpoint-2", "global_step2"))
    assert not os.path.exists(os.path.join(out, "model.safetensors"))  # it died after the step-2 checkpoint
    r = zero2("sft", f"{REF}/sft.yaml", *sft_args(standin, small_data_dir, out, resume_from_checkpoint="true"))
    assert r.returncode == 0, r.stderr[-4000:]
    assert_zero2(summary(out)["launch"])
    a, b = load_file(os.path.join(sft, "model.safetensors")), load_file(os.path.join(out, "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    m1 = evaluate(sft, small_data_dir, str(tmp_path / "e1"), launch=None)
    assert m1 == evaluate(out, small_data_dir, str(tmp_path / "e2"), launch=None) and m1["invalid"] == 0


def test_grpo_runs_as_zero2_and_syncs_the_reference_model(sft, small_data_dir, tmp_path):
    out = str(tmp_path / "grpo")
    args = flags(
        model_name_or_path=sft, data_dir=small_data_dir, category="Synthetic", output_dir=out, max_train_rows=16,
        max_steps=2, per_device_train_batch_size=4, gradient_accumulation_steps=1, global_batch_size=8,
        num_generations=4, learning_rate=1e-3, warmup_steps=0, ref_model_sync_steps=1, ref_model_mixup_alpha=1.0,
        save_strategy="steps", save_steps=2, logging_steps=1, eval_steps=2, max_valid_rows=8, ranking_eval_beams=10,
        per_device_eval_batch_size=4,
    )  # fmt: skip
    r = zero2("grpo", f"{REF}/grpo.yaml", *args, *CPU)
    assert r.returncode == 0, r.stderr[-4000:]
    launch = summary(out)["launch"]
    assert_zero2(launch)
    # the reference recipe's ranking eval ran under ZeRO-2: 4 + 4 valid users ranked, gathered, and chose step 2
    metrics = summary(out)["metrics"]
    assert [(e["step"], e["eval_ranked_rows"]) for e in metrics["evaluations"]] == [(2, 8)]
    assert metrics["best_checkpoint"].endswith("checkpoint-2")
    assert launch["ref_model_engine"] == "deepspeed.runtime.engine.DeepSpeedEngine"
    assert launch["ref_model_max_abs_change"] > 0
    # with mixup alpha 1 a sync copies the policy: the reference saved at step 2 equals the policy at step 2
    start = load_file(os.path.join(sft, "model.safetensors"))
    policy = load_file(os.path.join(out, "checkpoint-2", "model.safetensors"))
    ref = load_file(os.path.join(out, "checkpoint-2", "ref_model.safetensors"))
    key = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(policy[key], start[key])
    assert torch.equal(ref[key], policy[key])


def test_lora_sft_output_is_evaluated_as_base_plus_adapter(standin, small_data, small_data_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from trl import ModelConfig

    from sidrec.evaluation import eval_prompts
    from sidrec.models.loading import get_model, get_tokenizer

    out = str(tmp_path / "lora")
    args = sft_args(standin, small_data_dir, out, use_peft="true", lora_r=4, lora_alpha=8)
    r = zero2("sft", f"{REF}/sft.yaml", *args, "--lora_target_modules", "q_proj", "v_proj")
    assert r.returncode == 0, r.stderr[-4000:]
    assert_zero2(summary(out)["launch"])
    assert os.path.isfile(os.path.join(out, "adapter_config.json"))
    assert not os.path.isfile(os.path.join(out, "model.safetensors"))  # only the adapter (+ trained embeddings)

    # the loader's merged model scores exactly as the unmerged base + adapter
    args = ModelConfig(model_name_or_path=out)
    tokenizer = get_tokenizer(args)
    merged = get_model(args, torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(standin, dtype=torch.float32)
    base.resize_token_embeddings(merged.get_input_embeddings().weight.shape[0], mean_resizing=False)
    reference = PeftModel.from_pretrained(base, out).eval()
    prompts = eval_prompts(small_data.splits["test"][:3], tokenizer, 256, "test", "minionerec")
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        want, got = reference(**batch).logits, merged(**batch).logits
    assert torch.allclose(want, got, atol=1e-4), (want - got).abs().max()

    metrics = evaluate(out, small_data_dir, str(tmp_path / "eval"))
    assert metrics["invalid"] == 0 and metrics["num_samples"] == 12
    assert summary(str(tmp_path / "eval"))["launch"]["num_processes"] == 2


def test_deepspeed_launch_without_cuda_or_cpu_switch_stops_with_one_line(standin, small_data_dir, tmp_path):
    args = [a for a in sft_args(standin, small_data_dir, str(tmp_path / "o")) if a not in ("--use_cpu", "true")]
    r = zero2("sft", f"{REF}/sft.yaml", *args)
    assert r.returncode != 0
    assert "error: this is a DeepSpeed launch on a machine without CUDA: add --use_cpu true" in r.stderr
    assert 'recipes/sft.py", line' not in r.stderr  # one line from the recipe (the launcher reports the exit)
    assert not os.path.exists(os.path.join(tmp_path, "o", "model.safetensors"))


def test_a_failure_inside_accelerate_keeps_its_traceback(standin, small_data_dir, tmp_path):
    # accelerate refuses mixed_precision next to a deepspeed_config_file: a library error, not a typo in our YAML
    bad = tmp_path / "zero2_bf16.yaml"
    bad.write_text(open(ZERO2).read() + "mixed_precision: bf16\n")
    r = run(
        "-m", "accelerate.commands.launch", "--config_file", str(bad), "--num_processes", "2",
        "recipes/sft.py", "--config", f"{REF}/sft.yaml", *sft_args(standin, small_data_dir, str(tmp_path / "o")),
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert r.returncode != 0
    assert "Traceback (most recent call last)" in r.stderr
    assert "error: ValueError: When using `deepspeed_config_file`" in r.stderr and "[in accelerate]" in r.stderr
