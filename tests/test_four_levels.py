"""SIDs of four levels end to end: a synthetic catalog with 4-token SIDs through SFT, the trie and evaluation."""

import json

import pytest

from sidrec.data import load_rec_dataset
from sidrec.data.synthetic import SyntheticConfig, make_synthetic_dataset
from sidrec.sid import parse_sid

from .helpers import quick_sft, recipe

FOUR = SyntheticConfig(
    num_categories=3, subcategories_per_category=2, num_items=48, num_users=80, seed=0, sid_levels=4
)


@pytest.fixture(scope="module")
def four_level_dir(tmp_path_factory):
    return make_synthetic_dataset(str(tmp_path_factory.mktemp("four") / "synthetic"), FOUR)


def test_four_level_catalog_loads(four_level_dir):
    data = load_rec_dataset(four_level_dir, "Synthetic")
    assert data.catalog.vocab.sid_length == 4
    assert len(data.catalog.vocab) == 48 and data.catalog.num_collisions == 0
    first = data.catalog.vocab.sids[0]
    assert [t[1] for t in first] == ["a", "b", "c", "d"]


def test_sft_then_eval_on_four_level_sids(four_level_dir, tmp_path):
    data = load_rec_dataset(four_level_dir, "Synthetic")
    sft = quick_sft(four_level_dir, tmp_path / "sft", steps=60)
    r = recipe(
        "evaluate", "recipes/demo/eval.yaml", data_dir=four_level_dir, model_name_or_path=sft,
        output_dir=tmp_path / "eval", num_beams=10,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    with open(tmp_path / "eval" / "metrics.json") as f:
        metrics = json.load(f)
    with open(tmp_path / "eval" / "predictions.jsonl") as f:
        predictions = [json.loads(line) for line in f]
    catalog = set(data.catalog.vocab.strings())
    assert metrics["invalid"] == 0 and metrics["num_samples"] == len(data.splits["test"]) == len(predictions)
    for row in predictions:
        assert len(row["predictions"]) == 10 == len(set(row["predictions"]))
        assert all(len(parse_sid(s)) == 4 and s in catalog for s in row["predictions"])
    levels = metrics["per_level"]
    assert sorted(levels["independent"]) == ["exact", "level_1", "level_2", "level_3", "level_4"]
    assert list(levels["cumulative"]) == ["L1", "L1+L2", "L1+L2+L3", "L1+L2+L3+L4"]
    assert levels["cumulative"]["L1+L2+L3+L4"]["10"] == metrics["HR@10"]  # the 4-token prefix is the whole SID
    # It learnt something: 3 first-level codes, so a guess puts the right one first a third of the time.
    assert levels["top1_dropoff"]["L1_accuracy"] > 0.5
