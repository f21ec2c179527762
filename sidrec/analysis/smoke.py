"""Check a ``scripts/reference_smoke.sh`` run folder: what actually ran in each stage, read from its outputs.

Every training stage must have run as a DeepSpeed engine at ZeRO stage 2 over the expected processes, with the
optimizer state partitioned; the SFT loss must have gone down; GRPO's reference model must have moved (synced);
every evaluation must rank with no invalid SID; the LoRA SFT must have saved an adapter that evaluation loaded.

    sidrec-smoke outputs/reference-smoke --processes 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# stage folder -> kind of run
STAGES = {
    "sft": "train",
    "eval": "eval",
    "grpo": "train",
    "eval_grpo": "eval",
    "sft_lora": "train",
    "eval_lora": "eval",
}


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _losses(run_dir: str) -> list[float]:
    path = os.path.join(run_dir, "trainer_state.json")
    return [h["loss"] for h in _load(path)["log_history"] if "loss" in h] if os.path.isfile(path) else []


def check_stage(out_dir: str, name: str, kind: str, processes: int) -> tuple[dict, list[str]]:
    """One stage's facts (for the table) and the problems found (empty when it ran as it should)."""
    run_dir = os.path.join(out_dir, name)
    path = os.path.join(run_dir, "run_summary.json")
    if not os.path.isfile(path):
        return {"stage": name}, [f"{name}: no run_summary.json in {run_dir}"]
    summary = _load(path)
    launch = summary.get("launch") or {}
    row = {
        "stage": name,
        "status": summary.get("status"),
        "distributed_type": launch.get("distributed_type"),
        "processes": launch.get("num_processes"),
        "engine": (launch.get("engine") or "-").rsplit(".", 1)[-1],
        "zero_stage": launch.get("zero_stage"),
        "precision": launch.get("precision"),
    }
    problems = []
    if summary.get("status") != "ok":
        problems.append(f"{name}: status {summary.get('status')!r} ({summary.get('error', '')})")
    if launch.get("num_processes") != processes or launch.get("world_size") != processes:
        problems.append(f"{name}: ran on {launch.get('num_processes')} processes, expected {processes}")
    if kind == "train":
        if launch.get("distributed_type") != "DEEPSPEED" or row["engine"] != "DeepSpeedEngine":
            problems.append(f"{name}: engine {launch.get('engine')} ({launch.get('distributed_type')}), not DeepSpeed")
        if launch.get("zero_stage") != 2:
            problems.append(f"{name}: ZeRO stage {launch.get('zero_stage')}, expected 2")
        shares = launch.get("optimizer_partition_fraction") or []
        # One process holds the whole optimizer state; several must each hold a part of it.
        split = all(0 < s < 1 for s in shares) if processes > 1 else [round(s, 6) for s in shares] == [1.0]
        if len(shares) != processes or not split:
            problems.append(f"{name}: optimizer state not partitioned across ranks as expected ({shares})")
        losses = _losses(run_dir)
        row["loss"] = f"{losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "-"
        # the ranking eval ran in every process and chose the checkpoint
        metrics = summary.get("metrics") or {}
        evals = [e for e in metrics.get("evaluations", []) if "eval_ndcg@10" in e]
        row["ranking_evals"] = len(evals)
        if not evals or metrics.get("metric_for_best_model") != "eval_ndcg@10":
            problems.append(f"{name}: no ranking eval chose the checkpoint ({metrics.get('metric_for_best_model')})")
        elif any(not e.get("eval_ranked_rows") for e in evals):
            problems.append(f"{name}: a ranking eval ranked no rows ({evals})")
    if name.startswith("sft"):
        losses = _losses(run_dir)
        if len(losses) < 2 or not losses[-1] < losses[0]:
            problems.append(f"{name}: training loss did not go down ({losses})")
        config = _load(os.path.join(run_dir, "config.json"))
        rows = config.get("vocab_size") or config.get("text_config", {}).get("vocab_size")
        row["vocab_rows"] = rows
        if not rows or rows % 64:
            problems.append(f"{name}: embedding rows {rows} not padded to a multiple of 64")
    if name == "sft_lora" and not os.path.isfile(os.path.join(run_dir, "adapter_config.json")):
        problems.append(f"{name}: no adapter_config.json: the LoRA run did not save an adapter")
    if name == "grpo":
        change = launch.get("ref_model_max_abs_change")
        row["ref_change"] = change
        if not change:
            problems.append(f"{name}: the reference model never moved (ref_model_max_abs_change={change})")
        if not str(launch.get("ref_model_engine", "")).endswith("DeepSpeedEngine"):
            problems.append(f"{name}: reference model is {launch.get('ref_model_engine')}, not a DeepSpeed engine")
    if kind == "eval":
        metrics = summary.get("metrics") or {}
        row.update({k: metrics.get(k) for k in ("invalid", "num_samples", "HR@10", "NDCG@10")})
        if metrics.get("invalid") != 0:
            problems.append(f"{name}: {metrics.get('invalid')} invalid SIDs in the rankings")
    return row, problems


def check_smoke(out_dir: str, processes: int) -> tuple[list[dict], list[str]]:
    rows, problems = [], []
    for name, kind in STAGES.items():
        row, found = check_stage(out_dir, name, kind, processes)
        rows.append(row)
        problems += found
    return rows, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args(argv)
    rows, problems = check_smoke(args.out_dir, args.processes)
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    for p in problems:
        print(f"FAIL {p}")
    print("reference smoke: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
