import pytest
import torch

from sidrec.data.prompts import build_sid_seq, fit_to_length
from sidrec.decoding import rank_items
from sidrec.utils import UserError


def prompts(data, tok, n=6):
    return [r["prompt"] for r in fit_to_length(build_sid_seq(data.splits["test"][:n]), tok, 512)]


@pytest.mark.parametrize("num_beams", [1, 4, 10, 20])
def test_every_ranked_sid_is_a_distinct_catalog_sid(small_data, small_tokenizer, tiny_model, num_beams):
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
    )
    valid = set(small_data.catalog.vocab.strings())
    assert ranked.invalid == 0
    for sids, scores in zip(ranked.sids, ranked.scores, strict=False):
        assert len(sids) == num_beams
        assert len(set(sids)) == num_beams
        assert set(sids) <= valid
        assert scores == sorted(scores, reverse=True)


def test_scores_are_sums_of_log_probs(small_data, small_tokenizer, tiny_model):
    trie = small_data.catalog.vocab.compile(small_tokenizer)
    p = prompts(small_data, small_tokenizer, 1)
    ranked = rank_items(tiny_model, small_tokenizer, p, trie, 5, show_progress=False)
    for sid, score in zip(ranked.sids[0], ranked.scores[0], strict=False):
        ids = small_tokenizer(p[0] + sid, add_special_tokens=False, return_tensors="pt")["input_ids"]
        ids = torch.cat([ids, torch.tensor([[small_tokenizer.eos_token_id]])], dim=1)
        with torch.no_grad():
            logp = torch.log_softmax(tiny_model(ids).logits[0, :-1].float(), -1)
        n = trie.sid_length + 1
        expected = logp[-n:].gather(1, ids[0, -n:, None]).sum().item()
        assert score == pytest.approx(expected, abs=1e-3)


def test_batching_does_not_change_rankings(small_data, small_tokenizer, tiny_model):
    trie = small_data.catalog.vocab.compile(small_tokenizer)
    p = prompts(small_data, small_tokenizer, 5)
    one = rank_items(tiny_model, small_tokenizer, p, trie, 8, batch_size=1, show_progress=False)
    many = rank_items(tiny_model, small_tokenizer, p, trie, 8, batch_size=5, show_progress=False)
    assert one.sids == many.sids


def test_too_many_beams_is_an_error(small_data, small_tokenizer, tiny_model):
    trie = small_data.catalog.vocab.compile(small_tokenizer)
    with pytest.raises(UserError, match="num_beams=49 is larger than the catalog's 48"):
        rank_items(tiny_model, small_tokenizer, ["x"], trie, 49)
