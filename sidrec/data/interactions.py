"""Plain interactions (user, item, timestamp) -> MiniOneRec's train/valid/test CSVs.

k-core filter (users and items with fewer than k interactions are dropped, repeatedly, until none is left), then
every (history -> next item) pair of each user's time-ordered events is a row, the history cut to its last
``max_history`` items; rows are ordered by the next item's timestamp and split 8:1:1 in time.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from collections.abc import Sequence

from sidrec.atomic_io import atomic_write_text
from sidrec.data.minionerec import CSV_COLUMNS, DataValidationError

logger = logging.getLogger(__name__)

SPLIT_FRACTIONS = (("train", 0.8), ("valid", 0.1), ("test", 0.1))


def read_interactions(path: str) -> list[tuple[str, str, float]]:
    """Rows of a CSV with columns ``user_id, item_id, timestamp`` (errors name the file, row and field)."""
    out = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("user_id", "item_id", "timestamp") if c not in (reader.fieldnames or [])]
        if missing:
            raise DataValidationError(path, f"missing column(s) {missing}; expected user_id, item_id, timestamp")
        for row, rec in enumerate(reader, start=1):
            for name in ("user_id", "item_id"):
                if not (rec[name] or "").strip():
                    raise DataValidationError(path, "empty value", row, name)
            try:
                ts = float(rec["timestamp"])
            except (TypeError, ValueError):
                raise DataValidationError(path, f"not a number: {rec['timestamp']!r}", row, "timestamp") from None
            out.append((rec["user_id"].strip(), rec["item_id"].strip(), ts))
    return out


def k_core(events: Sequence[tuple[str, str, float]], k: int) -> list[tuple[str, str, float]]:
    """Drop users and items with fewer than ``k`` interactions until every one left has at least ``k``.

    Example:
    >>> ev = [("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 3), ("u2", "b", 4), ("u3", "c", 5)]
    >>> sorted({u for u, _, _ in k_core(ev, 2)})
    ['u1', 'u2']
    """
    events = list(events)
    while True:
        users = Counter(u for u, _, _ in events)
        items = Counter(i for _, i, _ in events)
        kept = [e for e in events if users[e[0]] >= k and items[e[1]] >= k]
        if len(kept) == len(events):
            return kept
        events = kept


def sequence_rows(events: Sequence[tuple[str, str, float]], max_history: int = 10) -> dict[str, list[tuple]]:
    """``{split: [(user, history item ids, next item id), ...]}``, split 8:1:1 by the next item's time.

    Example:
    >>> ev = [("u", str(i), float(i)) for i in range(11)]
    >>> rows = sequence_rows(ev, max_history=3)
    >>> [len(rows[s]) for s in ("train", "valid", "test")], rows["test"][0]
    ([8, 1, 1], ('u', ['7', '8', '9'], '10'))
    """
    by_user: dict[str, list[tuple[float, str]]] = {}
    for user, item, ts in events:
        by_user.setdefault(user, []).append((ts, item))
    rows = []
    for user in sorted(by_user):
        seq = sorted(by_user[user])
        for k in range(1, len(seq)):
            history = [i for _, i in seq[max(0, k - max_history) : k]]
            rows.append((seq[k][0], user, history, seq[k][1]))
    rows.sort(key=lambda r: (r[0], r[1]))
    out, start = {}, 0
    for n, (split, frac) in enumerate(SPLIT_FRACTIONS):
        end = len(rows) if n == len(SPLIT_FRACTIONS) - 1 else start + int(round(frac * len(rows)))
        out[split] = [r[1:] for r in rows[start:end]]
        start = end
    return out


def write_split_csvs(
    data_dir: str, category: str, splits: dict[str, list[tuple]], items: dict[str, dict], sids: dict[str, list[str]]
) -> dict[str, str]:
    """Write ``<split>/<category>.csv`` in MiniOneRec's columns (titles from item.json, SIDs from the index)."""
    paths = {}
    for split, rows in splits.items():
        lines = [",".join(CSV_COLUMNS) + "\n"]
        buf = _Lines(lines)
        writer = csv.writer(buf)
        for user, history, target in rows:
            writer.writerow(
                [
                    user,
                    repr([items[i].get("title", "") for i in history]),
                    items[target].get("title", ""),
                    repr([int(i) if i.isdigit() else i for i in history]),
                    target,
                    repr(["".join(sids[i]) for i in history]),
                    "".join(sids[target]),
                ]
            )
        paths[split] = os.path.join(data_dir, split, f"{category}.csv")
        atomic_write_text(paths[split], "".join(lines))
    return paths


class _Lines:
    def __init__(self, lines: list[str]):
        self.lines = lines

    def write(self, text: str) -> None:
        self.lines.append(text)
