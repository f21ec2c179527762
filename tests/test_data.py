import csv
import json
import logging
import os
import shutil

import pytest

from sidrec.data import DataValidationError, Interaction, last_history, load_rec_dataset
from sidrec.data.synthetic import SyntheticConfig, generate
from sidrec.errors import UserError


def test_synthetic_layout_and_counts(tmp_path):
    from sidrec.data.synthetic import make_synthetic_dataset

    # 8 items with 3-level SIDs; 10 users of exactly 12 events each. Every event after a user's first is the target of
    # one row: 10 x (12 - 1) = 110 rows, split 8:1:1 by the target's time into 88 train, 11 valid and 11 test rows.
    cfg = SyntheticConfig(
        num_categories=2, subcategories_per_category=2, num_items=8, num_users=10, min_events=12, max_events=12, seed=1
    )
    _, users = generate(cfg)
    data = load_rec_dataset(make_synthetic_dataset(str(tmp_path / "synthetic"), cfg), "Synthetic")
    assert len(data.catalog.items) == 8 and data.catalog.sid_length == 3
    assert [len(u) for u in users] == [12] * 10
    assert {name: len(rows) for name, rows in data.splits.items()} == {"train": 88, "valid": 11, "test": 11}

    # Each written row is one (user, event k >= 1): its history the user's (at most 10) most recent events before k,
    # oldest first, its target event k, with the catalog's titles and SIDs.
    found = {}
    for split, rows in data.splits.items():
        for r in rows:
            events = [(time, str(item)) for time, item in users[int(r.user_id.removeprefix("U"))]]
            ks = [
                k for k in range(1, len(events))
                if tuple(i for _, i in events[:k][-10:]) == r.history_item_ids and events[k][1] == r.item_id
            ]  # fmt: skip
            assert len(ks) == 1, (r, ks)
            assert (r.user_id, ks[0]) not in found
            found[(r.user_id, ks[0])] = (split, events[ks[0]][0])
            item = data.catalog.items[r.item_id]
            assert (r.item_sid, r.item_title) == (item.sid, item.title)
            assert r.history_sids == tuple(data.catalog.items[i].sid for i in r.history_item_ids)
    # every user's 11 targets appear once, in some split
    assert sorted(found) == sorted((f"U{u}", k) for u in range(10) for k in range(1, 12))
    # by time: every valid target is later than every train target, every test target later than every valid one
    times = {split: [t for s, t in found.values() if s == split] for split in ("train", "valid", "test")}
    assert max(times["train"]) <= min(times["valid"]) and max(times["valid"]) <= min(times["test"])


def test_synthetic_is_deterministic():
    cfg = SyntheticConfig(num_items=48, num_users=20, num_categories=3, subcategories_per_category=2, seed=3)
    assert generate(cfg) == generate(cfg)
    other = SyntheticConfig(num_items=48, num_users=20, num_categories=3, subcategories_per_category=2, seed=4)
    assert generate(cfg) != generate(other)


def test_synthetic_sids_are_hierarchical(small_data):
    # level 1 ~ category: items sharing a level-1 code share the category word in their title
    by_l1 = {}
    for item in small_data.catalog.items.values():
        by_l1.setdefault(item.sid.split(">")[0], set()).add(item.title.split()[2])
    assert len(by_l1) == 3
    assert all(len(words) == 1 for words in by_l1.values())


def test_synthetic_has_transition_structure(small_data):
    # the most frequent successor of an item is far above chance
    from collections import Counter, defaultdict

    nxt = defaultdict(Counter)
    for r in small_data.splits["train"]:
        nxt[r.history_item_ids[-1]][r.item_id] += 1
    top_share = sum(c.most_common(1)[0][1] for c in nxt.values()) / sum(sum(c.values()) for c in nxt.values())
    assert top_share > 5 / 48


def copy_data(src, tmp_path):
    dst = tmp_path / "d"
    shutil.copytree(src, dst)
    return str(dst)


def rewrite_csv(path, row_index, column, value):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    rows[row_index][rows[0].index(column)] = value
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def drop_column(path, column):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    i = rows[0].index(column)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([r[:i] + r[i + 1 :] for r in rows])


def edit_index(path, fn):
    with open(path) as f:
        data = json.load(f)
    fn(data)
    with open(path, "w") as f:
        json.dump(data, f)


TRAIN = "train/Synthetic_synthetic.csv"
INDEX = "index/Synthetic.index.json"
ITEMS = "index/Synthetic.item.json"


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda d: os.remove(os.path.join(d, TRAIN)), r"train/Synthetic\*\.csv: no file matches"),
        (
            lambda d: drop_column(os.path.join(d, TRAIN), "history_item_sid"),
            r"row 0: missing column.*history_item_sid",
        ),
        (
            lambda d: rewrite_csv(os.path.join(d, TRAIN), 3, "history_item_id", "[1, 2"),
            r"row 3, field 'history_item_id': not a Python list",
        ),
        (
            lambda d: rewrite_csv(os.path.join(d, TRAIN), 2, "history_item_id", "__import__('os')"),
            r"row 2, field 'history_item_id': not a Python list",
        ),
        (
            lambda d: rewrite_csv(os.path.join(d, TRAIN), 5, "item_sid", "<a_1><b_1><c_999>"),
            r"row 5, field 'item_sid': SID '<a_1><b_1><c_999>' is not a catalog SID",
        ),
        (
            lambda d: rewrite_csv(
                os.path.join(d, TRAIN),
                4,
                "history_item_title",
                "['only one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten', 'eleven']",
            ),
            r"row 4, field 'history_item_title': 11 entries but history_item_id has",
        ),
        (
            lambda d: rewrite_csv(os.path.join(d, TRAIN), 1, "history_item_id", "[]"),
            r"row 1, field 'history_item_id': empty history",
        ),
        (
            lambda d: rewrite_csv(os.path.join(d, TRAIN), 6, "item_id", "99999"),
            r"row 6, field 'item_id': item id 99999 is not in the catalog",
        ),
        (
            lambda d: edit_index(os.path.join(d, INDEX), lambda x: x.__setitem__("5", ["<a_1>", "<b_1>"])),
            r"Synthetic.index.json, row 6, field 'item 5': ragged SID: 2 levels where earlier items have 3",
        ),
        (
            lambda d: edit_index(os.path.join(d, INDEX), lambda x: x.__setitem__("3", ["<a_1>", "b_1", "<c_2>"])),
            r"row 4, field 'item 3': malformed SID",
        ),
        (
            lambda d: edit_index(os.path.join(d, ITEMS), lambda x: x.pop("7")),
            r"Synthetic.item.json, field 'item_id': item id 7 of the index is missing",
        ),
        (lambda d: open(os.path.join(d, INDEX), "w").write("{not json"), r"Synthetic.index.json: invalid JSON"),
    ],
    ids=[
        "missing-file",
        "missing-column",
        "unparsable-list",
        "no-eval",
        "sid-not-in-catalog",
        "length-mismatch",
        "empty-history",
        "unknown-item",
        "ragged-index",
        "malformed-index-sid",
        "item-missing-from-item-json",
        "bad-json",
    ],
)
def test_validation_errors_name_file_row_field(small_data_dir, tmp_path, mutate, pattern):
    d = copy_data(small_data_dir, tmp_path)
    mutate(d)
    with pytest.raises(DataValidationError, match=pattern):
        load_rec_dataset(d, "Synthetic")


def test_sid_mismatch_with_index_is_an_error(small_data_dir, tmp_path, small_data):
    d = copy_data(small_data_dir, tmp_path)
    other = next(i for i in small_data.catalog.items.values() if i.item_id != small_data.splits["train"][1].item_id)
    rewrite_csv(os.path.join(d, TRAIN), 2, "item_sid", other.sid)
    with pytest.raises(DataValidationError, match=r"row 2, field 'item_sid': SID .* differs from the index"):
        load_rec_dataset(d, "Synthetic")


def test_missing_data_dir():
    with pytest.raises(DataValidationError, match="data_dir does not exist"):
        load_rec_dataset("/nonexistent/dir", "Synthetic")


def test_shared_sids_are_legal_and_warned(small_data_dir, tmp_path, caplog):
    d = copy_data(small_data_dir, tmp_path)
    # make item 1 share item 0's SID, and keep CSVs and the info file consistent by also pointing them at it
    with open(os.path.join(d, INDEX)) as f:
        index = json.load(f)
    old, new = "".join(index["1"]), "".join(index["0"])
    index["1"] = index["0"]
    with open(os.path.join(d, INDEX), "w") as f:
        json.dump(index, f)
    for root, _, files in os.walk(d):
        for name in files:
            if name.endswith((".csv", ".txt")):
                p = os.path.join(root, name)
                with open(p) as f:
                    text = f.read()
                with open(p, "w") as f:
                    f.write(text.replace(old, new))
    with caplog.at_level(logging.WARNING):
        data = load_rec_dataset(d, "Synthetic")
    assert data.catalog.num_collisions == 1
    assert len(data.catalog.vocab) == 47
    assert "1 items share a SID" in caplog.text


def test_last_history_keeps_each_rows_most_recent_items_and_its_target():
    long = Interaction("u1", ("i1", "i2", "i3", "i4"), ("T1", "T2", "T3", "T4"), ("<a_1>", "<a_2>", "<a_3>", "<a_4>"),
                       "i5", "T5", "<a_5>")  # fmt: skip
    short = Interaction("u2", ("i7",), ("T7",), ("<a_7>",), "i8", "T8", "<a_8>")
    cut = last_history([long, short], 2)
    assert cut[0] == Interaction("u1", ("i3", "i4"), ("T3", "T4"), ("<a_3>", "<a_4>"), "i5", "T5", "<a_5>")
    assert cut[1] == short  # already within the window
    assert last_history([long, short], None) == [long, short]
    with pytest.raises(UserError, match="history_items must be at least 1"):
        last_history([long], 0)


def test_sft_config_refuses_an_empty_history_window(tmp_path):
    from sidrec.configs import SidrecSFTConfig

    with pytest.raises(UserError, match="history_items must be at least 1 .* got 0"):
        SidrecSFTConfig(output_dir=str(tmp_path), history_items=0, early_stopping_patience=None)
    config = SidrecSFTConfig(output_dir=str(tmp_path), history_items=2, early_stopping_patience=None, bf16=False)
    assert config.history_items == 2
