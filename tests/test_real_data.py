"""MiniOneRec's published Industrial_and_Scientific files (../shared/data/Amazon); skipped when absent."""

import os

import pytest

from sidrec.data import load_rec_dataset
from sidrec.data.prompts import fit_to_length
from sidrec.data.tasks import build_sid_seq, build_tasks
from sidrec.models.tiny import build_local_tokenizer, tokenizer_corpus

from .conftest import REAL_DATA

pytestmark = [
    pytest.mark.real_data,
    pytest.mark.skipif(
        not os.path.isdir(REAL_DATA), reason=f"real data not found at {REAL_DATA} (a fresh clone has no ../shared)"
    ),
]


@pytest.fixture(scope="module")
def industrial():
    return load_rec_dataset(REAL_DATA, "Industrial_and_Scientific")


def test_industrial_loads_with_published_counts(industrial):
    assert {k: len(v) for k, v in industrial.splits.items()} == {"train": 10393, "valid": 4532, "test": 4533}
    assert len(industrial.catalog.items) == 3686
    assert len(industrial.catalog.vocab) == 3670 and industrial.catalog.num_collisions == 16
    assert industrial.catalog.sid_length == 3


def test_industrial_trie_and_prompts(industrial):
    cat = industrial.catalog
    examples = build_tasks(["sid_seq", "item_alignment"], industrial.splits["train"], cat)
    tok = build_local_tokenizer(tokenizer_corpus(cat, examples), 2048, cat.vocab)
    trie = cat.vocab.compile(tok)
    assert trie.num_sids == 3670
    first_codes = {sid[0] for sid in cat.vocab.sids}
    assert trie.level_token_ids[0].numel() == len(first_codes)
    # every test prompt fits the reference cutoff without trimming
    records = fit_to_length(build_sid_seq(industrial.splits["test"]), tok, 512)
    assert all(
        r["prompt"].count("<a_") == len(row.history_sids)
        for r, row in zip(records, industrial.splits["test"], strict=False)
    )
