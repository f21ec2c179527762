"""Collision handling: items that share every code get unique SIDs, the same way for every SID method.

Both ways use each item's distance to every last-level code (``last_dist``, ``[n, k]``), which every method returns.
"""

from __future__ import annotations

import numpy as np

from sidrec.errors import UserError

#: How items that share every code are told apart: ``move`` (the nearest free code at the last level, SIDs keep
#: ``levels`` tokens) or ``extra_level`` (TIGER: one more level numbering the items of each shared code 0, 1, ...;
#: SIDs get ``levels + 1`` tokens).
COLLISION_METHODS = ("move", "extra_level")


def resolve_collisions(codes: np.ndarray, last_dist: np.ndarray) -> tuple[np.ndarray, int]:
    """Make every row of ``codes`` unique by moving colliding items to the nearest free last-level code.

    Returns the new codes and how many items moved. Deterministic: within a colliding group the item nearest the
    shared centroid stays, the others (nearest first) take the nearest code free under their prefix.
    """
    codes = codes.copy()
    k = last_dist.shape[1]
    used: dict[tuple, set[int]] = {}
    for row in codes:
        used.setdefault(tuple(row[:-1]), set()).add(int(row[-1]))
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(codes):
        groups.setdefault(tuple(row), []).append(i)
    moved = 0
    for key in sorted(g for g, members in groups.items() if len(members) > 1):
        members = sorted(groups[key], key=lambda i: (last_dist[i, key[-1]], i))
        prefix = key[:-1]
        for i in members[1:]:
            free = [c for c in np.argsort(last_dist[i], kind="stable") if int(c) not in used[prefix]]
            if not free:
                raise UserError(
                    f"more than {k} items share the SID prefix {prefix}; use more codes per level or more levels"
                )
            codes[i, -1] = int(free[0])
            used[prefix].add(int(free[0]))
            moved += 1
    return codes, moved


def append_collision_level(codes: np.ndarray, last_dist: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """TIGER's collision handling: append a level whose code numbers the items sharing a full code.

    Within each group of items with identical codes, the item nearest the shared last-level centroid gets 0, the next
    1, and so on (ties by item order); an item alone gets 0. Returns the codes with one more column and how many items
    got a code other than 0.

    Example:
    >>> codes = np.array([[1, 2], [1, 2], [3, 0], [1, 2]])
    >>> dist = np.array([[0, 0, 0.5], [0, 0, 0.1], [0, 0, 0], [0, 0, 0.3]])  # to each last-level centroid
    >>> out, n = append_collision_level(codes, dist, k=4)
    >>> out[:, -1].tolist(), n
    ([2, 0, 0, 1], 2)
    """
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(codes):
        groups.setdefault(tuple(int(c) for c in row), []).append(i)
    extra = np.zeros(len(codes), dtype=codes.dtype)
    for key, members in groups.items():
        if len(members) > k:
            raise UserError(
                f"{len(members)} items share the code {key}; the extra level has {k} codes: use more codes"
            )
        for rank, i in enumerate(sorted(members, key=lambda i: (last_dist[i, key[-1]], i))):
            extra[i] = rank
    return np.column_stack([codes, extra]), int((extra > 0).sum())


def handle_collisions(codes: np.ndarray, last_dist: np.ndarray, how: str, k_last: int) -> tuple[np.ndarray, int]:
    """``move`` or ``extra_level`` (``k_last``: the codes the extra level may number up to)."""
    if how == "extra_level":
        return append_collision_level(codes, last_dist, k_last)
    if how == "move":
        return resolve_collisions(codes, last_dist)
    raise UserError(f"collisions must be one of {', '.join(COLLISION_METHODS)}, got {how!r}")
