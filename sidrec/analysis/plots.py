"""The plots of a pipeline run's RESULTS.md: training curves, HR@K and NDCG@K per stage, per-level accuracy."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping


def load_json(path: str):
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def log_history(train_dir: str) -> list[dict]:
    """The Trainer's log history (trainer_state.json in the output_dir, else in its last checkpoint)."""
    state = load_json(os.path.join(train_dir, "trainer_state.json"))
    if state is None and os.path.isdir(train_dir):
        ckpts = sorted(
            (d for d in os.listdir(train_dir) if d.startswith("checkpoint-")), key=lambda d: int(d.split("-")[1])
        )
        state = load_json(os.path.join(train_dir, ckpts[-1], "trainer_state.json")) if ckpts else None
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
