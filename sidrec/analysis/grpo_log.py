"""What a GRPO run did, step by step, from its ``trainer_state.json``: how often the target was among the rollouts,
the share of groups whose rewards did not vary (no gradient), the KL to the reference, and the ranking evaluations
on valid and (``ranking_eval_train_rows``) on GRPO's own prompts.

    sidrec-grpo-log outputs/industrial/tiny-cpu/grpo [--num_generations 16]
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence

from sidrec.errors import UserError

TRAIN_KEYS = ("reward", "frac_reward_zero_std", "kl", "entropy", "grad_norm")
EVAL_KEYS = ("eval_hr@1", "eval_ndcg@10", "eval_train_hr@1", "eval_train_ndcg@10")


def grpo_diagnostics(log_history: Sequence[Mapping], num_generations: int) -> tuple[list[dict], list[dict]]:
    """``(train rows, eval rows)`` of a GRPO log history.

    A train row's ``target_in_group`` is the share of prompts whose G rollouts contain the target: with beam-search
    rollouts the G completions are distinct SIDs, so at most one per group earns ``rule`` = 1, and the share is
    G x the mean ``rule`` reward, less the share of groups given the target by ``guide_target`` (logged as
    ``rollouts/guided_groups``, which the row also shows as ``guided``). ``no_signal`` is TRL's
    ``frac_reward_zero_std``: groups whose rewards are all equal have zero advantage and give no policy gradient.

    Example:
        >>> log = [{"step": 2, "reward": 0.4, "rewards/rule/mean": 0.025, "frac_reward_zero_std": 0.5, "kl": 0.001},
        ...        {"step": 2, "eval_ndcg@10": 0.09, "eval_hr@1": 0.07}]
        >>> train, evals = grpo_diagnostics(log, 16)
        >>> train[0]["target_in_group"], train[0]["no_signal"], evals[0]["eval_ndcg@10"]
        (0.4, 0.5, 0.09)
    """
    train, evals = [], []
    for h in log_history:
        if "eval_ndcg@10" in h:
            evals.append({"step": h.get("step"), **{k: h[k] for k in EVAL_KEYS if k in h}})
        elif "reward" in h:
            row = {"step": h.get("step"), **{k: h[k] for k in TRAIN_KEYS if k in h}}
            guided = h.get("rollouts/guided_groups")
            if "rewards/rule/mean" in h:
                row["target_in_group"] = round(num_generations * h["rewards/rule/mean"] - (guided or 0.0), 6)
            if guided is not None:
                row["guided"] = guided
            row["no_signal"] = row.pop("frac_reward_zero_std", None)
            train.append(row)
    return train, evals


def _table(rows: Sequence[Mapping]) -> str:
    if not rows:
        return "(none)"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def report(run_dir: str, num_generations: int | None = None) -> str:
    """Markdown tables of `grpo_diagnostics` for a GRPO output dir (its ``trainer_state.json``)."""
    path = os.path.join(run_dir, "trainer_state.json")
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file (a GRPO output_dir has one when training finished)")
    with open(path) as f:
        history = json.load(f)["log_history"]
    if num_generations is None:
        summary = os.path.join(run_dir, "run_summary.json")
        config = json.load(open(summary))["config"] if os.path.isfile(summary) else {}
        num_generations = (config.get("SidrecGRPOConfig") or {}).get("num_generations")
        if not num_generations:
            raise UserError(f"{run_dir}: no run_summary.json with num_generations; pass --num_generations")
    train, evals = grpo_diagnostics(history, num_generations)
    return "\n\n".join(["## Training steps", _table(train), "## Ranking evaluations", _table(evals)]) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--num_generations", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        print(report(args.run_dir, args.num_generations))
    except UserError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
