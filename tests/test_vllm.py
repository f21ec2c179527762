"""The vLLM backend (`make install-vllm`; CI runs this file in .venv-vllm). Skipped where vllm is not installed."""

import json
import os

import pytest
import torch

from sidrec.decoding import rank_items, rankings_match, sequences_to_sids
from sidrec.evaluation import eval_prompts
from sidrec.models.metadata import CheckpointMetadata
from sidrec.models.tiny import build_tiny_model

from .conftest import REPO
from .helpers import recipe, run

try:
    import vllm
except ImportError:
    vllm = None
pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(
        vllm is None, reason="vllm is not installed here (make install-vllm; CI runs these in .venv-vllm)"
    ),
]

# In-process engine (no engine-core subprocess), a small KV cache, no thread pinning: what CPU CI can run.
ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
for key, value in ENV.items():
    os.environ.setdefault(key, value)


@pytest.fixture(scope="module")
def checkpoint(small_tokenizer, tmp_path_factory):
    """A random-init tiny Qwen2 saved as a checkpoint, initialised with a larger spread so that its distributions
    are far from uniform (distinct scores, few ties)."""
    model = build_tiny_model(
        small_tokenizer, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128, seed=3
    )
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    path = str(tmp_path_factory.mktemp("vllm") / "tiny")
    model.save_pretrained(path)
    small_tokenizer.save_pretrained(path)
    return path, model


@pytest.fixture(scope="module")
def engine(checkpoint):
    from sidrec.backends.vllm import make_llm

    llm = make_llm(checkpoint[0], dtype="float32", enforce_eager=True)
    assert type(llm.llm_engine).__module__.startswith("vllm.")  # the real engine, nothing stood in for it
    return llm


def test_trie_processor_samples_only_catalog_sids(engine, small_data, small_tokenizer, tmp_path):
    from sidrec.backends.vllm import sid_sampling_params, write_trie_file

    trie = small_data.catalog.vocab.compile(small_tokenizer)
    path = write_trie_file(trie, str(tmp_path / "trie.json"))
    prompts = eval_prompts(small_data.splits["valid"][:4], small_tokenizer, 256, "", "minionerec")
    ids = small_tokenizer(prompts, add_special_tokens=False)["input_ids"]
    constrained = sid_sampling_params(path, n=16, temperature=1.0)
    free = constrained.clone()
    free.extra_args = None  # the same request without the trie: the processor leaves it alone

    def completions(params):
        from vllm.inputs import TokensPrompt

        outs = engine.generate([TokensPrompt(prompt_token_ids=p) for p in ids], params, use_tqdm=False)
        return [list(o.token_ids) for out in outs for o in out.outputs]

    got = completions(constrained)
    assert len(got) == 64
    width = trie.sid_length + 1
    index, valid = sequences_to_sids(trie, torch.tensor([c + [0] * (width - len(c)) for c in got]))
    assert all(len(c) == width for c in got) and bool(valid.all()), got[:4]
    assert len(set(index.tolist())) > 8  # samples, not one SID repeated
    free_got = completions(free)
    _, free_valid = sequences_to_sids(trie, torch.tensor([(c + [0] * width)[:width] for c in free_got]))
    assert int(free_valid.sum()) < 8, "unconstrained samples of a random model should almost never be SIDs"


def test_vllm_ranking_equals_hf(engine, checkpoint, small_data, small_tokenizer):
    from sidrec.backends.vllm import VllmRanker

    _, model = checkpoint
    rows = small_data.splits["test"][:6]
    prompts = eval_prompts(rows, small_tokenizer, 256, "", CheckpointMetadata.from_model(model).prompt_style)
    trie = small_data.catalog.vocab.compile(small_tokenizer)
    hf = rank_items(model.eval(), small_tokenizer, prompts, trie, num_beams=20, batch_size=3, show_progress=False)
    ours = VllmRanker(engine, small_tokenizer, trie).rank(prompts, num_beams=20, batch_size=4, show_progress=False)
    assert ours.invalid == 0 and all(len(s) == 20 for s in ours.sids)
    assert rankings_match(hf, ours, tol=1e-4)
    same_items = sum(a == b for x, y in zip(hf.sids, ours.sids, strict=True) for a, b in zip(x, y, strict=True))
    assert same_items >= 0.95 * 120  # identical lists up to swaps of float-tied neighbours
    spread = max(s[0] - s[-1] for s in hf.scores)
    assert spread > 1.0  # the scores differ enough that equal lists mean something


@pytest.mark.slow
def test_evaluate_backend_vllm_equals_hf(checkpoint, small_data_dir, tmp_path):
    sft = checkpoint[0]
    out = {}
    for backend in ("hf", "vllm"):
        r = recipe(
            "evaluate", "recipes/demo/eval.yaml", data_dir=small_data_dir, model_name_or_path=sft,
            output_dir=tmp_path / backend, backend=backend, vllm_enforce_eager="true", max_samples=12, num_beams=20,
            env=ENV,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        with open(tmp_path / backend / "predictions.jsonl") as f:
            out[backend] = [json.loads(line) for line in f]
        with open(tmp_path / backend / "run_summary.json") as f:
            out[backend + "_summary"] = json.load(f)
    assert out["vllm_summary"]["launch"]["engine"].startswith(f"vllm {vllm.__version__}")
    assert out["hf_summary"]["launch"]["engine"] is None
    assert [p["predictions"] for p in out["hf"]] == [p["predictions"] for p in out["vllm"]]
    worst = max(
        abs(a - b)
        for x, y in zip(out["hf"], out["vllm"], strict=True)
        for a, b in zip(x["scores"], y["scores"], strict=True)
    )
    assert worst < 1e-4
    assert out["hf_summary"]["metrics"] == out["vllm_summary"]["metrics"]


@pytest.mark.slow
def test_grpo_with_vllm_rollouts(checkpoint, small_data_dir, tmp_path):
    r = recipe(
        "grpo", "recipes/demo/grpo.yaml", data_dir=small_data_dir, model_name_or_path=checkpoint[0],
        output_dir=tmp_path / "grpo", use_vllm="true", vllm_mode="colocate", beam_search="false",
        reward_funcs="rule", max_steps=2, logging_steps=1, per_device_train_batch_size=32, env=ENV,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    with open(tmp_path / "grpo" / "run_summary.json") as f:
        summary = json.load(f)
    rollouts = summary["metrics"]["rollouts"]
    assert rollouts["engine"].startswith(f"vllm {vllm.__version__} colocate")
    assert rollouts["completions"] == 2 * 32 and rollouts["invalid"] == 0
    assert summary["status"] == "ok"


def test_cpu_patch_keeps_linear_weights():
    # What TRL's weight sync needs from each linear layer: the parameter it loads into is the one the kernel reads.
    from vllm.model_executor.layers import utils as layer_utils

    from sidrec.patches import patch_cpu_weight_sync

    original = layer_utils.dispatch_cpu_unquantized_gemm
    try:
        assert patch_cpu_weight_sync()  # this is vLLM's CPU platform
        layer = torch.nn.Linear(64, 32, bias=False).to(torch.bfloat16)
        weight = layer.weight
        layer_utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
        assert layer.weight is weight and layer.weight.shape == (32, 64)
        x = torch.randn(3, 64, dtype=torch.bfloat16)
        with torch.no_grad():
            layer.weight.mul_(2.0)  # a "sync": the next call must see it
            assert torch.equal(layer_utils.cpu_unquantized_gemm(layer, x, layer.weight), x @ layer.weight.T)
    finally:
        layer_utils.dispatch_cpu_unquantized_gemm = original


def test_vllm_refused_with_beam_search_or_importance_correction(tmp_path):
    from sidrec.configs import SidrecGRPOConfig
    from sidrec.errors import UserError

    common = {"output_dir": str(tmp_path), "use_vllm": True, "reward_funcs": ["rule"], "use_cpu": True}
    with pytest.raises(UserError, match="set beam_search: false"):
        SidrecGRPOConfig(**common, beam_search=True)
    with pytest.raises(UserError, match="masked distribution"):
        SidrecGRPOConfig(**common, beam_search=False, vllm_importance_sampling_correction=True)


@pytest.mark.slow
def test_colocated_weight_sync_reaches_the_engine(checkpoint, small_data, tmp_path):
    # TRL's sync must reach the engine's kernels. On CPUs where vLLM packs weights for oneDNN (AVX512-BF16, AMX) it
    # would not without sidrec's patch; on this CI's CPU oneDNN's bf16 matmul is unavailable and vLLM keeps the
    # parameters anyway (test_cpu_patch_keeps_linear_weights covers the patch itself).
    sids = tmp_path / "sids.json"
    sids.write_text(json.dumps(small_data.catalog.vocab.strings()))
    r = run(
        os.path.join(REPO, "tests", "vllm_sync_probe.py"), checkpoint[0], str(sids), str(tmp_path / "out"), env=ENV
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert "weight-sync patch" in result["engine"]
    # TRL builds the engine with vLLM's "auto" dtype: bfloat16 for this float32 checkpoint, so engine and trainer
    # agree to bfloat16 rounding, not exactly (measured: 0.017 at the start, 0.11 after the change, 59 before sync).
    assert result["dtype"] == "torch.bfloat16"
    assert result["start"] < 0.1  # engine and trainer agree on the starting weights
    assert result["before"] > 10  # the trainer's weights moved a lot; the engine has not seen it yet
    assert result["after"] < result["before"] / 100  # after TRL's sync the engine computes with the new weights
