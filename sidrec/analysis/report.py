"""Print HR@K / NDCG@K rows from metrics.json files side by side.

sidrec-report SFT=outputs/demo/eval/metrics.json GRPO=outputs/demo/eval_grpo/metrics.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping

from sidrec.metrics import per_level_rows


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


def per_level_tables(per_level: Mapping) -> str:
    """Markdown tables of the per-level analysis in metrics.json (independent, cumulative, top-1 drop-off).

    Example:
        >>> pl = {"independent": {"level_1": {"1": 0.5}, "exact": {"1": 0.25}}, "cumulative": {"L1": {"1": 0.5}},
        ...       "top1_dropoff": {"L1_accuracy": 0.5, "L1->L1+L2_retention": None}}
        >>> print(per_level_tables(pl))
        | independent | K=1 |
        | --- | --- |
        | level_1 | 0.5000 |
        | exact | 0.2500 |
        <BLANKLINE>
        | cumulative | K=1 |
        | --- | --- |
        | L1 | 0.5000 |
        <BLANKLINE>
        | top-1 drop-off | value |
        | --- | --- |
        | L1_accuracy | 0.5000 |
        | L1->L1+L2_retention | - |
    """
    cell = lambda v: "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    out = []
    for header, rows in per_level_rows(per_level).values():
        lines = ["| " + " | ".join(header) + " |", "| --- |" + " --- |" * (len(header) - 1)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
        out.append("\n".join(lines))
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    per_level = "--per-level" in args
    if per_level:
        args.remove("--per-level")
    if not args:
        raise SystemExit("usage: sidrec-report [--per-level] NAME=metrics.json [NAME=metrics.json ...]")
    rows = {}
    for arg in args:
        name, _, path = arg.partition("=")
        with open(path) as f:
            rows[name] = json.load(f)
    print(metrics_table(rows))
    if per_level:
        for name, m in rows.items():
            print(f"\n**{name}**\n\n{per_level_tables(m['per_level'])}")


if __name__ == "__main__":
    main()
