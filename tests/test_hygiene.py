"""Run hygiene: experiment tracking, secrets, determinism, resume after a kill, sharded eval (1 vs 2 processes)."""

import glob
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from sidrec.run.tracking import load_env_file

from .conftest import REPO
from .helpers import TINY, killer_env, recipe

CPU_MULTI = os.path.join(REPO, "accelerate_configs", "cpu_multi.yaml")
SECRET = "sk-test-0123456789abcdef"

SFT_FEW_STEPS = [
    *TINY,
    "--tiny_dropout", "0.1",
    "--max_steps", "6",
    "--per_device_train_batch_size", "8",
    "--eval_strategy", "no",
    "--early_stopping_patience", "null",
    "--save_strategy", "steps",
    "--save_steps", "2",
    "--save_total_limit", "null",
    "--logging_steps", "1",
]  # fmt: skip


def weights(path):
    return load_file(os.path.join(path, "model.safetensors"))


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def sft_run(small_data_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sft") / "sft")
    r = recipe("sft", "recipes/demo/sft.yaml", *SFT_FEW_STEPS, data_dir=small_data_dir, output_dir=out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_sft_resumes_after_a_kill_to_the_same_model(sft_run, small_data_dir, tmp_path):
    out = str(tmp_path / "sft")
    common = {"data_dir": small_data_dir, "output_dir": out}
    r = recipe("sft", "recipes/demo/sft.yaml", *SFT_FEW_STEPS, env=killer_env(tmp_path, "4"), **common)
    assert r.returncode != 0
    assert os.path.isdir(os.path.join(out, "checkpoint-4")) and not os.path.exists(os.path.join(out, "checkpoint-6"))
    assert not os.path.exists(os.path.join(out, "model.safetensors"))
    assert json.load(open(os.path.join(out, "run_summary.json")))["status"] == "running"  # killed, not failed
    r = recipe("sft", "recipes/demo/sft.yaml", *SFT_FEW_STEPS, "--resume_from_checkpoint", "true", **common)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_weights(out, sft_run)


def test_grpo_resumes_after_a_kill_to_the_same_model(sft_run, small_data_dir, tmp_path):
    def grpo(out, *extra, env=None):
        return recipe(
            "grpo", "recipes/demo/grpo.yaml", *extra, env=env, data_dir=small_data_dir, model_name_or_path=sft_run,
            output_dir=out, max_steps=3, per_device_train_batch_size=8, num_generations=4, ref_model_sync_steps=2,
            save_strategy="steps", save_steps=1, logging_steps=1,
        )  # fmt: skip

    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    r = grpo(full)
    assert r.returncode == 0, r.stderr[-3000:]
    r = grpo(killed, env=killer_env(tmp_path, "2"))
    assert r.returncode != 0 and os.path.isdir(os.path.join(killed, "checkpoint-2"))
    r = grpo(killed, "--resume_from_checkpoint", "true")
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_weights(killed, full)


def eval_run(sft_run, data_dir, out, *extra, launcher=None, env=None, **flags):
    return recipe(
        "evaluate", "recipes/demo/eval.yaml", *extra, launcher=launcher, env=env, data_dir=data_dir,
        model_name_or_path=sft_run, output_dir=out, num_beams=10, max_samples=40, shard_size=8, batch_size=4, **flags,
    )  # fmt: skip


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_eval_is_deterministic_and_two_processes_equal_one(sft_run, small_data_dir, tmp_path):
    outs = [str(tmp_path / n) for n in ("a", "b", "two")]
    for out in outs[:2]:
        r = eval_run(sft_run, small_data_dir, out)
        assert r.returncode == 0, r.stderr[-3000:]
    r = eval_run(sft_run, small_data_dir, outs[2], launcher=CPU_MULTI)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.load(open(os.path.join(outs[2], "run_summary.json")))["hardware"]["processes"] == 2
    for name in ("metrics.json", "predictions.jsonl"):
        first = read(os.path.join(outs[0], name))
        assert all(read(os.path.join(o, name)) == first for o in outs[1:]), name
    assert not os.path.exists(os.path.join(outs[2], "shards"))  # merged and removed


def test_eval_resumes_at_the_first_unfinished_shard(sft_run, small_data_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from sidrec import evaluation
    from sidrec.backends.hf import HfRanker
    from sidrec.data import load_rec_dataset
    from sidrec.models.loading import load_tokenizer

    data = load_rec_dataset(small_data_dir, "Synthetic", ("test",))
    rows = data.splits["test"][:20]
    tokenizer = load_tokenizer(sft_run)
    model = AutoModelForCausalLM.from_pretrained(sft_run)
    ranker = HfRanker(model, tokenizer, data.catalog.vocab.compile(tokenizer), num_beams=5, batch_size=4)
    kwargs = {"style": "minionerec", "num_beams": 5, "max_length": 512, "ks": (1, 5), "shard_size": 6}
    full = evaluation.run_sharded_eval(ranker, tokenizer, rows, str(tmp_path / "full"), {}, **kwargs)

    calls = []
    real = ranker.rank

    def dies_on_third_shard(prompts):
        calls.append(len(prompts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(prompts)

    out = str(tmp_path / "resumed")
    ranker.rank = dies_on_third_shard
    with pytest.raises(KeyboardInterrupt):
        evaluation.run_sharded_eval(ranker, tokenizer, rows, out, {}, **kwargs)
    assert len(glob.glob(os.path.join(out, "shards", "shard-*.json"))) == 2
    calls.clear()
    ranker.rank = lambda prompts: calls.append(len(prompts)) or real(prompts)
    resumed = evaluation.run_sharded_eval(ranker, tokenizer, rows, out, {}, **kwargs)
    assert calls == [6, 2]  # shards 2 and 3 only (20 rows = 6 + 6 + 6 + 2)
    assert resumed == full
    # a resumed run with other settings is refused instead of mixing shards
    with pytest.raises(evaluation.UserError, match="different settings.*num_beams"):
        evaluation.run_sharded_eval(ranker, tokenizer, rows, out, {"num_beams": 7}, **{**kwargs, "num_beams": 7})


def test_online_without_key_fails_before_any_work(small_data_dir, tmp_path):
    out = tmp_path / "o"
    r = recipe(
        "sft", "recipes/demo/sft.yaml", env={"WANDB_API_KEY": ""}, data_dir=small_data_dir, output_dir=out,
        wandb_mode="online",
    )  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "wandb_mode=online needs WANDB_API_KEY" in r.stderr and ".env" in r.stderr
    assert not out.exists()  # nothing loaded, nothing written


def test_offline_tracking_logs_train_and_eval_to_one_run_and_never_the_key(small_data_dir, tmp_path):
    sft, ev = str(tmp_path / "sft"), str(tmp_path / "eval")
    env = {"WANDB_API_KEY": SECRET, "WANDB_SILENT": "true"}
    r = recipe(
        "sft", "recipes/demo/sft.yaml", *SFT_FEW_STEPS, env=env, data_dir=small_data_dir, output_dir=sft,
        wandb_mode="offline", wandb_project="sidrec-test", wandb_tags="[unit, tiny]",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    train_run = json.load(open(os.path.join(sft, "run_summary.json")))["wandb"]
    assert train_run["run_id"] and train_run["mode"] == "offline"
    assert glob.glob(os.path.join(sft, "wandb", f"offline-run-*-{train_run['run_id']}"))
    r = eval_run(sft, small_data_dir, ev, env=env, wandb_mode="offline", wandb_project="sidrec-test")
    assert r.returncode == 0, r.stderr[-3000:]
    eval_run_info = json.load(open(os.path.join(ev, "run_summary.json")))["wandb"]
    assert eval_run_info["run_id"] == train_run["run_id"]  # the eval tables land in the training run
    logged = b"".join(read(p) for p in glob.glob(os.path.join(ev, "wandb", "offline-run-*", "*.wandb")))
    assert b"eval/metrics" in logged and b"eval/per_level/cumulative" in logged
    for root in (sft, ev):
        for path in glob.glob(os.path.join(root, "**", "*"), recursive=True):
            if os.path.isfile(path):
                assert SECRET.encode() not in read(path), path
    assert SECRET not in r.stdout + r.stderr


def test_env_file_supplies_missing_variables_only(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("SIDREC_TEST_A=from-file\nSIDREC_TEST_B=from-file\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SIDREC_TEST_A", raising=False)
    monkeypatch.setenv("SIDREC_TEST_B", "from-env")
    assert load_env_file()
    assert os.environ["SIDREC_TEST_A"] == "from-file" and os.environ["SIDREC_TEST_B"] == "from-env"
    monkeypatch.delenv("SIDREC_TEST_A")
