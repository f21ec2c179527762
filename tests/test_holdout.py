"""The RL holdout (issue 30): each user's latest train row is held out of SFT and prompts GRPO instead. Leak-free:
no SFT example carries a held-out interaction of its user, GRPO sees only train rows, and on the real data the held-out
interaction is the last one before the user's valid row."""

import json
import os
import re

import pytest

from sidrec.data import load_rec_dataset
from sidrec.data.holdout import grpo_rows, sft_rows, split_latest_per_user
from sidrec.data.minionerec import Interaction
from sidrec.data.tasks import build_tasks
from sidrec.errors import UserError

from .conftest import REPO

GAMES = os.path.join(REPO, "..", "shared", "data", "Games")
ROW_TASKS = ["sid_seq", "sid_last", "sid_prev", "title_seq2sid", "sid_pairs"]


def row(user, history, item):
    return Interaction(
        user, tuple(history), tuple(history), tuple(f"<a_{h}>" for h in history), item, item, f"<a_{item}>"
    )


def test_the_latest_row_of_each_user_is_held_out_by_hand():
    rows = [row("u1", ["1"], "2"), row("u1", ["1", "2"], "3"), row("u2", ["7"], "8"), row("u1", ["1", "2", "3"], "4")]
    rest, latest = split_latest_per_user(rows)
    assert [(r.user_id, r.item_id) for r in latest] == [("u2", "8"), ("u1", "4")]
    assert [(r.user_id, r.item_id) for r in rest] == [("u1", "2"), ("u1", "3")]
    assert sft_rows(rows, False, None) == (rows, 0)
    assert sft_rows(rows, True, None) == (rest, 2)
    assert grpo_rows(rows, "train", False, 2048) == rows
    assert grpo_rows(rows, "holdout", True, None) == latest


def test_holdout_refuses_what_would_break_it():
    shuffled = [row("u1", ["1", "2"], "3"), row("u1", ["1"], "2")]  # not in time order
    with pytest.raises(UserError, match=r"train.csv, row 2, field 'history_item_id': user u1's rows are not in time"):
        split_latest_per_user(shuffled, "train.csv")
    rows = [row("u1", ["1"], "2")]
    with pytest.raises(UserError, match="this checkpoint was trained on those rows: train it with rl_holdout: true"):
        grpo_rows(rows, "holdout", False, None)
    with pytest.raises(UserError, match="unset max_train_rows"):
        grpo_rows(rows, "holdout", True, 2048)
    with pytest.raises(UserError, match="unset max_train_rows"):
        sft_rows(rows, True, 100)


def _user_of_example(source: str, rows) -> str:
    return rows[int(re.search(r"row (\d+)$", source).group(1)) - 1].user_id


def test_no_sft_example_carries_a_held_out_interaction(small_data):
    train = small_data.splits["train"]
    rest, latest = sft_rows(train, True, None, "train.csv")
    held = {r.user_id: r for r in grpo_rows(train, "holdout", True, None, "train.csv")}
    assert len(rest) + len(held) == len(train) and len(held) == len({r.user_id for r in train})
    # the chain: every kept row's target is an earlier interaction of its user, in the held-out row's history
    # (histories are cut to the 10 most recent items, so an old one may have left it)
    for r in rest:
        h = held[r.user_id]
        assert r.item_id in h.history_item_ids or len(h.history_item_ids) == 10
    # each user's interactions before the held-out one: the first row's history and the kept rows' targets (a repeat
    # of an earlier item is not the held-out interaction)
    earlier = {}
    for r in train:
        earlier.setdefault(r.user_id, set(r.history_sids))
    for r in rest:
        earlier[r.user_id].add(r.item_sid)
    examples = build_tasks(ROW_TASKS, rest, small_data.catalog, "train.csv", 32, "compact")
    checked = 0
    for ex in examples:
        h = held[_user_of_example(ex.source, rest)]
        if h.item_sid in earlier[h.user_id]:
            continue
        text = ex.prompt() + ex.completion
        assert h.item_sid not in text, f"{ex.task} example of {h.user_id} shows the held-out item {h.item_sid}"
        checked += 1
    assert checked > len(examples) // 2


@pytest.mark.real_data
@pytest.mark.skipif(
    not os.path.isdir(GAMES), reason=f"Games data not found at {GAMES} (a fresh clone has no ../shared)"
)
def test_on_games_the_held_out_interaction_is_the_last_before_valid():
    data = load_rec_dataset(GAMES, "Video_Games")
    held = {r.user_id: r for r in grpo_rows(data.splits["train"], "holdout", True, None)}
    valid = {r.user_id: r for r in data.splits["valid"]}
    test = {r.user_id: r for r in data.splits["test"]}
    assert len(held) == 3810
    for user, h in held.items():
        # leave-one-out: the valid row's history ends with the held-out item, the test row's with the valid item
        assert valid[user].history_item_ids[-1] == h.item_id
        assert test[user].history_item_ids[-1] == valid[user].item_id


def test_sft_holds_out_and_grpo_prompts_with_exactly_those_rows(small_data_dir, small_data, tmp_path):
    from .helpers import TINY, recipe

    users = len({r.user_id for r in small_data.splits["train"]})
    sft = tmp_path / "sft"
    r = recipe(
        "sft", "recipes/demo/sft.yaml", *TINY, data_dir=small_data_dir, output_dir=sft, max_steps=2,
        eval_strategy="no", early_stopping_patience="null", rl_holdout="true", sft_tasks="sid_seq",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.load(open(sft / "run_summary.json"))
    assert summary["rl_holdout_rows"] == users
    # sid_seq makes one example per kept row: the train rows less one per user
    assert summary["metrics"]["num_train_examples"] == len(small_data.splits["train"]) - users
    assert json.load(open(sft / "config.json"))["sidrec_rl_holdout"] is True

    grpo = {"data_dir": small_data_dir, "model_name_or_path": sft, "max_steps": 1, "eval_strategy": "no"}
    r = recipe("grpo", "recipes/demo/grpo.yaml", **grpo, output_dir=tmp_path / "g", rl_rows="holdout",
               max_train_rows="null", early_stopping_patience="null")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.load(open(tmp_path / "g" / "run_summary.json"))["metrics"]["num_prompts"] == users
    # the demo GRPO recipe cuts the train rows (max_train_rows): refused with holdout rows
    r = recipe("grpo", "recipes/demo/grpo.yaml", **grpo, output_dir=tmp_path / "g2", rl_rows="holdout",
               max_train_rows=64, early_stopping_patience="null")  # fmt: skip
    assert r.returncode == 2 and "unset max_train_rows" in r.stderr and "Traceback" not in r.stderr
