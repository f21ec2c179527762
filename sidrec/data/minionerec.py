"""Reading (and validating) datasets in MiniOneRec's on-disk layout.

A ``data_dir`` holds, for a ``category`` such as ``Industrial_and_Scientific``::

    train/{category}*.csv  valid/{category}*.csv  test/{category}*.csv
    info/{category}*.txt               # sid \\t title \\t item_id, one line per item
    index/{category}.index.json        # item id -> [level tokens]
    index/{category}.item.json         # item id -> {"title", "description", ...}

CSV columns: ``user_id, history_item_title, item_title, history_item_id, item_id, history_item_sid, item_sid``; the
``history_*`` columns are Python list literals. Every problem is reported as one :class:`DataValidationError` naming
the file, the row and the field, before any model is loaded.
"""

from __future__ import annotations

import ast
import csv
import glob
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from sidrec.errors import UserError
from sidrec.sid import SidVocab, parse_sid

logger = logging.getLogger(__name__)

CSV_COLUMNS = (
    "user_id",
    "history_item_title",
    "item_title",
    "history_item_id",
    "item_id",
    "history_item_sid",
    "item_sid",
)
SPLITS = ("train", "valid", "test")


class DataValidationError(UserError):
    """Bad input data; the message names the file, the row and the field."""

    def __init__(self, path: str, message: str, row: int | None = None, field: str | None = None):
        where = path
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")
        self.path, self.row, self.field = path, row, field


@dataclass(frozen=True)
class Item:
    item_id: str
    sid: str
    title: str
    description: str = ""


@dataclass
class Catalog:
    """Items keyed by id, with their SIDs; ``vocab`` holds the distinct SIDs (the unit of prediction)."""

    items: dict[str, Item]
    vocab: SidVocab
    num_collisions: int = 0

    @property
    def sid_length(self) -> int:
        return self.vocab.sid_length

    @property
    def sid_set(self) -> frozenset[str]:
        return frozenset(item.sid for item in self.items.values())


@dataclass(frozen=True)
class Interaction:
    """One CSV row: a user's history and the next item."""

    user_id: str
    history_item_ids: tuple[str, ...]
    history_titles: tuple[str, ...]
    history_sids: tuple[str, ...]
    item_id: str
    item_title: str
    item_sid: str


def check_history_items(n: int | None) -> None:
    if n is not None and n < 1:
        raise UserError(f"history_items must be at least 1 (or null for the whole history), got {n}")


def last_history(rows: Sequence[Interaction], n: int | None) -> list[Interaction]:
    """``rows`` with every history cut to its ``n`` most recent items (the rows unchanged when ``n`` is None).

    Example:
    >>> r = Interaction("u1", ("i1", "i2", "i3"), ("T1", "T2", "T3"), ("<a_1>", "<a_2>", "<a_3>"), "i4", "T4", "<a_4>")
    >>> cut = last_history([r], 2)[0]
    >>> cut.history_item_ids, cut.history_titles, cut.history_sids, cut.item_id
    (('i2', 'i3'), ('T2', 'T3'), ('<a_2>', '<a_3>'), 'i4')
    """
    check_history_items(n)
    if n is None:
        return list(rows)
    return [
        replace(r, history_item_ids=r.history_item_ids[-n:], history_titles=r.history_titles[-n:],
                history_sids=r.history_sids[-n:])
        if len(r.history_sids) > n else r
        for r in rows
    ]  # fmt: skip


@dataclass
class DataPaths:
    data_dir: str
    category: str
    index: str = ""
    items: str = ""
    info: str = ""
    splits: dict[str, str] = field(default_factory=dict)

    def all_files(self) -> list[str]:
        return [p for p in (self.index, self.items, self.info, *self.splits.values()) if p]


def _find_one(data_dir: str, pattern: str, required: bool) -> str:
    matches = sorted(glob.glob(os.path.join(data_dir, pattern)))
    if not matches:
        if required:
            raise DataValidationError(os.path.join(data_dir, pattern), "no file matches this path")
        return ""
    if len(matches) > 1:
        logger.warning("several files match %s; using %s", pattern, matches[0])
    return matches[0]


def find_files(data_dir: str, category: str, splits: tuple[str, ...] = SPLITS) -> DataPaths:
    """Locate a category's files the way MiniOneRec does (by category prefix)."""
    if not os.path.isdir(data_dir):
        raise DataValidationError(data_dir, "data_dir does not exist or is not a directory")
    paths = DataPaths(data_dir=data_dir, category=category)
    paths.index = _find_one(data_dir, f"index/{category}.index.json", required=True)
    paths.items = _find_one(data_dir, f"index/{category}.item.json", required=True)
    paths.info = _find_one(data_dir, f"info/{category}*.txt", required=False)
    for split in splits:
        paths.splits[split] = _find_one(data_dir, f"{split}/{category}*.csv", required=True)
    return paths


def _load_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataValidationError(path, f"invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DataValidationError(path, "expected a JSON object mapping item id -> value")
    return data


def load_catalog(paths: DataPaths) -> Catalog:
    """Read and cross-check ``index.json``, ``item.json`` and (when present) the info file."""
    index = _load_json(paths.index)
    meta = _load_json(paths.items)
    if not index:
        raise DataValidationError(paths.index, "the index is empty")
    items: dict[str, Item] = {}
    length = None
    for row, (item_id, tokens) in enumerate(index.items(), start=1):
        where = {"path": paths.index, "row": row, "field": f"item {item_id}"}
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise DataValidationError(message=f"expected a list of SID tokens, got {tokens!r}", **where)
        try:
            parsed = parse_sid("".join(tokens))
        except ValueError as e:
            raise DataValidationError(message=str(e), **where) from None
        if len(parsed) != len(tokens):
            raise DataValidationError(message=f"each list entry must be one SID token, got {tokens!r}", **where)
        if length is None:
            length = len(parsed)
        elif len(parsed) != length:
            raise DataValidationError(
                message=f"ragged SID: {len(parsed)} levels where earlier items have {length}", **where
            )
        if item_id not in meta:
            raise DataValidationError(paths.items, f"item id {item_id} of the index is missing here", field="item_id")
        info = meta[item_id]
        if not isinstance(info, dict) or not isinstance(info.get("title"), str):
            raise DataValidationError(paths.items, "expected an object with a string 'title'", field=f"item {item_id}")
        items[item_id] = Item(item_id, "".join(tokens), info["title"], str(info.get("description") or ""))

    counts = Counter(item.sid for item in items.values())
    collisions = sum(c - 1 for c in counts.values() if c > 1)
    if collisions:
        logger.warning(
            "%s: %d items share a SID with another item (%d distinct SIDs for %d items); "
            "the SID is the unit of prediction and of a hit",
            paths.index,
            collisions,
            len(counts),
            len(items),
        )
    catalog = Catalog(items=items, vocab=SidVocab.from_sids(counts), num_collisions=collisions)
    if paths.info:
        _check_info(paths.info, catalog)
    return catalog


def _check_info(path: str, catalog: Catalog) -> None:
    with open(path, encoding="utf-8") as f:
        for row, line in enumerate(f, start=1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                raise DataValidationError(path, f"expected 'sid<TAB>title<TAB>item_id', got {len(parts)} fields", row)
            sid, _, item_id = parts
            item = catalog.items.get(item_id)
            if item is None:
                raise DataValidationError(path, f"item id {item_id} is not in the index", row, "item_id")
            if item.sid != sid:
                raise DataValidationError(path, f"SID {sid} differs from the index's {item.sid}", row, "sid")


def _parse_list(value: str, path: str, row: int, name: str) -> list:
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise DataValidationError(path, f"not a Python list literal: {value[:80]!r}", row, name) from None
    if not isinstance(parsed, list | tuple):
        raise DataValidationError(path, f"expected a list, got {type(parsed).__name__}", row, name)
    return list(parsed)


def load_split(path: str, catalog: Catalog, max_rows: int | None = None) -> list[Interaction]:
    """Read one split CSV, checking every row against the catalog."""
    out: list[Interaction] = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataValidationError(path, f"missing column(s) {missing}; found {reader.fieldnames}", row=0)
        for row, rec in enumerate(reader, start=1):
            if max_rows is not None and row > max_rows:
                break
            out.append(_parse_row(rec, path, row, catalog))
    if not out:
        raise DataValidationError(path, "no data rows")
    return out


def _parse_row(rec: dict, path: str, row: int, catalog: Catalog) -> Interaction:
    titles = _parse_list(rec["history_item_title"], path, row, "history_item_title")
    ids = [str(i) for i in _parse_list(rec["history_item_id"], path, row, "history_item_id")]
    sids = _parse_list(rec["history_item_sid"], path, row, "history_item_sid")
    if not ids:
        raise DataValidationError(path, "empty history", row, "history_item_id")
    for name, values in (("history_item_title", titles), ("history_item_sid", sids)):
        if len(values) != len(ids):
            raise DataValidationError(path, f"{len(values)} entries but history_item_id has {len(ids)}", row, name)
    item_id = str(rec["item_id"]).strip()
    for name, iid, sid in [("item", item_id, rec["item_sid"])] + [
        ("history", i, s) for i, s in zip(ids, sids, strict=True)
    ]:
        id_field, sid_field = ("item_id", "item_sid") if name == "item" else ("history_item_id", "history_item_sid")
        item = catalog.items.get(iid)
        if item is None:
            raise DataValidationError(path, f"item id {iid} is not in the catalog (index.json)", row, id_field)
        if item.sid != sid:
            if sid not in catalog.sid_set:
                raise DataValidationError(path, f"SID {sid!r} is not a catalog SID", row, sid_field)
            raise DataValidationError(
                path, f"SID {sid} of item {iid} differs from the index's {item.sid}", row, sid_field
            )
    return Interaction(
        user_id=str(rec["user_id"]),
        history_item_ids=tuple(ids),
        history_titles=tuple(str(t) for t in titles),
        history_sids=tuple(sids),
        item_id=item_id,
        item_title=str(rec["item_title"]),
        item_sid=rec["item_sid"],
    )


@dataclass
class RecDataset:
    """A category's catalog and split rows, validated."""

    paths: DataPaths
    catalog: Catalog
    splits: dict[str, list[Interaction]]


def load_rec_dataset(
    data_dir: str,
    category: str,
    splits: tuple[str, ...] = SPLITS,
    max_rows: dict[str, int | None] | None = None,
) -> RecDataset:
    """Find, read and validate a MiniOneRec-layout dataset.

    Args:
        data_dir (`str`): Folder holding ``train/ valid/ test/ info/ index/``.
        category (`str`): The file-name prefix, e.g. ``"Industrial_and_Scientific"``.
        splits (`tuple[str, ...]`): Which CSV splits to read.
        max_rows (`dict`, *optional*): Per-split cap on rows read (first rows of the file).
    """
    paths = find_files(data_dir, category, splits)
    catalog = load_catalog(paths)
    max_rows = max_rows or {}
    loaded = {split: load_split(paths.splits[split], catalog, max_rows.get(split)) for split in splits}
    return RecDataset(paths=paths, catalog=catalog, splits=loaded)
