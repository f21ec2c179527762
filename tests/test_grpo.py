import inspect

import pytest
import torch
from datasets import Dataset
from trl import GRPOTrainer

from sidrec.configs import SidrecGRPOConfig
from sidrec.data.prompts import fit_to_length
from sidrec.data.tasks import build_sid_seq
from sidrec.errors import UserError
from sidrec.models.tiny import build_tiny_model
from sidrec.rewards import get_reward_funcs
from sidrec.trainers import SidGRPOTrainer


def test_trl_hooks_keep_their_signatures(small_data, small_tokenizer, sft_checkpoint, tmp_path, monkeypatch):
    # rollout_func is our rollout hook (the few-step test shows its extra fields reach the rewards); checkpoints carry
    # the synced reference model through the two Trainer methods; the ranking eval overrides evaluation_loop.
    # A renamed hook would leave ours silently unused, so besides the signatures a 1-step run, and a resume from its
    # checkpoint, must go through every one of them.
    from safetensors.torch import load_file
    from transformers import Trainer

    from sidrec.trainers import REF_MODEL_CHECKPOINT

    assert "rollout_func" in inspect.signature(GRPOTrainer.__init__).parameters
    assert list(inspect.signature(GRPOTrainer._save_checkpoint).parameters) == ["self", "model", "trial"]
    assert list(inspect.signature(GRPOTrainer._load_optimizer_and_scheduler).parameters) == ["self", "checkpoint"]
    # guide_target hands the rows' targets to the rollout through this one (its test runs it)
    assert list(inspect.signature(GRPOTrainer._generate_and_score_completions).parameters) == ["self", "inputs"]
    params = list(inspect.signature(Trainer.evaluation_loop).parameters)
    assert params == ["self", "dataloader", "description", "prediction_loss_only", "ignore_keys", "metric_key_prefix"]

    calls, ref_after_load = [], {}

    def spy(name):
        original = getattr(SidGRPOTrainer, name)

        def recorded(self, *args, **kwargs):
            calls.append(name)
            out = original(self, *args, **kwargs)
            if name == "_load_optimizer_and_scheduler":
                ref_after_load.update({n: t.clone() for n, t in self.ref_model.state_dict().items()})
            return out

        return recorded

    for name in ("_sid_rollout", "evaluation_loop", "_save_checkpoint", "_load_optimizer_and_scheduler"):
        monkeypatch.setattr(SidGRPOTrainer, name, spy(name))

    class FixedRanking:
        """A ranking eval whose score is known: an eval_ndcg@10 of 0.25 can only have come from our evaluation_loop."""

        rows = [None]

        def rank(self, model, tokenizer, process_index, num_processes):
            return {}

        def score(self, shares):
            return {"hr@10": 0.5, "ndcg@10": 0.25}

    def first_wins(completions, **kwargs):  # a signal inside every group, so the policy (and the synced ref) moves
        return [float(c == completions[0]) for c in completions]

    def trainer(max_steps):
        return SidGRPOTrainer(
            model=sft_checkpoint,
            reward_funcs=[first_wins],
            args=grpo_args(tmp_path, max_steps=max_steps, eval_strategy="steps", eval_steps=1, ranking_eval_rows=1),
            train_dataset=dataset(small_data, small_tokenizer),
            eval_dataset=dataset(small_data, small_tokenizer),
            processing_class=small_tokenizer,
            sid_trie=small_data.catalog.vocab.compile(small_tokenizer),
            ranking_eval=FixedRanking(),
        )

    # step 1: one rollout, then Trainer evaluates (our metrics pick the best checkpoint) and saves (with the ref model)
    first = trainer(1)
    first.train()
    assert calls == ["_sid_rollout", "evaluation_loop", "_save_checkpoint"]
    evals = [(h["step"], h["eval_hr@10"], h["eval_ndcg@10"]) for h in first.state.log_history if "eval_hr@10" in h]
    assert evals == [(1, 0.5, 0.25)]
    assert first.state.best_metric == 0.25
    checkpoint = str(tmp_path / "grpo" / "checkpoint-1")
    assert first.state.best_model_checkpoint == checkpoint
    saved = load_file(str(tmp_path / "grpo" / "checkpoint-1" / REF_MODEL_CHECKPOINT))
    synced = first.ref_model.state_dict()  # the file keeps one name of the tied embedding / LM head pair
    assert len(saved) == len(list(first.ref_model.parameters()))
    assert all(torch.equal(saved[n], synced[n]) for n in saved)

    # resume to step 2: Trainer loads the optimizer through our hook, which restores the synced reference model
    calls.clear()
    second = trainer(2)
    start = second.ref_model.state_dict()
    assert any(not torch.equal(start[n], saved[n]) for n in saved)  # the sync moved it away from the SFT weights
    second.train(resume_from_checkpoint=checkpoint)
    assert calls == ["_load_optimizer_and_scheduler", "_sid_rollout", "evaluation_loop", "_save_checkpoint"]
    assert ref_after_load and all(torch.equal(ref_after_load[n], saved[n]) for n in saved)


@pytest.fixture()
def sft_checkpoint(small_tokenizer, tmp_path):
    model = build_tiny_model(
        small_tokenizer, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64
    )
    path = str(tmp_path / "sft")
    model.save_pretrained(path)
    small_tokenizer.save_pretrained(path)
    return path


def grpo_args(tmp_path, **kw):
    base = {
        "output_dir": str(tmp_path / "grpo"),
        "max_steps": 1,
        "per_device_train_batch_size": 8,
        "num_generations": 4,
        "max_completion_length": 4,
        "learning_rate": 1e-2,
        "beta": 0.1,
        "sync_ref_model": True,
        "ref_model_sync_steps": 1,
        "ref_model_mixup_alpha": 0.5,
        "bf16": False,
        "use_cpu": True,
        "report_to": [],
        "save_strategy": "no",
        "logging_steps": 1,
        "seed": 0,
    }
    base.update(kw)
    return SidrecGRPOConfig(**base)


def dataset(data, tok):
    records = fit_to_length(build_sid_seq(data.splits["train"][:16]), tok, 256)
    return Dataset.from_dict(
        {"prompt": [r["prompt"] for r in records], "target_sid": [r["target_sid"] for r in records]}
    )


def completion_logprob(model, tokenizer, prompt: str, completion_ids: list[int]) -> float:
    """Sum of the completion tokens' log-probabilities (over the whole vocabulary), teacher-forced."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    steps = range(len(prompt_ids) - 1, ids.shape[1] - 1)
    return sum(logp[t, ids[0, t + 1]].item() for t in steps)


@pytest.mark.parametrize("beam_search", [True, False])
def test_few_step_grpo(small_data, small_tokenizer, sft_checkpoint, tmp_path, beam_search):
    from transformers import AutoModelForCausalLM

    seen = []

    def recorder(prompts, completions, completion_ids, target_sid, **kw):
        seen.append((list(prompts), list(completions), [list(c) for c in completion_ids], kw.get("beam_rank")))
        return [
            float(c == completions[0]) for c in completions
        ]  # a signal, so advantages (and the update) are non-zero

    recorder.__name__ = "recorder"
    trie = small_data.catalog.vocab.compile(small_tokenizer)
    trainer = SidGRPOTrainer(
        model=sft_checkpoint,
        reward_funcs=[*get_reward_funcs(["ranking" if beam_search else "rule"]), recorder],
        args=grpo_args(tmp_path, beam_search=beam_search, reward_funcs=["ranking" if beam_search else "rule"]),
        train_dataset=dataset(small_data, small_tokenizer),
        processing_class=small_tokenizer,
        sid_trie=trie,
        beam_search=beam_search,
    )
    policy0 = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    ref0 = {n: p.detach().clone() for n, p in trainer.ref_model.named_parameters()}
    trainer.train()

    # rollouts: every completion a catalog SID followed by EOS, two prompts x G=4 in TRL's layout
    prompts, completions, ids, ranks = seen[0]
    assert set(completions) <= set(small_data.catalog.vocab.strings())
    assert prompts[:4] == [prompts[0]] * 4 and prompts[4:] == [prompts[4]] * 4
    assert all(c[-1] == small_tokenizer.eos_token_id for c in ids)
    if beam_search:
        assert len(set(completions[:4])) == 4 and len(set(completions[4:])) == 4
        # beam_rank is each completion's true rank by its log-probability under the policy that made the rollout
        start = AutoModelForCausalLM.from_pretrained(sft_checkpoint).eval()
        for lo in (0, 4):
            scores = [completion_logprob(start, small_tokenizer, prompts[i], ids[i]) for i in range(lo, lo + 4)]
            by_score = sorted(range(4), key=lambda i: -scores[i])
            assert [by_score.index(i) for i in range(4)] == ranks[lo : lo + 4], scores
    else:
        assert ranks is None  # samples carry no rank (ndcg_rule refuses them)

    # the policy moved, and the reference was synced by the mixup rule: ref = a * policy + (1 - a) * ref
    policy = dict(trainer.model.named_parameters())
    assert any(not torch.equal(policy0[n], p.detach()) for n, p in policy.items())
    for n, r in trainer.ref_model.named_parameters():
        assert torch.allclose(r.detach(), 0.5 * policy[n].detach() + 0.5 * ref0[n], atol=1e-6), n


def test_group_guards(small_data, small_tokenizer, sft_checkpoint, tmp_path):
    trie = small_data.catalog.vocab.compile(small_tokenizer)
    kwargs = {
        "model": sft_checkpoint,
        "reward_funcs": get_reward_funcs(["rule"]),
        "train_dataset": dataset(small_data, small_tokenizer),
        "processing_class": small_tokenizer,
        "sid_trie": trie,
    }
    with pytest.raises(UserError, match="larger than the catalog's 48"):
        SidGRPOTrainer(args=grpo_args(tmp_path, num_generations=64, per_device_train_batch_size=64), **kwargs)


def test_group_must_not_span_processes():
    from types import SimpleNamespace

    from sidrec.configs import SidrecGRPOConfig

    check_group_layout = SidrecGRPOConfig.check_group_layout
    # 2 processes x 2 prompts each = 4 = G passes TRL's global check, but each group would span two processes
    with pytest.raises(UserError, match="must divide the per-process generation batch"):
        check_group_layout(
            SimpleNamespace(num_generations=4, per_device_train_batch_size=2, steps_per_generation=1), 48
        )
    check_group_layout(SimpleNamespace(num_generations=4, per_device_train_batch_size=2, steps_per_generation=2), 48)


def test_disable_attention_dropout(small_tokenizer):
    from sidrec.models.dropout import disable_attention_dropout

    model = build_tiny_model(
        small_tokenizer,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        intermediate_size=64,
        attention_dropout=0.5,
    )
    model.train()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    assert disable_attention_dropout(model) == 2
    assert torch.equal(model(ids).logits, model(ids).logits)  # deterministic in train mode now


def test_guide_target_puts_the_target_in_every_group(small_data, small_tokenizer, sft_checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM

    from sidrec.decoding import rank_items

    seen = []

    def recorder(prompts, completions, target_sid, beam_rank, **kw):
        seen.append((list(prompts), list(completions), list(target_sid), list(beam_rank)))
        return [0.0] * len(completions)

    recorder.__name__ = "recorder"
    trie = small_data.catalog.vocab.compile(small_tokenizer)
    trainer = SidGRPOTrainer(
        model=sft_checkpoint,
        reward_funcs=[*get_reward_funcs(["rule"]), recorder],
        args=grpo_args(tmp_path, guide_target=True, learning_rate=0.0, beta=0.0, sync_ref_model=False),
        train_dataset=dataset(small_data, small_tokenizer),
        processing_class=small_tokenizer,
        sid_trie=trie,
        guide_target=True,
    )
    trainer.train()

    prompts, completions, targets, ranks = seen[0]
    # the untrained start's own top-4 beams for the two prompts, by the same search the rollout runs
    start = AutoModelForCausalLM.from_pretrained(sft_checkpoint).eval()
    beams = rank_items(start, small_tokenizer, [prompts[0], prompts[4]], trie, 4, 8, show_progress=False)
    sids = small_data.catalog.vocab.strings()
    guided = 0
    for g, lo in enumerate((0, 4)):
        plain = [sids[i] for i in beams.indices[g]]
        target = targets[lo]
        assert targets[lo : lo + 4] == [target] * 4
        if target in plain:
            assert completions[lo : lo + 4] == plain
        else:  # the target takes the lowest beam's place; the other three are the model's beams, in order
            guided += 1
            assert completions[lo : lo + 4] == [*plain[:3], target]
        assert completions[lo : lo + 4].count(target) == 1
    assert guided >= 1  # an untrained model misses most targets among 48 SIDs: guidance did happen
    assert trainer.rollout_stats["guided_groups"] == guided
    # the replaced slot keeps the rank of the beam it replaced: each group's ranks are still a permutation
    assert sorted(ranks[:4]) == [0, 1, 2, 3] and sorted(ranks[4:]) == [0, 1, 2, 3]
    logged = [h["rollouts/guided_groups"] for h in trainer.state.log_history if "rollouts/guided_groups" in h]
    assert logged == [guided / 2]


def test_guide_target_needs_beam_search(tmp_path):
    with pytest.raises(UserError, match="guide_target: true puts the target among the beams"):
        grpo_args(tmp_path, guide_target=True, beam_search=False, reward_funcs=["rule"])
