"""Error bars: paired bootstrap over users, and mean ± sd over seeds.

Per-user HR@K and NDCG@K (the same definition as `sidrec.metrics.hr_ndcg`, whose numbers are their means), the
paired bootstrap of one ranking minus another on the same users, and the spread of a metric over seeds. Pure
functions (numbers in, numbers or markdown out), except `read_predictions` and `file_differences`, which read the
``predictions.jsonl`` files of evaluations and baselines.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from sidrec.metrics import first_hit_rank

KS = (1, 3, 5, 10)


def per_user_metrics(
    predictions: Sequence[Sequence[str]], targets: Sequence[str], ks: Sequence[int] = KS
) -> dict[str, np.ndarray]:
    """Each user's HR@K (1 or 0) and NDCG@K (``1 / log2(r + 2)`` for a hit at 0-based rank ``r < K``, else 0).

    Their means over users are `sidrec.metrics.hr_ndcg`'s numbers.

    Args:
        predictions: Per user, the ranked SIDs (best first).
        targets: Per user, the SID of the next item.
        ks: The cut-offs K.

    Returns:
        ``{"HR@K": array, "NDCG@K": array}`` for every K, one float per user, in the users' order.

    Example:
        >>> m = per_user_metrics([["x", "t"], ["t", "y"], ["y", "z"]], ["t", "t", "t"], ks=(1, 2))
        >>> m["HR@1"].tolist(), m["HR@2"].tolist(), m["NDCG@2"].round(4).tolist()
        ([0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.6309, 1.0, 0.0])
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} prediction lists for {len(targets)} targets")
    if not targets:
        raise ValueError("no samples to score")
    ranks = [first_hit_rank(p, t) for p, t in zip(predictions, targets, strict=True)]
    rank = np.array([math.inf if r is None else r for r in ranks], dtype=np.float64)
    gain = 1.0 / np.log2(rank + 2)  # 0 for a miss (rank inf)
    out = {f"HR@{k}": (rank < k).astype(np.float64) for k in ks}
    out.update({f"NDCG@{k}": np.where(rank < k, gain, 0.0) for k in ks})
    return out


def _bootstrap_se(diffs: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """`[n_users, n_metrics]` differences -> per metric, the std (ddof=1) of their means over resampled users (the
    same resampled users for every metric)."""
    draws = np.random.default_rng(seed).integers(0, len(diffs), size=(n_resamples, len(diffs)))
    return np.array([column[draws].mean(axis=1).std(ddof=1) for column in diffs.T])


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """The mean of ``a - b`` over users and its bootstrap standard error.

    Users are resampled with replacement, the same users for ``a`` and ``b`` (paired: what varies between users, such
    as how hard their next item is, cancels). The standard error is the standard deviation (ddof=1) of the
    resampled mean differences.

    Args:
        a, b: One value per user (the same users in the same order), e.g. `per_user_metrics` of two rankings.
        n_resamples: How many resamples.
        seed: Seeds the draw: the same seed gives the same result.

    Returns:
        ``(mean difference, standard error)``.

    Example:
        >>> paired_bootstrap(np.array([1.0, 0.0, 1.0]), np.array([0.5, -0.5, 0.5]))
        (0.5, 0.0)
        >>> diff, se = paired_bootstrap(np.array([1.0, 0.0, 1.0, 0.0]), np.zeros(4), seed=0)
        >>> diff, round(se, 2)
        (0.5, 0.25)
    """
    if np.ndim(a) != 1 or np.shape(a) != np.shape(b) or len(a) == 0:
        raise ValueError(f"need one value per user in a and b, got shapes {np.shape(a)} and {np.shape(b)}")
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(diff.mean()), float(_bootstrap_se(diff[:, None], n_resamples, seed)[0])


def differences(
    model_preds: Sequence[Sequence[str]],
    baseline_preds: Sequence[Sequence[str]],
    targets: Sequence[str],
    ks: Sequence[int] = KS,
    n_resamples: int = 1000,
    seed: int = 0,
    baseline_targets: Sequence[str] | None = None,
) -> dict[str, tuple[float, float]]:
    """Model minus baseline on every HR@K and NDCG@K, with paired-bootstrap standard errors over users.

    Every metric uses the same resampled users.

    Args:
        model_preds, baseline_preds: Per user, each ranking's SIDs (best first), the users in the same order.
        targets: Per user, the SID of the next item.
        baseline_targets: The baseline's targets when they are other SIDs of the same items (two SID indexes of one
            catalog); default ``targets``.

    Returns:
        ``{"HR@K": (difference, standard error), "NDCG@K": ...}``.

    Example:
        >>> d = differences([["t"], ["t"]], [["x"], ["t"]], ["t", "t"], ks=(1,))
        >>> d["HR@1"][0], d["NDCG@1"][0]
        (0.5, 0.5)
    """
    b_targets = targets if baseline_targets is None else baseline_targets
    a, b = per_user_metrics(model_preds, targets, ks), per_user_metrics(baseline_preds, b_targets, ks)
    diffs = np.stack([a[key] - b[key] for key in a], axis=1)
    ses = _bootstrap_se(diffs, n_resamples, seed)
    return {key: (float(diffs[:, j].mean()), float(ses[j])) for j, key in enumerate(a)}


def read_predictions(path: str) -> list[dict]:
    """The records of a ``predictions.jsonl`` (``user_id``, ``target``, ``predictions``, ...), in file order."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def top1_changes(model: Sequence[Mapping], baseline: Sequence[Mapping]) -> tuple[int, int, int]:
    """How the first-ranked SID moved from ``baseline`` to ``model`` (records of the same users in the same order):
    the users whose top-1 differs, those whose top-1 became their target (hits gained) and those whose top-1 stopped
    being it (hits lost). A model can change many top-1s and few hits: the rest moved from one miss to another.

    Example:
        >>> hit, miss, other = ({"target": "t", "predictions": [p]} for p in ("t", "x", "y"))
        >>> top1_changes([miss, hit, other, hit], [hit, miss, miss, hit])
        (3, 1, 1)
    """
    changed = gained = lost = 0
    for m, b in zip(model, baseline, strict=True):
        top_m, top_b = (r["predictions"][0] if r["predictions"] else None for r in (m, b))
        changed += top_m != top_b
        gained += top_m == m["target"] != top_b
        lost += top_b == b["target"] != top_m
    return changed, gained, lost


def paired_differences(
    model: Sequence[Mapping],
    baseline: Sequence[Mapping],
    ks: Sequence[int] = KS,
    n_resamples: int = 1000,
    seed: int = 0,
    across_indexes: bool = False,
) -> dict[str, tuple[float, float]]:
    """`differences` of two ``predictions.jsonl`` record lists, which must hold the same users with the same targets
    in the same order (raises ValueError naming the first that differs). With ``across_indexes`` the two rank under
    different SID indexes of one catalog: only the users must agree, and each list is scored against its own target.

    Example:
        >>> a = [{"user_id": "u1", "target": "t", "predictions": ["t"]}, {"user_id": "u2", "target": "t",
        ...      "predictions": ["x"]}]
        >>> paired_differences(a, a, ks=(1,))["HR@1"]
        (0.0, 0.0)
    """
    if len(model) != len(baseline):
        raise ValueError(f"{len(model)} users against {len(baseline)}")
    for i, (x, y) in enumerate(zip(model, baseline, strict=True)):
        if x["user_id"] != y["user_id"] or (not across_indexes and x["target"] != y["target"]):
            raise ValueError(
                f"row {i} is user {x['user_id']} -> {x['target']} in one, {y['user_id']} -> {y['target']} in the other"
            )
    targets = [r["target"] for r in model]
    return differences(
        [r["predictions"] for r in model], [r["predictions"] for r in baseline], targets, ks, n_resamples, seed,
        [r["target"] for r in baseline],
    )  # fmt: skip


def read_prediction_pair(run_dir: str, a: str | None, b: str | None) -> tuple[list[list[dict]] | None, str]:
    """The records of predictions files ``a`` and ``b`` (paths in ``run_dir``), or ``None`` and the line that says why
    there are none (a file is missing or not named)."""
    missing = [p for p in (a, b) if p and not os.path.isfile(os.path.join(run_dir, p))]
    if not (a and b) or missing:
        why = f"{', '.join(missing)} missing" if missing else "baselines.json names no baseline predictions"
        return None, f"No ± (standard errors): {why}; the run dir was made before predictions were kept."
    return [read_predictions(os.path.join(run_dir, p)) for p in (a, b)], ""


def file_differences(
    run_dir: str, a: str | None, b: str | None, records: list[list[dict]] | None = None
) -> tuple[dict | None, str]:
    """`paired_differences` of the rankings in predictions files ``a`` minus ``b`` (paths in ``run_dir``; 1,000
    resamples, seed 0) and the line that says what the ± is; or ``None`` and the line that says why there is none
    (a file is missing, or they rank other users). ``records``: the two files as `read_prediction_pair` read them,
    so a caller that needs them too reads them once."""
    if records is None:
        records, why = read_prediction_pair(run_dir, a, b)
        if records is None:
            return None, why
    try:
        errors = paired_differences(*records, ks=KS, n_resamples=1000, seed=0)
    except ValueError as e:
        return None, f"No ± (standard errors): {a} and {b} do not rank the same test users ({e})."
    return errors, (
        f"± is one standard error of the difference: paired bootstrap over {len(records[0])} test users, 1,000 "
        "resamples (seed 0)."
    )


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for a single value).

    Example:
        >>> [round(x, 4) for x in mean_sd([0.1, 0.2, 0.3])]
        [0.2, 0.1]
    """
    x = np.asarray(values, dtype=np.float64)
    sd = float(x.std(ddof=1)) if len(x) > 1 else math.nan
    return float(x.mean()), sd


def seeds_table(runs: Mapping[str, Mapping[str, float]], keys: Sequence[str]) -> str:
    """A markdown table: one row per run (``{label: metrics}``), then ``mean ± sd`` over the runs for each key.

    Example:
        >>> print(seeds_table({"seed 1": {"HR@1": 0.1}, "seed 2": {"HR@1": 0.3}}, ["HR@1"]))
        | run | HR@1 |
        | --- | --- |
        | seed 1 | 0.1000 |
        | seed 2 | 0.3000 |
        | mean ± sd | 0.2000 ± 0.1414 |
    """
    lines = ["| run | " + " | ".join(keys) + " |", "| --- |" + " --- |" * len(keys)]
    lines += [f"| {label} | " + " | ".join(f"{m[k]:.4f}" for k in keys) + " |" for label, m in runs.items()]
    cells = []
    for key in keys:
        mean, sd = mean_sd([m[key] for m in runs.values()])
        cells.append(f"{mean:.4f} ± {sd:.4f}" if len(runs) > 1 else f"{mean:.4f}")
    return "\n".join([*lines, "| mean ± sd | " + " | ".join(cells) + " |"])


def seeds_summary(stages: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Markdown for runs that differ only in their seed: per stage (``{stage: {run label: metrics}}``), a
    `seeds_table` of HR@K and NDCG@K (the K in `KS` that every run of the stage has)."""
    n_runs = max((len(runs) for runs in stages.values()), default=0)
    lines = [
        "# Seeds",
        "",
        f"Test HR@K and NDCG@K of {n_runs} runs that differ only in their seed: each run, then the mean ± sd over the "
        "runs (sd with ddof=1).",
        "",
    ]
    for stage, runs in stages.items():
        keys = [f"{m}@{k}" for m in ("HR", "NDCG") for k in KS if all(f"{m}@{k}" in r for r in runs.values())]
        lines += [f"## {stage}", "", seeds_table(runs, keys), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``sidrec-bootstrap A/predictions.jsonl B/predictions.jsonl``: A minus B per metric, ± one standard error."""
    import argparse

    parser = argparse.ArgumentParser(description="Paired bootstrap of two predictions.jsonl files over their users.")
    parser.add_argument("model", help="predictions.jsonl of the model (A)")
    parser.add_argument("baseline", help="predictions.jsonl of what it is compared with (B), same users and order")
    parser.add_argument("--ks", type=int, nargs="+", default=list(KS))
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument(
        "--across_indexes",
        action="store_true",
        help="A and B rank under different SID indexes of one catalog (e.g. two SID methods): pair by user only, and "
        "score each against its own target",
    )
    args = parser.parse_args(argv)
    for path in (args.model, args.baseline):
        if not os.path.isfile(path):
            raise SystemExit(f"error: {path}: no such file")
    a, b = read_predictions(args.model), read_predictions(args.baseline)
    try:
        diffs = paired_differences(a, b, args.ks, args.resamples, seed=0, across_indexes=args.across_indexes)
    except ValueError as e:
        raise SystemExit(f"error: {args.model} and {args.baseline} do not rank the same users: {e}") from None
    print(f"A = {args.model}\nB = {args.baseline}\n")
    print("| metric | A - B | ± (one standard error) |\n| --- | --- | --- |")
    for name, (diff, se) in diffs.items():
        print(f"| {name} | {diff:+.4f} | {se:.4f} |")
    print(f"\npaired bootstrap over {len(a)} users, {args.resamples} resamples (seed 0)")
