"""Write a pipeline run's RESULTS.md: main table, per-level tables, plots, baselines.

    python -m sidrec.results RUN_DIR [--command "the command that made the run"]

RUN_DIR is what ``scripts/run_pipeline.sh`` fills: ``sft/`` ``eval_sft/`` ``grpo/`` ``eval_grpo/`` (recipe
outputs) and ``baselines.json``. Missing stages are left out. Plots go to ``RUN_DIR/plots/``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping

from sidrec.report import metrics_table, per_level_tables
from sidrec.utils import atomic_write_text

STAGES = (("SFT", "sft", "eval_sft"), ("RL (GRPO)", "grpo", "eval_grpo"))


def _load(path: str):
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def log_history(train_dir: str) -> list[dict]:
    """The Trainer's log history (trainer_state.json in the output_dir, else in its last checkpoint)."""
    state = _load(os.path.join(train_dir, "trainer_state.json"))
    if state is None and os.path.isdir(train_dir):
        ckpts = sorted(
            (d for d in os.listdir(train_dir) if d.startswith("checkpoint-")), key=lambda d: int(d.split("-")[1])
        )
        state = _load(os.path.join(train_dir, ckpts[-1], "trainer_state.json")) if ckpts else None
    return (state or {}).get("log_history", [])


def _save(fig, path: str) -> str:
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def make_plots(run_dir: str, rows: Mapping[str, Mapping]) -> list[str]:
    """Loss / eval-loss / reward curves, HR@K and NDCG@K curves per stage, per-level accuracy bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = os.path.join(run_dir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    curves = [
        ("sft", "loss", "SFT train loss"),
        ("sft", "eval_loss", "SFT eval loss (valid, sid_seq)"),
        ("grpo", "reward", "GRPO mean reward"),
        ("grpo", "rewards/rule/mean", "GRPO rule reward (mean per completion)"),
    ]
    present = [(d, k, t) for d, k, t in curves if any(k in e for e in log_history(os.path.join(run_dir, d)))]
    if present:
        fig, axes = plt.subplots(1, len(present), figsize=(4 * len(present), 3), squeeze=False)
        for ax, (d, key, title) in zip(axes[0], present, strict=True):
            pts = [(e["step"], e[key]) for e in log_history(os.path.join(run_dir, d)) if key in e]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step")
        paths.append(_save(fig, os.path.join(out_dir, "training_curves.png")))
        plt.close(fig)
    if rows:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        for name, m in rows.items():
            ks = sorted(int(k[3:]) for k in m if k.startswith("HR@"))
            for ax, metric in zip(axes, ("HR", "NDCG"), strict=True):
                ax.plot(ks, [m[f"{metric}@{k}"] for k in ks], marker="o", label=name)
                ax.set_xscale("log")
                ax.set_xticks(ks, [str(k) for k in ks])
                ax.set_title(f"{metric}@K")
        axes[0].legend(fontsize=8)
        paths.append(_save(fig, os.path.join(out_dir, "hr_ndcg_at_k.png")))
        plt.close(fig)
    leveled = {n: m for n, m in rows.items() if "per_level" in m}
    if leveled:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        for ax, k in zip(axes, ("1", "10"), strict=True):
            width = 0.8 / len(leveled)
            for j, (name, m) in enumerate(leveled.items()):
                cum = m["per_level"]["cumulative"]
                ax.bar([i + j * width for i in range(len(cum))], [v[k] for v in cum.values()], width, label=name)
                ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cum))], list(cum))
            ax.set_title(f"cumulative level accuracy at K={k}")
        axes[0].legend(fontsize=8)
        paths.append(_save(fig, os.path.join(out_dir, "per_level.png")))
        plt.close(fig)
    return paths


def write_results(run_dir: str, command: str = "") -> str:
    """Collect the run's metrics into RESULTS.md (atomically); returns its path."""
    rows, walls = {}, {}
    for name, train, ev in STAGES:
        metrics = _load(os.path.join(run_dir, ev, "metrics.json"))
        if metrics is not None:
            rows[name] = metrics
        for d in (train, ev):
            summary = _load(os.path.join(run_dir, d, "run_summary.json"))
            if summary:
                walls[d] = summary.get("wall_time_s", {}).get("total")
    baselines = _load(os.path.join(run_dir, "baselines.json")) or {}
    all_rows = {**rows, **{f"baseline: {k}": v for k, v in baselines.get("metrics", {}).items()}}
    plots = make_plots(run_dir, all_rows)
    lines = ["# Results", ""]
    if command:
        lines += ["Made by:", "", "```bash", command, "```", ""]
    lines += ["## HR@K and NDCG@K (test split)", "", metrics_table(all_rows), ""]
    if walls:
        lines += ["Wall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in walls.items() if v), ""]
    for name, m in rows.items():
        lines += [f"## Per-level analysis: {name}", "", per_level_tables(m["per_level"]), ""]
    if baselines.get("sasrec_log"):
        log = baselines["sasrec_log"]
        lines += [
            f"SASRec: best epoch {log.get('best_epoch')} of {len(log['epochs'])} (early-stopped on valid HR@10).",
            "",
        ]
    if plots:
        lines += ["## Plots", ""] + [f"![{os.path.basename(p)}](plots/{os.path.basename(p)})" for p in plots] + [""]
    path = os.path.join(run_dir, "RESULTS.md")
    atomic_write_text(path, "\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--command", default="", help="the command that made the run (written into RESULTS.md)")
    args = parser.parse_args(argv)
    print(write_results(args.run_dir, args.command))


if __name__ == "__main__":
    main()
