"""GRPO prompts that SFT has not seen: each user's latest train row, held out of SFT (``rl_holdout`` in the SFT
config) and given to GRPO instead (``rl_rows: holdout``).

A model trained to fit its train rows puts their targets at the top of its beams, so GRPO on those rows sees groups
whose reward hardly varies and learns little (docs/tuning, round 10). The held-out row of a user is the last of that
user's train rows: its target is the user's latest train interaction, which comes before every valid and test target
of the user, and no other train row of the user contains it (rows are prefixes of one time-ordered sequence, checked
here). So neither SFT (which never sees the row) nor GRPO (which sees only train interactions) reads a later
interaction of the user than train allows.
"""

from __future__ import annotations

from collections.abc import Sequence

from sidrec.data.minionerec import Interaction
from sidrec.errors import UserError


def split_latest_per_user(
    rows: Sequence[Interaction], source: str = ""
) -> tuple[list[Interaction], list[Interaction]]:
    """``(rest, latest)``: each user's last train row (``latest``, in file order) and all the others (``rest``).

    A user's rows must come in time order, each continuing the one before it (its history ends with the previous
    row's item); otherwise which row is the latest is not known and a one-line `UserError` names the row.

    Example:
        >>> def row(user, history, item):
        ...     return Interaction(user, tuple(history), tuple(history), tuple(history), item, item, item)
        >>> rows = [row("u1", ["a"], "b"), row("u2", ["x"], "y"), row("u1", ["a", "b"], "c")]
        >>> rest, latest = split_latest_per_user(rows)
        >>> [(r.user_id, r.item_id) for r in rest], [(r.user_id, r.item_id) for r in latest]
        ([('u1', 'b')], [('u2', 'y'), ('u1', 'c')])
        >>> split_latest_per_user([row("u1", ["a"], "b"), row("u1", ["a", "z"], "c")], "train.csv")
        Traceback (most recent call last):
        ...
        sidrec.errors.UserError: train.csv, row 2, field 'history_item_id': user u1's rows are not in time order (its history should end with the item of the user's row 1, 'b'); rl_holdout needs each user's rows as consecutive prefixes of one sequence
    """
    last_index: dict[str, int] = {}
    for i, r in enumerate(rows):
        previous = last_index.get(r.user_id)
        if previous is not None and (not r.history_item_ids or r.history_item_ids[-1] != rows[previous].item_id):
            raise UserError(
                f"{source}, row {i + 1}, field 'history_item_id': user {r.user_id}'s rows are not in time order (its "
                f"history should end with the item of the user's row {previous + 1}, {rows[previous].item_id!r}); "
                "rl_holdout needs each user's rows as consecutive prefixes of one sequence"
            )
        last_index[r.user_id] = i
    latest = set(last_index.values())
    return [r for i, r in enumerate(rows) if i not in latest], [r for i, r in enumerate(rows) if i in latest]


def sft_rows(
    rows: Sequence[Interaction],
    rl_holdout: bool,
    max_train_rows: int | None,
    source: str = "",
):
    """The train rows SFT learns from, and how many it held out for GRPO (all rows, 0 without ``rl_holdout``)."""
    if not rl_holdout:
        return list(rows), 0
    if max_train_rows:
        raise UserError(
            "rl_holdout holds out each user's latest train row: unset max_train_rows (it cuts users short)"
        )
    rest, latest = split_latest_per_user(rows, source)
    return rest, len(latest)


def grpo_rows(
    rows: Sequence[Interaction],
    rl_rows: str,
    sft_held_out: bool,
    max_train_rows: int | None,
    source: str = "",
) -> list[Interaction]:
    """The rows that prompt GRPO: the train split as loaded (``rl_rows: train``), or each user's latest train row,
    which SFT held out (``rl_rows: holdout``; the checkpoint must say so, ``sft_held_out``)."""
    if rl_rows == "train":
        return list(rows)
    if not sft_held_out:
        raise UserError(
            "rl_rows: holdout prompts GRPO with each user's latest train row, but this checkpoint was trained on those "
            "rows: train it with rl_holdout: true (recipes/sft.py)"
        )
    if max_train_rows:
        raise UserError(
            "rl_rows: holdout takes each user's latest train row: unset max_train_rows (--max_train_rows null)"
        )
    return split_latest_per_user(rows, source)[1]
