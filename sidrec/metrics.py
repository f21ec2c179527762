"""Ranking metrics (HR@K, NDCG@K as MiniOneRec's calc.py defines them) and the per-SID-level analysis.

All functions are pure: ranked SID strings and targets in, numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from sidrec.sid import parse_sid

DEFAULT_KS = (1, 3, 5, 10, 20, 50)


def first_hit_rank(ranked: Sequence[str], target: str) -> int | None:
    """0-based rank of the first prediction equal to the target, or None.

    Example:
    >>> first_hit_rank(["<a_1><b_1>", "<a_2><b_2>"], "<a_2><b_2>")
    1
    >>> first_hit_rank(["<a_1><b_1>"], "<a_9><b_9>") is None
    True
    """
    for rank, sid in enumerate(ranked):
        if sid == target:
            return rank
    return None


def hr_ndcg(predictions: Sequence[Sequence[str]], targets: Sequence[str], ks: Sequence[int] = DEFAULT_KS) -> dict:
    """HR@K and NDCG@K: a hit at 0-based rank ``r < K`` scores 1 for HR and ``1 / log2(r + 2)`` for NDCG.

    Example:
    >>> m = hr_ndcg([["x", "t"], ["t", "y"], ["y", "z"]], ["t", "t", "t"], ks=(1, 2))
    >>> m["HR@1"], m["HR@2"], round(m["NDCG@2"], 4)
    (0.3333333333333333, 0.6666666666666666, 0.5436)
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} prediction lists for {len(targets)} targets")
    if not targets:
        raise ValueError("no samples to score")
    ranks = [first_hit_rank(p, t) for p, t in zip(predictions, targets, strict=False)]
    n = len(targets)
    out = {}
    for k in ks:
        out[f"HR@{k}"] = sum(1 for r in ranks if r is not None and r < k) / n
    for k in ks:
        out[f"NDCG@{k}"] = sum(1.0 / math.log2(r + 2) for r in ranks if r is not None and r < k) / n
    return out


def _level_names(sid_length: int) -> list[str]:
    return ["+".join(f"L{j + 1}" for j in range(i + 1)) for i in range(sid_length)]


def per_level_analysis(
    predictions: Sequence[Sequence[str]], targets: Sequence[str], ks: Sequence[int] = DEFAULT_KS
) -> dict:
    """Where along the SID do predictions go wrong?

    - ``independent[level][K]``: share of samples where some top-K prediction has the target's token at that level
      (other levels ignored); ``exact`` is the whole SID (= HR@K).
    - ``cumulative[prefix][K]``: share where some top-K prediction matches the target's first levels (``L1``,
      ``L1+L2``, ...).
    - ``top1_dropoff``: top-1 accuracy of L1, then the share of those kept when each next level is added.

    Example:
    >>> preds = [["<a_1><b_2>", "<a_3><b_4>"], ["<a_1><b_9>", "<a_5><b_2>"]]
    >>> r = per_level_analysis(preds, ["<a_1><b_2>", "<a_1><b_2>"], ks=(1, 2))
    >>> r["independent"]["level_2"], r["cumulative"]["L1+L2"], r["top1_dropoff"]["L1->L1+L2_retention"]
    ({'1': 0.5, '2': 1.0}, {'1': 0.5, '2': 0.5}, 0.5)
    """
    if len(predictions) != len(targets) or not targets:
        raise ValueError("need one prediction list per target, and at least one target")
    tgt = [parse_sid(t) for t in targets]
    length = len(tgt[0])
    pred = [[parse_sid(s) for s in p] for p in predictions]
    n = len(tgt)
    names = _level_names(length)
    independent: dict[str, dict[str, float]] = {f"level_{j + 1}": {} for j in range(length)}
    independent["exact"] = {}
    cumulative: dict[str, dict[str, float]] = {name: {} for name in names}
    for k in ks:
        for j in range(length):
            hits = sum(1 for p, t in zip(pred, tgt, strict=False) if any(s[j] == t[j] for s in p[:k]))
            independent[f"level_{j + 1}"][str(k)] = hits / n
            hits = sum(1 for p, t in zip(pred, tgt, strict=False) if any(s[: j + 1] == t[: j + 1] for s in p[:k]))
            cumulative[names[j]][str(k)] = hits / n
        independent["exact"][str(k)] = sum(1 for p, t in zip(pred, tgt, strict=False) if t in p[:k]) / n
    top1 = [
        sum(1 for p, t in zip(pred, tgt, strict=False) if p and p[0][: j + 1] == t[: j + 1]) / n for j in range(length)
    ]
    dropoff = {"L1_accuracy": top1[0]}
    for j in range(1, length):
        dropoff[f"{names[j - 1]}->{names[j]}_retention"] = top1[j] / top1[j - 1] if top1[j - 1] else None
    return {"independent": independent, "cumulative": cumulative, "top1_dropoff": dropoff}


def compute_metrics(
    predictions: Sequence[Sequence[str]],
    targets: Sequence[str],
    num_beams: int,
    invalid: int = 0,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict:
    """The ``metrics.json`` payload: HR/NDCG at every K <= num_beams, counts, and the per-level analysis."""
    ks = [k for k in ks if k <= num_beams]
    out = hr_ndcg(predictions, targets, ks)
    out.update(
        {
            "invalid": invalid,
            "short_lists": sum(1 for p in predictions if len(p) < num_beams),
            "num_samples": len(targets),
            "num_beams": num_beams,
            "per_level": per_level_analysis(predictions, targets, ks),
        }
    )
    return out


def per_level_rows(per_level: Mapping) -> dict[str, tuple[list[str], list[list]]]:
    """The per-level analysis in metrics.json as ``{table: (header, rows)}`` (for markdown and W&B tables).

    Example:
        >>> pl = {"independent": {"exact": {"1": 0.25}}, "cumulative": {"L1": {"1": 0.5}},
        ...       "top1_dropoff": {"L1_accuracy": 0.5}}
        >>> per_level_rows(pl)["independent"]
        (['independent', 'K=1'], [['exact', 0.25]])
    """
    out = {}
    for name in ("independent", "cumulative"):
        table = per_level[name]
        ks = list(next(iter(table.values())))
        out[name] = ([name] + [f"K={k}" for k in ks], [[row] + [vals[k] for k in ks] for row, vals in table.items()])
    out["top1_dropoff"] = (["top-1 drop-off", "value"], [[k, v] for k, v in per_level["top1_dropoff"].items()])
    return out
