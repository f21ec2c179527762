"""Print HR@K / NDCG@K rows from metrics.json files side by side.

python -m sidrec.report SFT=outputs/demo/eval/metrics.json GRPO=outputs/demo/eval_grpo/metrics.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping


def metrics_table(rows: Mapping[str, Mapping]) -> str:
    """A markdown table, one row per run, columns HR@K then NDCG@K for the K every run has.

    Example:
        >>> print(metrics_table({"SFT": {"HR@1": 0.1, "NDCG@1": 0.1, "invalid": 0}}))
        | stage | HR@1 | NDCG@1 | invalid |
        | --- | --- | --- | --- |
        | SFT | 0.1000 | 0.1000 | 0 |
    """
    ks = None
    for m in rows.values():
        mine = [int(key[3:]) for key in m if key.startswith("HR@")]
        ks = mine if ks is None else [k for k in ks if k in mine]
    cols = [f"HR@{k}" for k in sorted(ks or [])] + [f"NDCG@{k}" for k in sorted(ks or [])]
    lines = ["| stage | " + " | ".join(cols) + " | invalid |", "| --- |" + " --- |" * (len(cols) + 1)]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.4f}" for c in cols) + f" | {m.get('invalid', '-')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        raise SystemExit("usage: python -m sidrec.report NAME=metrics.json [NAME=metrics.json ...]")
    rows = {}
    for arg in args:
        name, _, path = arg.partition("=")
        with open(path) as f:
            rows[name] = json.load(f)
    print(metrics_table(rows))


if __name__ == "__main__":
    main()
