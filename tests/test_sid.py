import itertools
import random

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from sidrec.sid import SidVocab, parse_sid


def make_tokenizer(vocab: SidVocab) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models

    base = {"<|endoftext|>": 0, "<|pad|>": 1, "x": 2}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(base, unk_token="x")),
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
    )
    tok.add_tokens(vocab.level_tokens())
    return tok


def random_vocab(rng: random.Random, n: int, levels: int = 3, codes: int = 5) -> SidVocab:
    letters = "abcd"
    sids = {tuple(f"<{letters[level]}_{rng.randrange(codes)}>" for level in range(levels)) for _ in range(n)}
    return SidVocab.from_sids(sids)


def test_parse_sid_ok_and_malformed():
    assert parse_sid("<a_1><b_22><c_333>") == ("<a_1>", "<b_22>", "<c_333>")
    for bad in ["", "<a_1><b_2", "a_1", "<a_1> <b_2>", "<a_x>", "<a_1>junk"]:
        with pytest.raises(ValueError, match="malformed SID"):
            parse_sid(bad)


def test_vocab_rejects_ragged():
    with pytest.raises(ValueError, match="same number of levels"):
        SidVocab.from_sids(["<a_1><b_2>", "<a_1><b_2><c_3>"])


def test_vocab_dedups_shared_sids():
    vocab = SidVocab.from_sids(["<a_1><b_2>", "<a_1><b_2>", "<a_0><b_2>"])
    assert vocab.strings() == ["<a_0><b_2>", "<a_1><b_2>"]


@pytest.mark.parametrize("seed", range(5))
def test_blocked_mask_matches_brute_force(seed):
    rng = random.Random(seed)
    vocab = random_vocab(rng, n=rng.randint(3, 40), levels=rng.choice([2, 3]))
    tok = make_tokenizer(vocab)
    trie = vocab.compile(tok)
    valid = {tuple(tok.convert_tokens_to_ids(list(s))) for s in vocab.sids}
    length = vocab.sid_length
    V = len(tok) + 3  # padded model vocab: extra ids must be blocked too
    sid_ids = sorted({i for s in valid for i in s})
    alphabet = sid_ids + [0, 2]
    for step in range(length + 1):
        # every prefix over a small alphabet that includes invalid tokens
        prefixes = list(itertools.product(alphabet, repeat=step))
        rng.shuffle(prefixes)
        prefixes = prefixes[:300]
        suffix = torch.tensor(prefixes, dtype=torch.long).view(len(prefixes), step)
        blocked = trie.blocked_mask(suffix, V)
        for row, prefix in enumerate(prefixes):
            if step < length:
                allowed = {s[step] for s in valid if s[:step] == prefix}
            else:
                allowed = {tok.eos_token_id} if prefix in valid else set()
            got = set(torch.nonzero(~blocked[row]).flatten().tolist())
            assert got == allowed, (step, prefix)


def test_eos_only_after_complete_sid():
    vocab = SidVocab.from_sids(["<a_1><b_1><c_1>", "<a_1><b_2><c_3>"])
    tok = make_tokenizer(vocab)
    trie = vocab.compile(tok)
    ids = [tok.convert_tokens_to_ids(list(s)) for s in vocab.sids]
    for step in range(3):
        blocked = trie.blocked_mask(torch.tensor([ids[0][:step]], dtype=torch.long).view(1, step), len(tok))
        assert blocked[0, tok.eos_token_id]
    blocked = trie.blocked_mask(torch.tensor([ids[1]]), len(tok))
    assert (~blocked[0]).nonzero().flatten().tolist() == [tok.eos_token_id]


def test_walk_returns_sid_index():
    vocab = SidVocab.from_sids(["<a_1><b_1>", "<a_1><b_2>", "<a_2><b_1>"])
    tok = make_tokenizer(vocab)
    trie = vocab.compile(tok)
    full = torch.tensor([tok.convert_tokens_to_ids(list(s)) for s in vocab.sids])
    assert trie.walk(full).tolist() == [0, 1, 2]
    bad = torch.tensor([tok.convert_tokens_to_ids(["<a_2>", "<b_2>"])])
    assert trie.walk(bad).tolist() == [-1]


def test_compile_fails_without_sid_tokens():
    vocab = SidVocab.from_sids(["<a_1><b_1>"])
    other = make_tokenizer(SidVocab.from_sids(["<a_1><b_9>"]))
    with pytest.raises(ValueError, match="not in the tokenizer"):
        vocab.compile(other)
