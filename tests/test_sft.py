import json
import os

import pytest
import torch
from trl import SFTTrainer

from sidrec.configs import SidrecSFTConfig
from sidrec.data.prompts import fit_to_length, to_hf_dataset
from sidrec.data.tasks import build_tasks
from sidrec.models.sid_tokens import freeze_all_but_new_tokens
from sidrec.models.tiny import build_tiny_model


def sft_args(tmp_path, **kw):
    base = {
        "output_dir": str(tmp_path / "sft"),
        "max_steps": 3,
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-2,
        "bf16": False,
        "report_to": [],
        "save_strategy": "no",
        "eval_strategy": "no",
        "early_stopping_patience": None,
        "logging_steps": 1,
        "max_length": 256,
        "use_cpu": True,
    }
    base.update(kw)
    return SidrecSFTConfig(**base)


def train_dataset(data, tok):
    examples = build_tasks(["sid_seq", "item_alignment"], data.splits["train"], data.catalog)
    return to_hf_dataset(fit_to_length(examples, tok, 256))


def test_few_step_sft_changes_every_parameter_and_lowers_the_loss(small_data, small_tokenizer, tiny_model, tmp_path):
    from sidrec.trainers import SidSFTTrainer

    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    ds = train_dataset(small_data, small_tokenizer)
    trainer = SidSFTTrainer(
        model=tiny_model, args=sft_args(tmp_path, max_steps=6), train_dataset=ds, processing_class=small_tokenizer
    )
    probe = ds.select(range(64))
    first = trainer.evaluate(eval_dataset=probe)["eval_loss"]
    trainer.train()
    unchanged = [n for n, p in tiny_model.named_parameters() if torch.equal(before[n], p.detach())]
    assert unchanged == []
    # a random model starts near ln(vocab) per token; six steps must take a clear step down on the training examples
    assert first > 0.9 * torch.log(torch.tensor(float(len(small_tokenizer)))).item()
    assert trainer.evaluate(eval_dataset=probe)["eval_loss"] < first - 0.5


def test_loss_is_on_the_completion_only(small_data, small_tokenizer, tiny_model, tmp_path):
    examples = build_tasks(["sid_seq"], small_data.splits["train"][:4], small_data.catalog)
    ds = to_hf_dataset(fit_to_length(examples, small_tokenizer, 256))
    trainer = SFTTrainer(model=tiny_model, args=sft_args(tmp_path), train_dataset=ds, processing_class=small_tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    for labels in batch["labels"]:
        target = labels[labels != -100].tolist()
        # the SID's 3 tokens, then EOS
        assert len(target) == 4 and target[-1] == small_tokenizer.eos_token_id
        assert small_tokenizer.decode(target[:3]) in small_data.catalog.vocab.strings()


def test_freeze_llm_trains_only_new_token_rows(small_data, small_tokenizer, tmp_path):
    model = build_tiny_model(
        small_tokenizer, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64
    )
    new_ids = small_tokenizer.convert_tokens_to_ids(small_data.catalog.vocab.level_tokens())
    freeze_all_but_new_tokens(model, new_ids)
    emb = model.get_input_embeddings().weight
    before = emb.detach().clone()
    layer = model.model.layers[0].mlp.up_proj.weight.detach().clone()
    args = sft_args(tmp_path, freeze_llm=True, weight_decay=0.0)
    SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset(small_data, small_tokenizer),
        processing_class=small_tokenizer,
    ).train()
    changed_rows = set(torch.nonzero((emb.detach() != before).any(dim=1)).flatten().tolist())
    assert changed_rows and changed_rows <= set(new_ids)
    assert torch.equal(layer, model.model.layers[0].mlp.up_proj.weight)


def test_residual_dropout_only_in_training(small_tokenizer):
    from sidrec.models.dropout import add_residual_dropout

    model = build_tiny_model(
        small_tokenizer, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64
    )
    ids = torch.tensor([[5, 6, 7, 8]])
    model.eval()
    ref = model(ids).logits
    add_residual_dropout(model, 0.5)
    assert torch.equal(model(ids).logits, ref)  # eval: no-op
    model.train()
    torch.manual_seed(0)
    assert not torch.allclose(model(ids).logits, ref)


def test_lora_trains_adapters_and_sid_embeddings(small_data, small_tokenizer, tiny_model, tmp_path):
    from trl import ModelConfig

    from sidrec.models.loading import lora_config_for_sids

    model_args = ModelConfig(use_peft=True, lora_r=4, lora_alpha=8, lora_target_modules=["q_proj", "v_proj"])
    peft_config = lora_config_for_sids(model_args, tiny_model)
    assert peft_config.modules_to_save == ["embed_tokens"] and peft_config.ensure_weight_tying
    base = tiny_model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    trainer = SFTTrainer(
        model=tiny_model,
        args=sft_args(tmp_path),
        train_dataset=train_dataset(small_data, small_tokenizer),
        processing_class=small_tokenizer,
        peft_config=peft_config,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    changed = {n for n, b in before.items() if not torch.equal(b, after[n].detach())}
    assert any("lora_B" in n for n in changed)
    assert any("embed_tokens.modules_to_save" in n for n in changed)
    # the tied LM head is the trained embedding copy, and the base weights stay frozen
    head, emb = trainer.model.get_output_embeddings(), trainer.model.get_input_embeddings()
    assert head.weight.data_ptr() == emb.weight.data_ptr()
    assert torch.equal(base, trainer.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight)


def test_pretrained_checkpoint_gets_sid_tokens_and_rows_padded_to_64(small_data, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from sidrec.models.loading import load_tokenizer
    from sidrec.models.sid_tokens import load_pretrained_with_sids

    # a "pretrained" checkpoint of 300 tokens and 300 embedding rows, without SID tokens
    backend = Tokenizer(models.WordLevel({f"w{i}": i for i in range(299)} | {"<eos>": 299}, unk_token="<eos>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")
    cfg = Qwen2Config(
        vocab_size=300, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=32, tie_word_embeddings=True,
    )  # fmt: skip
    Qwen2ForCausalLM(cfg).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")

    tokenizer = load_tokenizer(str(tmp_path / "base"))
    model, new_ids = load_pretrained_with_sids(str(tmp_path / "base"), tokenizer, small_data.catalog.vocab)
    n_sid = len(small_data.catalog.vocab.level_tokens())
    assert new_ids == list(range(300, 300 + n_sid))  # appended after the 300 old ids, in level order
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows == ((300 + n_sid + 63) // 64) * 64 and rows >= 300 + n_sid  # e.g. 300 + 40 -> 384
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_sid_embeddings_start_at_their_items_title_vectors(small_data, small_tokenizer, tiny_model):
    """Pretrained-model path: an item's vector is the mean embedding of its title tokens; a level-1 code starts at the
    mean centred vector of its items, every level scaled to the mean norm of the other rows."""
    from sidrec.models.sid_init import init_sid_embeddings_from_text

    emb = tiny_model.get_input_embeddings().weight
    before = emb.detach().clone()
    items = list(small_data.catalog.items.values())
    vec = {}
    for it in items:  # by hand, item by item
        ids = small_tokenizer(it.title, add_special_tokens=False)["input_ids"]
        vec[it.item_id] = before[ids].mean(0)
    centre = torch.stack(list(vec.values())).mean(0)
    first = sorted({it.sid[: it.sid.index(">") + 1] for it in items})
    expected = torch.stack(
        [torch.stack([vec[it.item_id] - centre for it in items if it.sid.startswith(code)]).mean(0) for code in first]
    )
    sid_tokens = small_data.catalog.vocab.level_tokens()
    sid_ids = set(small_tokenizer.convert_tokens_to_ids(sid_tokens))
    other_norm = before[[i for i in range(len(before)) if i not in sid_ids]].norm(dim=1).mean()

    n = init_sid_embeddings_from_text(tiny_model, small_tokenizer, small_data.catalog, from_scratch=False)

    assert n == len(sid_tokens)
    got = emb.detach()[small_tokenizer.convert_tokens_to_ids(first)]
    scale = other_norm / expected.norm(dim=1).mean()
    torch.testing.assert_close(got, expected * scale, rtol=1e-4, atol=1e-6)
    # the other rows are untouched
    keep = [i for i in range(len(before)) if i not in sid_ids]
    assert torch.equal(emb.detach()[keep], before[keep])


def test_cpu_loss_scores_only_labelled_positions_and_matches_the_full_logits(
    small_data, small_tokenizer, tiny_model, tmp_path, monkeypatch
):
    import inspect

    import trl.kernels
    import trl.trainer.utils as tu

    from sidrec.patches import apply_patches
    from sidrec.trainers import SidSFTTrainer

    # TRL's fused head decides compact scoring with this name; if TRL renames it, the speed-up is gone: fail here
    assert "compact = _use_triton(hidden_states.device)" in inspect.getsource(tu.add_fused_lm_head)
    examples = build_tasks(["sid_seq"], small_data.splits["train"][:6], small_data.catalog)
    ds = to_hf_dataset(fit_to_length(examples, small_tokenizer, 256))
    assert apply_patches() == ["trl.trainer.utils._use_triton: score_labelled_positions_on_cpu"]
    trainer = SidSFTTrainer(
        model=tiny_model, args=sft_args(tmp_path), train_dataset=ds, processing_class=small_tokenizer
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])
    rows = []
    original = trl.kernels.ChunkedLogProbFunction.apply

    def spy(hidden, *args):
        rows.append(hidden.shape[0])
        return original(hidden, *args)

    monkeypatch.setattr(tu._ChunkedLogProbFunction, "apply", spy)
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch))
        # the reference: the model's own full logits, cross-entropy on the completion tokens only
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels.flatten(), ignore_index=-100)
    # each row's completion is its SID's 3 tokens and EOS: 4 scored positions per row, not every padded position
    assert rows == [6 * 4] and batch["input_ids"].numel() > 6 * 4 * 3
    assert torch.allclose(loss, expected, atol=1e-5)


def test_sft_step_benchmark_runs_both_modes_on_the_same_batches(small_data_dir, tmp_path):
    import yaml

    from tests.conftest import REPO
    from tests.helpers import bench

    # the demo recipe with sid_seq rows only, 8 to a batch: every completion is one 3-token SID + EOS
    config = yaml.safe_load(open(os.path.join(REPO, "recipes/demo/sft.yaml")))
    config.update(sft_tasks=["sid_seq"], per_device_train_batch_size=8)
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(config))
    summary = bench(
        "bench_sft_step.py", "--config", str(path), "--data_dir", small_data_dir, "--category", "Synthetic",
        "--batches", "2", "--repeats", "1", "--threads", "1",
    )  # fmt: skip
    # 2 batches x 8 rows x (3 SID tokens + EOS) = 64 labelled tokens, the prompts being most of the batch; both modes
    # score the same tokens, so their losses agree
    assert summary["labelled_tokens"] == 2 * 8 * 4
    assert summary["tokens"] > 2 * summary["labelled_tokens"]
    assert summary["max_loss_diff"] < 1e-5
    assert (summary["batches"], summary["repeats"], summary["threads"]) == (2, 1, 1)


def test_tiny_model_unties_its_output_layer_on_request(small_tokenizer):
    shape = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 64}
    tied = build_tiny_model(small_tokenizer, **shape)
    untied = build_tiny_model(small_tokenizer, **shape, tie_word_embeddings=False)
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight
    # the untied model has one more vocab x hidden matrix, and nothing else more
    extra = sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters())
    assert extra == len(small_tokenizer) * 32


def _checkpoint(model, out_dir, step, value, shard=None):
    """Save ``model`` with every weight set to ``value`` as ``out_dir/checkpoint-<step>``; returns its path."""
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    path = os.path.join(out_dir, f"checkpoint-{step}")
    model.save_pretrained(path, **({"max_shard_size": shard} if shard else {}))
    return path


@pytest.mark.parametrize("shard", [None, "40KB"], ids=["one-file", "sharded"])
@pytest.mark.parametrize("average_scores_higher", [True, False])
def test_checkpoint_average_is_the_mean_from_the_best_on_and_kept_only_if_it_ranks_better(
    tiny_model, tmp_path, average_scores_higher, shard
):
    from sidrec.models.averaging import average_checkpoints_from_best

    out = str(tmp_path)
    assert tiny_model.config.tie_word_embeddings  # the tied LM head is stored once in the checkpoints
    _checkpoint(tiny_model, out, 100, 10.0, shard)  # before the best: not averaged
    best = _checkpoint(tiny_model, out, 200, 1.0, shard)
    _checkpoint(tiny_model, out, 300, 2.0, shard)
    _checkpoint(tiny_model, out, 1200, 6.0, shard)  # step 1200 sorts after 300 by number, not by name
    _checkpoint(
        tiny_model, out, 200, 1.0, shard
    )  # the model holds the best weights again, as after load_best_model_at_end
    if shard:
        assert not os.path.exists(os.path.join(best, "model.safetensors"))
        assert len(set(json.load(open(os.path.join(best, "model.safetensors.index.json")))["weight_map"].values())) > 1

    def rank():  # a stand-in score that reads the weights: mean 3 (the average) vs 1 (the best)
        mean = tiny_model.lm_head.weight.mean().item()
        return {"ndcg@10": mean / 10 if average_scores_higher else 1 / mean, "hr@10": 0.5}

    best_metric = rank()["ndcg@10"]  # the best checkpoint's own score: 0.1, or 1
    record = average_checkpoints_from_best(tiny_model, out, best, best_metric=best_metric, rank=rank)
    assert record["checkpoints"] == ["checkpoint-200", "checkpoint-300", "checkpoint-1200"]
    assert record["metrics"]["eval_ndcg@10"] == pytest.approx(0.3 if average_scores_higher else 1 / 3)
    assert record["kept"] is average_scores_higher and record["best_metric"] == best_metric
    expected = 3.0 if average_scores_higher else 1.0  # (1 + 2 + 6) / 3, or the best weights put back
    for name, p in tiny_model.named_parameters():
        assert torch.equal(p, torch.full_like(p, expected)), name
    assert tiny_model.lm_head.weight is tiny_model.model.embed_tokens.weight


def test_checkpoint_average_needs_two_checkpoints(tiny_model, tmp_path):
    from sidrec.models.averaging import average_checkpoints_from_best

    last = _checkpoint(tiny_model, str(tmp_path), 5, 1.0)
    assert average_checkpoints_from_best(tiny_model, str(tmp_path), last, 0.1, rank=None) is None
