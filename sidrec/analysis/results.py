"""Write a pipeline run's RESULTS.md: main table, per-level tables, plots, baselines.

    sidrec-results RUN_DIR [--command "the command that made the run"] [--final-metrics]
    sidrec-results --compare "MiniOneRec index=results/tiny-cpu" "sidrec SIDs=results/tiny-cpu-oursids"
    sidrec-results --seeds results/tiny-cpu-seed1 results/tiny-cpu-seed2 --out results/tiny-cpu-seeds.md
    sidrec-results --sid_methods published=runs/p-valid,runs/p-test rq_vae=runs/v-valid,runs/v-test

RUN_DIR is what ``scripts/run_pipeline.sh`` fills: ``sft/`` ``eval_sft/`` ``grpo/`` ``eval_grpo/`` (recipe
outputs) and ``baselines.json`` (+ ``baselines/``). Missing stages are left out. Plots go to ``RUN_DIR/plots/``. The
model reported against the baselines is chosen on valid (`final_model`). Differences between two rankings of the test
users carry paired-bootstrap standard errors (`sidrec.analysis.bootstrap`) when both kept their predictions.
``--seeds`` summarises runs that differ only in their seed (``scripts/run_seeds.sh``): mean ± sd over seeds, and
GRPO minus SFT per seed with paired-bootstrap standard errors (`grpo_minus_sft`).
``--sid_methods`` compares SID indexes of one catalog (`sid_methods_report`): their diagnostics, and test HR/NDCG with
paired-bootstrap standard errors against the first.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from sidrec.analysis.bootstrap import (
    KS,
    file_differences,
    mean_sd,
    paired_differences,
    read_prediction_pair,
    read_predictions,
    seeds_summary,
    top1_changes,
)
from sidrec.analysis.plots import load_json, make_plots
from sidrec.analysis.report import metrics_table, per_level_tables
from sidrec.atomic_io import atomic_write_text
from sidrec.errors import UserError

STAGES = (("SFT", "sft", "eval_sft"), ("RL (GRPO)", "grpo", "eval_grpo"))


def versus_baseline(
    model: Mapping, baseline: Mapping, ks=KS, errors: Mapping | None = None, names=("model", "baseline")
) -> tuple[bool, str]:
    """Whether ``model`` is above ``baseline`` on HR@K and NDCG@K for every K, and a markdown table saying where.

    ``errors`` (``{"HR@K": (difference, standard error)}``, `sidrec.analysis.bootstrap.paired_differences`) puts each
    difference's standard error beside it.

    >>> model, base = {"HR@1": 0.2, "NDCG@1": 0.2}, {"HR@1": 0.1, "NDCG@1": 0.1}
    >>> ok, table = versus_baseline(model, base, ks=(1,))
    >>> ok
    True
    >>> print(table.splitlines()[-1])
    | K=1 | 0.2000 vs 0.1000 (+0.1000) | 0.2000 vs 0.1000 (+0.1000) |
    >>> errors = {"HR@1": (0.1, 0.03), "NDCG@1": (0.1, 0.025)}
    >>> print(versus_baseline(model, base, (1,), errors)[1].splitlines()[-1])
    | K=1 | 0.2000 vs 0.1000 (+0.1000 ± 0.0300) | 0.2000 vs 0.1000 (+0.1000 ± 0.0250) |
    """
    vs = f"({names[0]} vs {names[1]})"
    lines = [f"| K | HR@K {vs} | NDCG@K {vs} |", "| --- | --- | --- |"]
    ok = True
    for k in ks:
        cells = []
        for name in ("HR", "NDCG"):
            a, b = model[f"{name}@{k}"], baseline[f"{name}@{k}"]
            ok &= a > b
            se = f" ± {errors[f'{name}@{k}'][1]:.4f}" if errors else ""
            cells.append(f"{a:.4f} vs {b:.4f} ({a - b:+.4f}{se})")
        lines.append(f"| K={k} | " + " | ".join(cells) + " |")
    return ok, "\n".join(lines)


def _summary_metrics(run_dir: str, train: str) -> dict:
    return (load_json(os.path.join(run_dir, train, "run_summary.json")) or {}).get("metrics") or {}


def _valid_evals(run_dir: str, train: str) -> tuple[str | None, list[dict]]:
    metrics = _summary_metrics(run_dir, train)
    return metrics.get("metric_for_best_model"), [e for e in metrics.get("evaluations", []) if "eval_ndcg@10" in e]


def selection_lines(run_dir: str) -> list[str]:
    """How each training stage chose its checkpoint on valid (from run_summary.json).

    A GRPO evaluation at step 0 (``eval_on_start``) scores its start model; it is shown but is no checkpoint.
    """
    out = []
    for name, train, _ in STAGES:
        metric, evals = _valid_evals(run_dir, train)
        if not evals:
            continue
        where = "epoch" if name == "SFT" else "step"
        saved = [e for e in evals if e.get(where, 0) > 0] or evals
        best = max(saved, key=lambda e: e["eval_ndcg@10"])
        curve = ", ".join(f"{e[where]:g}: {e['eval_ndcg@10']:.4f}" for e in evals)
        line = (
            f"- {name}: {metric} on {evals[0].get('eval_ranked_rows')} valid users "
            f"after each {where} ({curve}); kept {where} {best[where]:g} (HR@10 {best['eval_hr@10']:.4f})."
        )
        averaged = _summary_metrics(run_dir, train).get("checkpoint_average")
        if averaged:
            score = averaged["metrics"].get("eval_ndcg@10")
            verdict = "above" if averaged["kept"] else "not above"
            line += (
                f" The weight average of {', '.join(averaged['checkpoints'])} scored {score:.4f}, {verdict} "
                f"the kept {where}'s {averaged['best_metric']:.4f}: "
                + ("the average is the model." if averaged["kept"] else "the checkpoint stays the model.")
            )
        out.append(line)
    return out


def final_model(run_dir: str, rows: Mapping[str, Mapping]) -> tuple[str | None, str]:
    """The model the run reports, chosen on valid, and why: GRPO's, unless it never beat the model it started from.

    GRPO with ``eval_on_start`` ranks its start model (SFT's) on its valid users before the first update; when no
    later evaluation has a higher valid ``eval_ndcg@10``, GRPO did not improve on SFT and the SFT model is kept.

    >>> import tempfile; from sidrec.atomic_io import atomic_write_json
    >>> run = tempfile.mkdtemp()
    >>> evals = [{"step": 0, "eval_ndcg@10": 0.09}, {"step": 16, "eval_ndcg@10": 0.08}]
    >>> atomic_write_json(f"{run}/grpo/run_summary.json", {"metrics": {"evaluations": evals}})
    >>> final_model(run, {"SFT": {}, "RL (GRPO)": {}})[0]
    'SFT'
    """
    if "RL (GRPO)" not in rows:
        return ("SFT" if "SFT" in rows else None), ""
    _, evals = _valid_evals(run_dir, "grpo")
    start = [e["eval_ndcg@10"] for e in evals if e.get("step") == 0]
    later = [e["eval_ndcg@10"] for e in evals if e.get("step", 0) > 0]
    if not (start and later and "SFT" in rows):
        return "RL (GRPO)", ""
    if max(later) > start[0]:
        return "RL (GRPO)", (
            f"GRPO's best valid NDCG@10 ({max(later):.4f}) is above its start model's ({start[0]:.4f}), so the GRPO "
            "model is the result."
        )
    return "SFT", (
        f"GRPO's best valid NDCG@10 ({max(later):.4f}) is not above its start model's ({start[0]:.4f}): GRPO did not "
        "improve on SFT on valid, so the SFT model is the result."
    )


def write_results(run_dir: str, command: str = "") -> str:
    """Collect the run's metrics into RESULTS.md (atomically); returns its path."""
    rows, walls = {}, {}
    for name, train, ev in STAGES:
        metrics = load_json(os.path.join(run_dir, ev, "metrics.json"))
        if metrics is not None:
            rows[name] = metrics
        for d in (train, ev):
            summary = load_json(os.path.join(run_dir, d, "run_summary.json"))
            if summary:
                walls[d] = summary.get("wall_time_s", {}).get("total")
    baselines = load_json(os.path.join(run_dir, "baselines.json")) or {}
    all_rows = {**rows, **{f"baseline: {k}": v for k, v in baselines.get("metrics", {}).items()}}
    plots = make_plots(run_dir, all_rows)
    lines = ["# Results", ""]
    if command:
        lines += ["Made by:", "", "```bash", command, "```", ""]
    lines += ["## HR@K and NDCG@K (test split)", "", metrics_table(all_rows), ""]
    name, why = final_model(run_dir, rows)
    transition = baselines.get("metrics", {}).get("last-item transition")
    evals = {n: f"{ev}/predictions.jsonl" for n, _, ev in STAGES}
    if name and transition:
        rule = baselines.get("predictions", {}).get("last-item transition")
        errors, note = file_differences(run_dir, evals[name], rule)
        ok, table = versus_baseline(rows[name], transition, errors=errors)
        verdict = "above" if ok else "NOT above"
        lines += [
            f"**{name} vs the last-item transition baseline**: {verdict} it on HR@K and NDCG@K for every K "
            "in 1, 3, 5, 10.",
            "",
            *([f"The model reported is chosen on valid: {why}", ""] if why else []),
            table,
            "",
            note,
            "",
        ]
    ks = [k for k in KS if all(f"{m}@{k}" in rows.get(s, {}) for m in ("HR", "NDCG") for s in ("SFT", "RL (GRPO)"))]
    if ks:
        errors, note = file_differences(run_dir, evals["RL (GRPO)"], evals["SFT"])
        _, table = versus_baseline(rows["RL (GRPO)"], rows["SFT"], ks, errors, names=("GRPO", "SFT"))
        lines += ["**GRPO minus SFT** on the test split:", "", table, "", note, ""]
    selection = selection_lines(run_dir)
    if selection:
        lines += ["Checkpoints were chosen on the valid split only:", "", *selection, ""]
    if walls:
        lines += ["Wall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in walls.items() if v), ""]
    for name, m in rows.items():
        lines += [f"## Per-level analysis: {name}", "", per_level_tables(m["per_level"]), ""]
    for name, record in (baselines.get("neural") or {}).items():
        log = record["log"]
        lines += [
            f"{name}: best epoch {log.get('best_epoch')} of {len(log['epochs'])} (early-stopped on valid "
            f"{log.get('select_metric')}).",
            "",
        ]
    if plots:
        lines += ["## Plots", ""] + [f"![{os.path.basename(p)}](plots/{os.path.basename(p)})" for p in plots] + [""]
    path = os.path.join(run_dir, "RESULTS.md")
    atomic_write_text(path, "\n".join(lines))
    return path


def compare_indexes(runs: Mapping[str, str]) -> str:
    """A markdown table comparing pipeline runs that differ in their SID index (``{label: run_dir}``): the index's
    distinct SIDs and collisions (from the run's ``pipeline.json`` data), test HR/NDCG@10 after SFT and after GRPO,
    and the share of users whose top-1 prediction has the target's first-level code (and first two levels)."""
    from sidrec.data.minionerec import find_files, load_catalog

    lines = [
        "| SID index | distinct SIDs / items | collisions (items - distinct SIDs) | stage | HR@10 | NDCG@10 | top-1 L1 | top-1 L1+L2 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, run_dir in runs.items():
        record = load_json(os.path.join(run_dir, "pipeline.json")) or {}
        catalog = load_catalog(find_files(record["data_dir"], record["category"], ()))
        items = len(catalog.items)
        shared = items - len(catalog.vocab)
        for name, _, ev in STAGES:
            m = load_json(os.path.join(run_dir, ev, "metrics.json"))
            if m is None:
                continue
            cum = m["per_level"]["cumulative"]
            lines.append(
                f"| {label} | {len(catalog.vocab)} / {items} | {shared} | {name} | {m['HR@10']:.4f} | "
                f"{m['NDCG@10']:.4f} | {cum['L1']['1']:.4f} | {cum['L1+L2']['1']:.4f} |"
            )
    return "\n".join(lines)


def _config_value(summary: Mapping, key: str, path: str):
    """A setting from a ``run_summary.json``'s config, whichever of the run's config classes holds it."""
    for section in summary.get("config", {}).values():
        if isinstance(section, Mapping) and key in section:
            return section[key]
    raise UserError(f"{path}: no {key} in its config")


def _index_diagnostics(data_dir: str, category: str) -> dict:
    """A SID index's diagnostics: its build's ``sid_diagnostics.json`` (`sidrec-build-sids`), or, for an index made
    elsewhere (MiniOneRec's published one), what its codes alone tell (no build time, reconstruction or collisions
    before resolution)."""
    import numpy as np

    from sidrec.codebook.diagnostics import codes_used, collisions, largest_prefix_group, perplexity

    built = load_json(os.path.join(data_dir, "index", f"{category}.sid_diagnostics.json"))
    if built is not None:
        return built
    index = load_json(os.path.join(data_dir, "index", f"{category}.index.json"))
    if index is None:
        raise UserError(f"{data_dir}: no index/{category}.index.json")
    codes = np.array([[int(tok.rsplit("_", 1)[1].rstrip(">")) for tok in sid] for sid in index.values()])
    return {
        "method": "published",
        "items": len(codes),
        "collisions_after_resolution": collisions(codes),
        "levels": [
            {"codes_used": u, "perplexity": round(p, 3), "largest_prefix_group": g}
            for u, p, g in zip(codes_used(codes), perplexity(codes), largest_prefix_group(codes), strict=True)
        ],
    }


def _read_eval(eval_dir: str) -> dict:
    """One evaluation dir: its split, the index it ranked with, metrics, predictions and its model's training time."""
    path = os.path.join(eval_dir, "run_summary.json")
    summary, metrics = load_json(path), load_json(os.path.join(eval_dir, "metrics.json"))
    predictions = os.path.join(eval_dir, "predictions.jsonl")
    if summary is None or metrics is None or not os.path.isfile(predictions):
        raise UserError(
            f"{eval_dir}: not a finished evaluation (needs run_summary.json, metrics.json, predictions.jsonl)"
        )
    train = load_json(os.path.join(_config_value(summary, "model_name_or_path", path), "run_summary.json")) or {}
    return {
        "split": _config_value(summary, "split", path),
        "data_dir": _config_value(summary, "data_dir", path),
        "category": _config_value(summary, "category", path),
        "metrics": metrics,
        "predictions": read_predictions(predictions),
        "train_s": train.get("wall_time_s", {}).get("total"),
    }


def _read_index_evals(runs: Mapping[str, Sequence[str]]) -> dict[str, dict[str, dict]]:
    """``{label: {split: evaluation}}``; every label needs a test evaluation, one per split, all with one index."""
    evals: dict[str, dict[str, dict]] = {}
    for label, dirs in runs.items():
        by_split = evals.setdefault(label, {})
        for d in dirs:
            e = _read_eval(d)
            if e["split"] in by_split:
                raise UserError(f"{label}: two {e['split']} evaluations ({d} and another)")
            by_split[e["split"]] = e
        if "test" not in by_split:
            raise UserError(f"{label}: no test evaluation among {', '.join(dirs)}")
        if len({(e["data_dir"], e["category"]) for e in by_split.values()}) > 1:
            raise UserError(f"{label}: its evaluations rank with different indexes")
    return evals


def _diagnostics_table(evals: Mapping[str, Mapping[str, dict]]) -> list[str]:
    fmt = lambda v, d=1: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
    lines = [
        "| index | method s | collisions before → after | recon. MSE | codes used per level | perplexity per level "
        "| largest prefix group per level |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, by_split in evals.items():
        d = _index_diagnostics(by_split["test"]["data_dir"], by_split["test"]["category"])
        levels = d["levels"]
        lines.append(
            f"| {label} | {fmt(d.get('wall_time_s', {}).get('method'))} | "
            f"{d.get('collisions_before_resolution', '—')} → {d['collisions_after_resolution']} | "
            f"{fmt(d.get('reconstruction_mse'), 3)} | {' / '.join(str(lv['codes_used']) for lv in levels)} | "
            f"{' / '.join(str(round(lv['perplexity'])) for lv in levels)} | "
            f"{' / '.join(str(lv['largest_prefix_group']) for lv in levels[:-1])} |"
        )
    return lines


def _difference(model: dict, baseline: dict, ks: Sequence[int]) -> dict[str, tuple[float, float]]:
    """Paired bootstrap of two evaluations of one split under two indexes (1,000 resamples, seed 0)."""
    return paired_differences(
        model["predictions"], baseline["predictions"], ks=ks, n_resamples=1000, seed=0, across_indexes=True
    )


def _metrics_table(evals: Mapping[str, Mapping[str, dict]], ks: Sequence[int]) -> list[str]:
    base = next(iter(evals))
    base_test, base_valid = evals[base]["test"], evals[base].get("valid")
    keys = [f"HR@{k}" for k in ks] + [f"NDCG@{k}" for k in ks if k > 1]
    lines = [
        "| index | SFT s | valid NDCG@10 | " + " | ".join(f"test {k}" for k in keys) + " |",
        "| --- " * (3 + len(keys)) + "|",
    ]
    for label, by_split in evals.items():
        test, valid = by_split["test"], by_split.get("valid")
        valid_cell = "—" if valid is None else f"{valid['metrics']['NDCG@10']:.4f}"
        cells = [f"{test['metrics'][k]:.4f}" for k in keys]
        if label != base:
            if valid is not None and base_valid is not None:
                d, se = _difference(valid, base_valid, (10,))["NDCG@10"]
                valid_cell += f" ({d:+.4f} ± {se:.4f})"
            diff = _difference(test, base_test, ks)
            cells = [f"{c} ({diff[k][0]:+.4f} ± {diff[k][1]:.4f})" for c, k in zip(cells, keys, strict=True)]
        train_s = "—" if test["train_s"] is None else f"{test['train_s']:.0f}"
        lines.append(f"| {label} | {train_s} | {valid_cell} | " + " | ".join(cells) + " |")
    return lines


def sid_methods_report(runs: Mapping[str, Sequence[str]], ks: Sequence[int] = KS, plot: str | None = None) -> str:
    """Markdown comparing SID indexes of one catalog, each with the same recipe: ``{label: [eval dirs]}``, the
    evaluations (`recipes/evaluate.py` output dirs, valid and/or test) of the model trained on that index. The first
    label is the baseline.

    Two tables: each index's diagnostics (read from the index its evaluations ranked with), and valid NDCG@10 with
    test HR@K / NDCG@K, every other index's difference to the baseline with one standard error of a paired bootstrap
    over the users of the split (`paired_differences` with ``across_indexes``: each index's ranking scored against
    its own target SID; 1,000 resamples, seed 0). ``plot``: a PNG of every index's code usage per level, side by side."""
    evals = _read_index_evals(runs)
    base = next(iter(evals))
    if plot:
        from sidrec.codebook.diagnostics import plot_code_usage

        indexes = {}
        for label, by_split in evals.items():
            test = by_split["test"]
            path = os.path.join(test["data_dir"], "index", f"{test['category']}.index.json")
            if (index := load_json(path)) is None:
                raise UserError(f"{label}: no {path} to plot")
            indexes[label] = list(index.values())
        plot_code_usage(indexes, plot, f"{evals[base]['test']['category']}: code usage per SID index")
    users = len(evals[base]["test"]["predictions"])
    return "\n".join(
        _diagnostics_table(evals)
        + [""]
        + _metrics_table(evals, ks)
        + [
            "",
            f"In brackets: minus {base}, ± one standard error (paired bootstrap over the {users} test users, and the "
            "valid users for valid, 1,000 resamples, seed 0; each index's ranking scored against its own target SID).",
        ]
    )


def seeds_report(run_dirs: Sequence[str]) -> str:
    """Markdown: per stage (SFT, GRPO, the model each run reports, the transition baseline) and metric, each run's
    test value and the mean ± sd (ddof=1) over the runs, which differ only in their seed (``scripts/run_seeds.sh``)."""
    stages: dict[str, dict[str, Mapping]] = {}
    for d in run_dirs:
        seed = (load_json(os.path.join(d, "pipeline.json")) or {}).get("seed")
        label = f"{os.path.basename(os.path.normpath(d))} (seed {seed})"
        rows = {n: m for n, _, ev in STAGES if (m := load_json(os.path.join(d, ev, "metrics.json"))) is not None}
        for n, m in rows.items():
            stages.setdefault(n, {})[label] = m
        reported = final_model(d, rows)[0]
        if reported:
            stages.setdefault("The reported model (chosen on valid)", {})[f"{label}: {reported}"] = rows[reported]
        transition = (
            (load_json(os.path.join(d, "baselines.json")) or {}).get("metrics", {}).get("last-item transition")
        )
        if transition:
            stages.setdefault("Last-item transition baseline", {})[label] = transition
    return seeds_summary(stages) + grpo_minus_sft(run_dirs)


DIFF_KEYS = ("HR@1", "HR@3", "HR@5", "HR@10", "NDCG@3", "NDCG@5", "NDCG@10")


def grpo_minus_sft(run_dirs: Sequence[str], keys: Sequence[str] = DIFF_KEYS) -> str:
    """Markdown: per run, what valid decided (GRPO's whole-valid NDCG@10 at its start, step 0, and at its best later
    evaluation; the model the run reports) and GRPO minus SFT on test per metric, with one paired-bootstrap standard
    error and the top-1 changes (`top1_changes`) when both evaluations kept their predictions; then the mean ± sd of
    each difference over the runs and, per metric, in how many runs GRPO is above SFT by at least one standard error.
    Empty when no run has both evaluations.
    """
    lines, diffs, above = [], {k: [] for k in keys}, dict.fromkeys(keys, 0)
    with_errors = 0
    for d in run_dirs:
        rows = {n: m for n, _, ev in STAGES if (m := load_json(os.path.join(d, ev, "metrics.json"))) is not None}
        if len(rows) < len(STAGES):
            continue
        seed = (load_json(os.path.join(d, "pipeline.json")) or {}).get("seed")
        _, evals = _valid_evals(d, "grpo")
        start = [e["eval_ndcg@10"] for e in evals if e.get("step") == 0]
        later = [e for e in evals if e.get("step", 0) > 0]
        valid = "—"
        if start and later:
            best = max(later, key=lambda e: e["eval_ndcg@10"])
            valid = f"{start[0]:.4f} -> {best['eval_ndcg@10']:.4f} (step {best['step']})"
        paths = ("eval_grpo/predictions.jsonl", "eval_sft/predictions.jsonl")
        records, _ = read_prediction_pair(d, *paths)
        errors = file_differences(d, *paths, records)[0] if records else None  # None: they rank other users
        moved = "—"
        if errors:
            grpo, sft = records
            changed, gained, lost = top1_changes(grpo, sft)
            moved = f"{changed / len(grpo):.1%} (+{gained} / -{lost})"
        with_errors += errors is not None
        cells = []
        for k in keys:
            diff = rows["RL (GRPO)"][k] - rows["SFT"][k]
            diffs[k].append(diff)
            if errors:
                above[k] += diff >= errors[k][1] > 0
            cells.append(f"{diff:+.4f}" + (f" ± {errors[k][1]:.4f}" if errors else ""))
        label = f"{os.path.basename(os.path.normpath(d))} (seed {seed})"
        lines.append(f"| {label} | {valid} | {final_model(d, rows)[0]} | {moved} | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    summary = []
    for k in keys:
        mean, sd = mean_sd(diffs[k])
        summary.append(f"{mean:+.4f} ± {sd:.4f}" if len(diffs[k]) > 1 else f"{mean:+.4f}")
    n = len(lines)
    out = [
        "",
        "## GRPO minus SFT",
        "",
        "Per run: GRPO's whole-valid NDCG@10 at its start (step 0, the SFT model) and at its best later evaluation, "
        "the model the run reports (chosen on valid), on test the share of users whose top-1 SID GRPO changed (and "
        "the top-1 hits it gained and lost), and GRPO minus SFT on test, ± one standard error (paired bootstrap over "
        "the test users, 1,000 resamples); last row: the mean ± sd of each difference over the runs.",
        "",
        "| run | valid NDCG@10: start -> best | reported | top-1 changed (hits) | " + " | ".join(keys) + " |",
        "| --- | --- | --- | --- |" + " --- |" * len(keys),
        *lines,
        "| mean ± sd | | | | " + " | ".join(summary) + " |",
        "",
    ]
    if with_errors == n:
        out += [
            f"Runs in which GRPO is above SFT on test by at least one standard error (of {n}): "
            + ", ".join(f"{k} {above[k]}" for k in keys)
            + ".",
            "",
        ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?")
    parser.add_argument("--command", default="", help="the command that made the run (written into RESULTS.md)")
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="LABEL=RUN_DIR",
        help="print a table comparing runs made with other SID indexes",
    )
    parser.add_argument(
        "--seeds", nargs="+", metavar="RUN_DIR", help="mean ± sd over run dirs that differ only in their seed"
    )
    parser.add_argument(
        "--sid_methods",
        nargs="+",
        metavar="LABEL=EVAL_DIR[,EVAL_DIR]",
        help="compare SID indexes of one catalog: per index, the valid and test evaluations of the model trained on "
        "it; the first is the baseline",
    )
    parser.add_argument("--plot", help="with --sid_methods: a PNG of every index's code usage per level")
    parser.add_argument("--out", help="with --seeds or --sid_methods: the markdown file to write (default: print it)")
    parser.add_argument(
        "--final-metrics",
        action="store_true",
        help="print the metrics.json of the model the run reports (chosen on valid) instead of RESULTS.md's path",
    )
    args = parser.parse_args(argv)
    if args.compare:
        print(compare_indexes(dict(item.split("=", 1) for item in args.compare)))
        return
    if args.seeds or args.sid_methods:
        if args.sid_methods:
            if bad := [item for item in args.sid_methods if "=" not in item]:
                parser.error(f"--sid_methods takes LABEL=EVAL_DIR[,EVAL_DIR], got {bad[0]!r}")
            runs = {label: dirs.split(",") for label, dirs in (item.split("=", 1) for item in args.sid_methods)}
            try:
                text = sid_methods_report(runs, plot=args.plot)
            except UserError as e:
                parser.error(str(e))
        else:
            text = seeds_report(args.seeds)
        if args.out:
            atomic_write_text(args.out, text)
        print(args.out or text)
        return
    if not args.run_dir:
        parser.error(
            "give a run_dir (or --compare LABEL=RUN_DIR ..., --seeds RUN_DIR ..., --sid_methods LABEL=EVAL_DIR,EVAL_DIR ...)"
        )
    path = write_results(args.run_dir, args.command)
    if args.final_metrics:
        rows = {name: True for name, _, ev in STAGES if os.path.isfile(os.path.join(args.run_dir, ev, "metrics.json"))}
        name = final_model(args.run_dir, rows)[0]
        print(path, file=sys.stderr)
        print(os.path.join(args.run_dir, {n: ev for n, _, ev in STAGES}[name], "metrics.json") if name else path)
    else:
        print(path)


if __name__ == "__main__":
    main()
