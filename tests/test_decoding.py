import logging
import random
from types import SimpleNamespace

import pytest
import torch

from sidrec import decoding
from sidrec.data.prompts import fit_to_length
from sidrec.data.tasks import build_sid_seq
from sidrec.decoding import rank_items, rankings_match, supports_tree_attention
from sidrec.errors import UserError
from sidrec.models.tiny import build_local_tokenizer, build_tiny_model
from sidrec.sid import SidVocab


def prompts(data, tok, n=6):
    return [r["prompt"] for r in fit_to_length(build_sid_seq(data.splits["test"][:n]), tok, 512)]


@pytest.mark.parametrize("decoder", ["tree", "generate"])
@pytest.mark.parametrize("num_beams", [1, 4, 10, 20])
def test_every_ranked_sid_is_a_distinct_catalog_sid(small_data, small_tokenizer, tiny_model, num_beams, decoder):
    # level 1 has 3 codes: beams > valid first tokens for num_beams >= 4
    trie = small_data.catalog.vocab.compile(small_tokenizer)
    ranked = rank_items(
        tiny_model,
        small_tokenizer,
        prompts(small_data, small_tokenizer),
        trie,
        num_beams,
        batch_size=4,
        show_progress=False,
        decoder=decoder,
    )
    valid = set(small_data.catalog.vocab.strings())
    assert ranked.invalid == 0
    for sids, scores in zip(ranked.sids, ranked.scores, strict=False):
        assert len(sids) == num_beams
        assert len(set(sids)) == num_beams
        assert set(sids) <= valid
        assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("decoder", ["tree", "generate"])
def test_scores_are_sums_of_log_probs(small_data, small_tokenizer, tiny_model, decoder):
    trie = small_data.catalog.vocab.compile(small_tokenizer)
    p = prompts(small_data, small_tokenizer, 1)
    ranked = rank_items(tiny_model, small_tokenizer, p, trie, 5, show_progress=False, decoder=decoder)
    for sid, score in zip(ranked.sids[0], ranked.scores[0], strict=False):
        ids = small_tokenizer(p[0] + sid, add_special_tokens=False, return_tensors="pt")["input_ids"]
        ids = torch.cat([ids, torch.tensor([[small_tokenizer.eos_token_id]])], dim=1)
        with torch.no_grad():
            logp = torch.log_softmax(tiny_model(ids).logits[0, :-1].float(), -1)
        n = trie.sid_length + 1
        expected = logp[-n:].gather(1, ids[0, -n:, None]).sum().item()
        assert score == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("decoder", ["tree", "generate"])
def test_batching_does_not_change_rankings(small_data, small_tokenizer, tiny_model, decoder):
    trie = small_data.catalog.vocab.compile(small_tokenizer)
    p = prompts(small_data, small_tokenizer, 5)
    one = rank_items(tiny_model, small_tokenizer, p, trie, 8, batch_size=1, show_progress=False, decoder=decoder)
    many = rank_items(tiny_model, small_tokenizer, p, trie, 8, batch_size=5, show_progress=False, decoder=decoder)
    assert rankings_match(one, many, tol=1e-5)


def random_catalog(seed: int, levels: int, codes: tuple[int, ...], num_items: int) -> SidVocab:
    rng = random.Random(seed)
    names = "abcdefgh"
    return SidVocab.from_sids(
        tuple(f"<{names[level]}_{rng.randrange(codes[level])}>" for level in range(levels)) for _ in range(num_items)
    )


@pytest.mark.parametrize(
    "seed,levels,codes,num_items",
    [(0, 3, (3, 6, 8), 40), (1, 2, (5, 30), 60), (2, 4, (2, 3, 3, 4), 50)],
)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_tree_search_equals_generate_on_random_catalogs(seed, levels, codes, num_items, attn):
    vocab = random_catalog(seed, levels, codes, num_items)
    rng = random.Random(seed)
    words = ["user", "bought", "items", "next", "then", "cable", "tool", "glove"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 12))) for _ in range(9)]
    tokenizer = build_local_tokenizer(texts, 300, vocab)
    model = build_tiny_model(
        tokenizer, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64, seed=seed
    )
    model.config._attn_implementation = attn
    trie = vocab.compile(tokenizer)
    # prompts of different lengths share a batch (left padding), some end in SID tokens as real prompts do
    batch = [t + " " + "".join(vocab.strings()[i]) for i, t in enumerate(texts)]
    # first-level codes <= 5 < most widths: step 1 has fewer valid tokens than beams
    for num_beams in (1, 2, 7, 16, len(vocab)):
        gen = rank_items(model, tokenizer, batch, trie, num_beams, 4, show_progress=False, decoder="generate")
        tree = rank_items(model, tokenizer, batch, trie, num_beams, 4, show_progress=False, decoder="tree")
        assert tree.invalid == 0
        assert all(len(set(s)) == len(s) == num_beams for s in tree.sids)
        assert rankings_match(gen, tree, tol=1e-4), num_beams


def test_auto_falls_back_to_generate_for_attention_without_4d_masks(small_data, small_tokenizer, caplog, monkeypatch):
    model = build_tiny_model(small_tokenizer, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1)
    assert supports_tree_attention(model)
    assert not supports_tree_attention(
        SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2"))
    )
    trie = small_data.catalog.vocab.compile(small_tokenizer)
    p = prompts(small_data, small_tokenizer, 2)
    calls = []
    monkeypatch.setattr(decoding, "supports_tree_attention", lambda m: False)
    monkeypatch.setattr(decoding, "_tree_search", lambda *a: calls.append(a))
    with pytest.raises(UserError, match="decoder=tree needs eager or sdpa"):
        rank_items(model, small_tokenizer, p, trie, 4, show_progress=False, decoder="tree")
    with caplog.at_level(logging.WARNING):
        ranked = rank_items(model, small_tokenizer, p, trie, 4, show_progress=False, decoder="auto")
    assert "falling back to HF generate" in caplog.text
    assert not calls and ranked.invalid == 0 and all(len(s) == 4 for s in ranked.sids)


def test_too_many_beams_is_an_error(small_data, small_tokenizer, tiny_model):
    trie = small_data.catalog.vocab.compile(small_tokenizer)
    with pytest.raises(UserError, match="num_beams=49 is larger than the catalog's 48"):
        rank_items(tiny_model, small_tokenizer, ["x"], trie, 49)


def test_decoding_benchmark_runs_and_reports():
    from tests.helpers import bench

    summary = bench(
        "bench_decoding.py", "--synthetic", "--beams", "6", "--slow_users", "3", "--fast_users", "5",
        "--fast_batch", "2", "--repeats", "1", "--threads", "1", "--rollout_prompts", "2",
    )  # fmt: skip
    # it ranked what was asked: 3 users by every method, 5 by the tree search and the floor, 6 beams, and a GRPO
    # rollout of 2 prompts x G=16
    assert (summary["users_slow"], summary["users_fast"], summary["num_beams"]) == (3, 5, 6)
    assert [r["num_beams"] for r in summary["by_beams"]] == [6]
    assert (summary["grpo_rollout"]["prompts"], summary["grpo_rollout"]["group"]) == (2, 16)
    # the tree search's top-6 lists are the reference decoder's (HF generate + processor) on the 3 users both ranked,
    # in the same order, every SID a catalog SID (the speed figures are for the benchmark to report, not a test)
    assert summary["identical_topk"] is True and summary["by_beams"][0]["exact_topk"] is True
    assert summary["invalid"] == 0 and summary["grpo_rollout"]["invalid"] == 0


def test_decoding_benchmark_catalog_sizes():
    from tests.helpers import bench

    summary = bench(
        "bench_decoding.py", "--catalog-sizes", "300,3000", "--repeats", "2", "--fast_users", "3",
        "--slow_users", "2", "--beams", "5", "--threads", "1",
    )  # fmt: skip
    rows = summary["rows"]
    # one row per requested size, each trie holding exactly that many SIDs; 3 users ranked with 5 beams, 2 of them
    # (min(slow_users, 8)) by the reference decoder too
    assert [(r["catalog_size"], r["trie_sids"]) for r in rows] == [(300, 300), (3000, 3000)]
    assert [(r["users"], r["num_beams"], r["reference_users"]) for r in rows] == [(3, 5, 2), (3, 5, 2)]
    for r in rows:
        # one root, then the distinct 1- and 2-code prefixes: never fewer than the level above, never more than the
        # 256 codes of a level or the catalog's SIDs
        root, first, second = r["distinct_prefixes"]
        assert root == 1 <= first <= min(256, r["catalog_size"]) and first <= second <= r["catalog_size"]
        assert r["identical_topk"] is True and r["invalid"] == 0
    assert summary["identical_topk"] is True and summary["repeats"] == 2 and summary["threads"] == 1
