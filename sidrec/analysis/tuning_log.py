"""Collect tuning runs into one table: each eval, the training run it scored, and that run's command and wall time.

    sidrec-tuning-log outputs/exp/*_eval --out docs/tuning

Every argument is an eval output_dir (metrics.json + run_summary.json). The checkpoint it evaluated is found from its
run_summary (``model_name_or_path``); that training run's run_summary gives the command and wall time, and for GRPO
the SFT checkpoint it started from. With ``--out DIR`` the table goes to ``DIR/README.md`` and every run_summary.json
is copied beside it (``<run>.sft.json``, ``<run>.grpo.json``, ``<run>.eval.json``), so the record outlives the
git-ignored outputs; without it the table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

COLUMNS = ("HR@1", "HR@10", "NDCG@10", "HR@50")
SKIPPED_FLAGS = {"--config", "--output_dir", "--overwrite_output_dir", "--model_name_or_path", "--logging_steps"}


def _summary(run_dir: str) -> dict:
    path = os.path.join(run_dir, "run_summary.json")
    if not os.path.isfile(path):
        sys.exit(f"{path}: no run_summary.json (is {run_dir} a sidrec output_dir?)")
    with open(path) as f:
        return json.load(f)


def _model_path(summary: dict) -> str:
    return summary["config"]["ModelConfig"]["model_name_or_path"]


def _flags(command: str) -> str:
    """The flags of a recipe command after its script, minus ``--config`` and output-dir bookkeeping.

    Example:
        >>> _flags("recipes/sft.py --config a.yaml --output_dir o --num_train_epochs 10")
        '--num_train_epochs 10'
    """
    words = command.split()[1:]
    out, i = [], 0
    while i < len(words):
        if words[i] in SKIPPED_FLAGS:
            i += 2
            continue
        out.append(words[i])
        i += 1
    return " ".join(out) or "(recipe as is)"


def collect(eval_dirs: list[str]) -> list[dict]:
    rows = []
    for eval_dir in eval_dirs:
        ev = _summary(eval_dir)
        if ev.get("stage") != "eval" or not os.path.isfile(os.path.join(eval_dir, "metrics.json")):
            sys.exit(f"{eval_dir}: not an eval output_dir (needs metrics.json and an eval run_summary.json)")
        with open(os.path.join(eval_dir, "metrics.json")) as f:
            metrics = json.load(f)
        trained = _summary(_model_path(ev))
        chain = {trained["stage"]: trained}
        if trained["stage"] == "grpo":
            chain["sft"] = _summary(_model_path(trained))
        rows.append({"name": os.path.basename(os.path.normpath(eval_dir)), "eval": ev, "metrics": metrics, **chain})
    return rows


def table(rows: list[dict]) -> str:
    head = "| run | SFT flags | SFT s | GRPO flags | GRPO s | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + " --- |" * (5 + len(COLUMNS))]
    for r in rows:
        sft, grpo = r.get("sft"), r.get("grpo")
        cells = [
            r["name"],
            f"`{_flags(sft['command'])}`" if sft else "",
            f"{sft['wall_time_s']['total']:.0f}" if sft else "",
            f"`{_flags(grpo['command'])}`" if grpo else "",
            f"{grpo['wall_time_s']['total']:.0f}" if grpo else "",
            *(f"{r['metrics'][c]:.4f}" for c in COLUMNS),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_dirs", nargs="+", help="eval output_dirs")
    parser.add_argument("--out", help="folder for README.md (the table) and copies of every run_summary.json")
    parser.add_argument("--title", default="Tuning runs", help="heading of the README.md written with --out")
    args = parser.parse_args(argv)
    rows = collect(args.eval_dirs)
    text = table(rows)
    if not args.out:
        print(text, end="")
        return
    os.makedirs(args.out, exist_ok=True)
    for r in rows:
        for stage in ("sft", "grpo", "eval"):
            if stage in r:
                with open(os.path.join(args.out, f"{r['name']}.{stage}.json"), "w") as f:
                    json.dump(r[stage], f, indent=2)
    header = f"# {args.title}\n\nMade by `sidrec-tuning-log {' '.join(args.eval_dirs)} --out {args.out}`.\n\n"
    tmp = os.path.join(args.out, "README.md.tmp")
    with open(tmp, "w") as f:
        f.write(header + text)
    os.replace(tmp, os.path.join(args.out, "README.md"))
    print(os.path.join(args.out, "README.md"))


if __name__ == "__main__":
    main()
