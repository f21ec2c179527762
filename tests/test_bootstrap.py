"""Error bars: per-user metrics, the paired bootstrap, mean ± sd over seeds, and where RESULTS.md shows them."""

import json
import math
import os
import statistics
import subprocess
import sys

import numpy as np
import pytest

from sidrec.analysis.baselines import SeqBaselineConfig, run_baselines, write_baselines
from sidrec.analysis.bootstrap import (
    differences,
    mean_sd,
    paired_bootstrap,
    paired_differences,
    per_user_metrics,
    seeds_table,
)
from sidrec.analysis.pipeline import differences as record_differences
from sidrec.analysis.pipeline import fingerprint
from sidrec.analysis.results import seeds_report, write_results
from sidrec.atomic_io import atomic_write_json, atomic_write_text
from sidrec.metrics import compute_metrics, hr_ndcg

from .conftest import REPO
from .helpers import TINY

T = ["<a_1><b_1>", "<a_2><b_2>", "<a_3><b_3>", "<a_4><b_4>"]  # the four users' targets
OTHER = [f"<a_9><b_{i}>" for i in range(10)]


def ranked(target, rank):
    """Ten SIDs with ``target`` at 0-based ``rank`` (None: not in the list)."""
    out = list(OTHER)
    if rank is not None:
        out.insert(rank, target)
    return out[:10]


def test_per_user_metrics_on_a_hand_case():
    preds = [ranked(T[0], 0), ranked(T[1], 1), ranked(T[2], 3), ranked(T[3], None)]
    m = per_user_metrics(preds, T, ks=(1, 3, 5))
    assert m["HR@1"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert m["HR@3"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert m["HR@5"].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert m["NDCG@1"].tolist() == [1.0, 0.0, 0.0, 0.0]
    # a hit at 0-based rank 1 is worth 1/log2(3) = 0.6309, at rank 3 1/log2(5) = 0.4307
    assert m["NDCG@3"].round(4).tolist() == [1.0, 0.6309, 0.0, 0.0]
    assert m["NDCG@5"].round(4).tolist() == [1.0, 0.6309, 0.4307, 0.0]
    with pytest.raises(ValueError, match="3 prediction lists for 4 targets"):
        per_user_metrics(preds[:3], T)


def test_per_user_means_are_hr_ndcg():
    rng = np.random.default_rng(1)
    targets = [f"<a_{i}><b_0>" for i in rng.integers(0, 30, 300)]
    preds = [[f"<a_{i}><b_0>" for i in rng.permutation(30)[:10]] for _ in targets]
    ks = (1, 3, 5, 10)
    per_user, expected = per_user_metrics(preds, targets, ks), hr_ndcg(preds, targets, ks)
    assert 0 < expected["HR@10"] < 1
    assert {key: float(v.mean()) for key, v in per_user.items()} == pytest.approx(expected, rel=1e-12, abs=0)


def loop_bootstrap_se(a, b, n_resamples, seed):
    """The paired bootstrap written out: the same draws (one row of user indices per resample), one user at a time."""
    n = len(a)
    draws = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    means = []
    for row in draws:
        total = 0.0
        for i in row:
            total += a[i] - b[i]
        means.append(total / n)
    return statistics.stdev(means)


def test_paired_bootstrap_on_exact_cases():
    b = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    assert paired_bootstrap(b, b) == (0.0, 0.0)
    assert paired_bootstrap(b + 0.5, b) == (0.5, 0.0)  # the same shift for every user: no spread at all
    with pytest.raises(ValueError, match=r"got shapes \(5,\) and \(4,\)"):
        paired_bootstrap(b, b[:4])
    # paired: b varies a lot between users, a - b does not
    # differences 0.5, 0.5, 0.5, 0.5, 0: mean 0.4, sd (ddof 0) 0.2, over sqrt(5) users
    assert paired_bootstrap(b + np.array([0.5, 0.5, 0.5, 0.5, 0.0]), b) == pytest.approx((0.4, 0.0894), abs=0.005)


def test_paired_bootstrap_against_a_loop_and_the_formula():
    a, b = [1.0, 0.0, 1.0, 1.0, 0.0, 0.5, 0.0], [0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    diff, se = paired_bootstrap(np.array(a), np.array(b), n_resamples=300, seed=3)
    assert diff == pytest.approx(1.5 / 7)  # 1 + 0 + 0 + 1 - 1 + 0.5 + 0
    assert se == pytest.approx(loop_bootstrap_se(a, b, 300, 3), rel=1e-12)
    # the same seed, the same answer; another seed, another draw
    assert paired_bootstrap(np.array(a), np.array(b), n_resamples=300, seed=3) == (diff, se)
    assert paired_bootstrap(np.array(a), np.array(b), n_resamples=300, seed=4)[1] != se
    # iid differences: the bootstrap SE of their mean is sd / sqrt(n)
    rng = np.random.default_rng(0)
    x, y = rng.normal(0.1, 1.0, 2000), rng.normal(0.0, 0.5, 2000)
    _, se = paired_bootstrap(x, y)
    assert se == pytest.approx(np.std(x - y, ddof=1) / math.sqrt(2000), rel=0.1)


def test_differences_of_two_rankings():
    model = [ranked(T[0], 0), ranked(T[1], 0), ranked(T[2], 2), ranked(T[3], 0)]
    base = [ranked(T[0], 1), ranked(T[1], 0), ranked(T[2], None), ranked(T[3], 0)]
    d = differences(model, base, T, ks=(1, 3))
    assert sorted(d) == ["HR@1", "HR@3", "NDCG@1", "NDCG@3"]
    assert d["HR@1"][0] == 0.25  # user 1: hit at 0 against at 1
    assert d["HR@3"][0] == 0.25  # user 3: hit at 2 against none
    # (1 - 1/log2(3)) + 1/log2(4), over 4 users
    assert d["NDCG@3"][0] == pytest.approx((1 - 0.6309298 + 0.5) / 4)
    assert all(se > 0 for _, se in d.values())
    records = [
        {"user_id": f"U{i}", "target": t, "predictions": p} for i, (t, p) in enumerate(zip(T, model, strict=True))
    ]
    assert paired_differences(records, records, ks=(1,)) == {"HR@1": (0.0, 0.0), "NDCG@1": (0.0, 0.0)}
    with pytest.raises(ValueError, match="row 1 is user U1"):
        paired_differences(records, [records[0], records[2], records[1], records[3]])


def test_mean_and_sd_over_seeds():
    mean, sd = mean_sd([0.10, 0.20, 0.60])
    assert mean == pytest.approx(0.3) and sd == pytest.approx(math.sqrt((0.04 + 0.01 + 0.09) / 2))  # 0.2646
    assert math.isnan(mean_sd([0.5])[1])
    runs = {
        "s1": {"HR@1": 0.10, "NDCG@1": 0.05},
        "s2": {"HR@1": 0.20, "NDCG@1": 0.05},
        "s3": {"HR@1": 0.60, "NDCG@1": 0.08},
    }
    lines = seeds_table(runs, ["HR@1", "NDCG@1"]).splitlines()  # NDCG@1: mean 0.06, sd sqrt((1e-4 + 1e-4 + 4e-4) / 2)
    assert lines[0] == "| run | HR@1 | NDCG@1 |"
    assert lines[3] == "| s2 | 0.2000 | 0.0500 |"
    assert lines[-1] == "| mean ± sd | 0.3000 ± 0.2646 | 0.0600 ± 0.0173 |"


def write_eval(run, stage, preds):
    """An eval dir as recipes/evaluate.py writes it: predictions.jsonl and metrics.json of the same rankings."""
    records = [{"user_id": f"U{i}", "target": t, "predictions": p, "scores": [-1.0] * len(p)}
               for i, (t, p) in enumerate(zip(T, preds, strict=True))]  # fmt: skip
    atomic_write_text(str(run / stage / "predictions.jsonl"), "".join(json.dumps(r) + "\n" for r in records))
    atomic_write_json(str(run / stage / "metrics.json"), compute_metrics(preds, T, num_beams=10, ks=(1, 3, 5, 10)))


def test_results_md_shows_paired_standard_errors(tmp_path):
    run = tmp_path / "run"
    # SFT hits users 0 and 3 at rank 0, user 1 at rank 2, misses user 2; GRPO hits everyone at rank 0;
    # the transition rule hits everyone at rank 1
    write_eval(run, "eval_sft", [ranked(T[0], 0), ranked(T[1], 2), ranked(T[2], None), ranked(T[3], 0)])
    write_eval(run, "eval_grpo", [ranked(t, 0) for t in T])
    rule = [{"user_id": f"U{i}", "target": t, "predictions": ranked(t, 1)} for i, t in enumerate(T)]
    atomic_write_text(str(run / "baselines" / "rule.jsonl"), "".join(json.dumps(r) + "\n" for r in rule))
    rule_metrics = compute_metrics([r["predictions"] for r in rule], T, num_beams=10, ks=(1, 3, 5, 10))
    baselines = {
        "metrics": {"last-item transition": rule_metrics},
        "predictions": {"last-item transition": "baselines/rule.jsonl"},
    }
    atomic_write_json(str(run / "baselines.json"), baselines)

    text = open(write_results(str(run))).read()
    # GRPO (reported: no valid evaluations to say otherwise) against the rule: the same gain for every user, no spread.
    # NDCG@3: 1 against 1/log2(3) = 0.6309
    assert "| K=1 | 1.0000 vs 0.0000 (+1.0000 ± 0.0000) | 1.0000 vs 0.0000 (+1.0000 ± 0.0000) |" in text
    assert "| K=3 | 1.0000 vs 1.0000 (+0.0000 ± 0.0000) | 1.0000 vs 0.6309 (+0.3691 ± 0.0000) |" in text
    # GRPO minus SFT, per user: HR@1 0, 1, 1, 0 -> +0.5; HR@3 0, 0, 1, 0 -> +0.25;
    # NDCG@3 0, 1 - 1/log2(4) = 0.5, 1, 0 -> +0.375 (SFT 0.625)
    se_hr1 = loop_bootstrap_se([1, 1, 1, 1], [1, 0, 0, 1], 1000, 0)
    se_hr3 = loop_bootstrap_se([1, 1, 1, 1], [1, 1, 0, 1], 1000, 0)
    se_ndcg3 = loop_bootstrap_se([1, 1, 1, 1], [1, 0.5, 0, 1], 1000, 0)
    assert se_hr1 == pytest.approx(0.25, rel=0.1)  # sd of (0, 1, 1, 0) with ddof 0 is 0.5, over sqrt(4)
    assert se_hr3 == pytest.approx(0.2165, rel=0.1)  # sqrt(0.25 * 0.75) / 2
    assert "| K | HR@K (GRPO vs SFT) | NDCG@K (GRPO vs SFT) |" in text
    assert f"| K=1 | 1.0000 vs 0.5000 (+0.5000 ± {se_hr1:.4f}) | 1.0000 vs 0.5000 (+0.5000 ± {se_hr1:.4f}) |" in text
    assert f"| K=3 | 1.0000 vs 0.7500 (+0.2500 ± {se_hr3:.4f}) | 1.0000 vs 0.6250 (+0.3750 ± {se_ndcg3:.4f}) |" in text
    note = "± is one standard error of the difference: paired bootstrap over 4 test users, 1,000 resamples (seed 0)."
    assert text.count(note) == 2
    assert "| RL (GRPO) | 1.0000 |" in text  # the main table is unchanged

    # a run dir from before predictions were kept: the same tables without ±, and one line saying why
    os.remove(run / "eval_sft" / "predictions.jsonl")
    atomic_write_json(str(run / "baselines.json"), {"metrics": baselines["metrics"]})
    text = open(write_results(str(run))).read()
    assert "| K=1 | 1.0000 vs 0.0000 (+1.0000) | 1.0000 vs 0.0000 (+1.0000) |" in text
    assert "| K=1 | 1.0000 vs 0.5000 (+0.5000) |" in text and "±" not in text.replace("No ±", "")
    assert "No ± (standard errors): baselines.json names no baseline predictions; the run dir was made" in text
    assert "No ± (standard errors): eval_sft/predictions.jsonl missing" in text


def test_baselines_keep_their_rankings(tmp_path, small_data_dir, small_data):
    result = run_baselines(small_data_dir, "Synthetic", [SeqBaselineConfig(hidden=16, max_epochs=2, patience=2)])
    test = small_data.splits["test"]
    for name, records in result["predictions"].items():
        assert [(r["user_id"], r["target"]) for r in records] == [(r.user_id, r.item_sid) for r in test]
        assert all(len(r["predictions"]) == min(50, len(small_data.catalog.vocab)) for r in records)
        # the saved lists are the lists scored
        scored = hr_ndcg([r["predictions"] for r in records], [r.item_sid for r in test], (1, 5, 10, 50))
        assert scored == {key: result["metrics"][name][key] for key in scored}
    out = tmp_path / "run" / "baselines.json"
    write_baselines(result, str(out))
    saved = json.load(open(out))
    assert saved["predictions"] == {
        "most-popular": "baselines/most-popular.jsonl",
        "last-item transition": "baselines/last-item-transition.jsonl",
        "SASRec": "baselines/sasrec.jsonl",
    }
    assert saved["metrics"] == result["metrics"] and saved["neural"] == result["neural"]
    assert saved["models"] == {"SASRec": "baselines/sasrec.pt"}
    from sidrec.models.seqrec import load_seqrec

    model, index, cfg = load_seqrec(str(out.parent / "baselines" / "sasrec.pt"))
    assert cfg.hidden == 16 and set(index) == set(small_data.catalog.items)
    lines = open(out.parent / "baselines" / "last-item-transition.jsonl").read().splitlines()
    assert [json.loads(line) for line in lines] == result["predictions"]["last-item transition"]
    assert sorted(os.listdir(out.parent)) == ["baselines", "baselines.json"]  # no temporary files left


def test_the_seed_is_part_of_a_run_dirs_record(small_data_dir):
    configs = os.path.join(REPO, "recipes", "industrial", "tiny-cpu")
    plain = fingerprint(configs, small_data_dir, "Synthetic")
    old = {k: v for k, v in plain.items() if k != "seed"}  # a record written before seeds were recorded
    assert plain["seed"] is None and record_differences(old, plain) == []
    assert record_differences(plain, fingerprint(configs, small_data_dir, "Synthetic", seed=2)) == ["seed"]


def fake_run(run, seed, sft_hr1, grpo_hr1=None):
    atomic_write_json(str(run / "pipeline.json"), {"seed": seed})
    keys = [f"{m}@{k}" for m in ("HR", "NDCG") for k in (1, 3, 5, 10)]
    atomic_write_json(str(run / "eval_sft" / "metrics.json"), {**dict.fromkeys(keys, 0.5), "HR@1": sft_hr1})
    if grpo_hr1 is not None:
        atomic_write_json(str(run / "eval_grpo" / "metrics.json"), {**dict.fromkeys(keys, 0.5), "HR@1": grpo_hr1})


def test_seeds_report_on_hand_runs(tmp_path):
    fake_run(tmp_path / "x-seed1", 1, 0.10, 0.20)
    fake_run(tmp_path / "x-seed2", 2, 0.20, 0.40)
    fake_run(tmp_path / "x-seed3", 3, 0.60)  # GRPO missing: SFT is this run's reported model
    dirs = [str(tmp_path / f"x-seed{s}") for s in (1, 2, 3)]
    text = seeds_report(dirs)
    sections = {s.split("\n", 1)[0]: s for s in text.split("## ")[1:]}
    # no run kept predictions: GRPO minus SFT without ± (and no count of runs above by one standard error)
    assert list(sections) == ["SFT", "RL (GRPO)", "The reported model (chosen on valid)", "GRPO minus SFT"]
    assert "| x-seed2 (seed 2) | — | RL (GRPO) | — | +0.2000 | +0.0000 |" in sections["GRPO minus SFT"]
    assert "| mean ± sd | | | | +0.1500 ± 0.0707 | +0.0000 ± 0.0000 |" in sections["GRPO minus SFT"]
    assert "at least one standard error" not in sections["GRPO minus SFT"]
    assert "| x-seed2 (seed 2) | 0.2000 | 0.5000 |" in sections["SFT"]
    assert "| mean ± sd | 0.3000 ± 0.2646 | 0.5000 ± 0.0000 |" in sections["SFT"]
    assert "| mean ± sd | 0.3000 ± 0.1414 |" in sections["RL (GRPO)"]  # (0.2, 0.4)
    # reported: GRPO, GRPO, SFT -> (0.2, 0.4, 0.6)
    assert "| x-seed3 (seed 3): SFT | 0.6000 |" in sections["The reported model (chosen on valid)"]
    assert "| mean ± sd | 0.4000 ± 0.2000 |" in sections["The reported model (chosen on valid)"]

    out = tmp_path / "x-seeds.md"
    cmd = [sys.executable, "-m", "sidrec.analysis.results", "--seeds", *dirs, "--out", str(out)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out) and out.read_text() == text


def test_grpo_minus_sft_per_seed_with_standard_errors(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    # a: SFT hits users 0 and 3 at rank 0, user 1 at rank 2, misses user 2; GRPO hits everyone at rank 0, and valid
    # saw GRPO above its start (reported: GRPO)
    write_eval(a, "eval_sft", [ranked(T[0], 0), ranked(T[1], 2), ranked(T[2], None), ranked(T[3], 0)])
    write_eval(a, "eval_grpo", [ranked(t, 0) for t in T])
    # b: SFT hits everyone at rank 0, GRPO misses user 3; valid saw GRPO below its start (reported: SFT)
    write_eval(b, "eval_sft", [ranked(t, 0) for t in T])
    write_eval(b, "eval_grpo", [ranked(T[0], 0), ranked(T[1], 0), ranked(T[2], 0), ranked(T[3], None)])
    for run, seed, evals in ((a, 1, (0.09, 0.10, 0.095)), (b, 2, (0.10, 0.09, 0.08))):
        atomic_write_json(str(run / "pipeline.json"), {"seed": seed})
        steps = [{"step": s, "eval_ndcg@10": v} for s, v in zip((0, 20, 40), evals, strict=True)]
        atomic_write_json(str(run / "grpo" / "run_summary.json"), {"metrics": {"evaluations": steps}})
    section = seeds_report([str(a), str(b)]).split("## GRPO minus SFT", 1)[1]
    # a, per user: HR@1 0, 1, 1, 0 -> +0.5; HR@3..10 0, 0, 1, 0 -> +0.25; NDCG@3..10 0, 1 - 1/log2(4), 1, 0 -> +0.375
    se1 = loop_bootstrap_se([1, 1, 1, 1], [1, 0, 0, 1], 1000, 0)
    se3 = loop_bootstrap_se([1, 1, 1, 1], [1, 1, 0, 1], 1000, 0)
    se_n = loop_bootstrap_se([1, 1, 1, 1], [1, 0.5, 0, 1], 1000, 0)
    # top-1 changes: a, users 1 and 2 get a new top-1, both hits (+2); b, user 3 loses its hit (-1)
    row_a = (
        f"| a (seed 1) | 0.0900 -> 0.1000 (step 20) | RL (GRPO) | 50.0% (+2 / -0) | +0.5000 ± {se1:.4f} | "
        + " | ".join([f"+0.2500 ± {se3:.4f}"] * 3 + [f"+0.3750 ± {se_n:.4f}"] * 3)
    )
    assert row_a + " |" in section
    # b, per user: every metric 0, 0, 0, -1 -> -0.25
    se_b = loop_bootstrap_se([1, 1, 1, 0], [1, 1, 1, 1], 1000, 0)
    assert (
        "| b (seed 2) | 0.1000 -> 0.0900 (step 20) | SFT | 25.0% (+0 / -1) | "
        + " | ".join([f"-0.2500 ± {se_b:.4f}"] * 7)
        in section
    )
    # mean ± sd of (0.5, -0.25), (0.25, -0.25), (0.375, -0.25): sd = |x - y| / sqrt(2)
    assert (
        "| mean ± sd | | | | +0.1250 ± 0.5303 | " + " | ".join(["+0.0000 ± 0.3536"] * 3 + ["+0.0625 ± 0.4419"] * 3)
        in section
    )
    # above SFT by at least one standard error: in a only, where each gain is above its standard error (HR@1's 0.5
    # against about 0.25; HR@3's 0.25 against about sqrt(0.25 * 0.75) / 2 = 0.22)
    assert 0.5 > se1 and 0.25 > se3 and 0.375 > se_n
    counts = ", ".join(f"{k} 1" for k in ("HR@1", "HR@3", "HR@5", "HR@10", "NDCG@3", "NDCG@5", "NDCG@10"))
    assert f"Runs in which GRPO is above SFT on test by at least one standard error (of 2): {counts}." in section


TINY_SFT = """data_dir: {data}
category: Synthetic
sft_tasks: [sid_seq, item_alignment]
from_scratch: true
output_dir: unused
max_steps: 20
per_device_train_batch_size: 32
learning_rate: 3.0e-3
eval_strategy: "no"
early_stopping_patience: null
save_strategy: "no"
logging_steps: 5
bf16: false
report_to: none
seed: 42
""" + "".join(f"{TINY[i][2:]}: {TINY[i + 1]}\n" for i in range(0, len(TINY), 2))
TINY_GRPO = """data_dir: {data}
category: Synthetic
rl_tasks: [sid_seq]
reward_funcs: [ranking]
beam_search: true
max_train_rows: 32
output_dir: unused
max_steps: 2
per_device_train_batch_size: 16
num_generations: 16
max_completion_length: 4
beta: 1.0e-3
learning_rate: 1.0e-4
logging_steps: 1
eval_strategy: "no"
save_strategy: "no"
bf16: false
report_to: none
seed: 42
"""
TINY_EVAL = """data_dir: {data}
category: Synthetic
split: test
num_beams: 10
batch_size: 32
max_length: 512
"""


@pytest.mark.slow
def test_run_seeds_runs_the_pipeline_per_seed_and_summarises(tmp_path, small_data_dir):
    """scripts/run_seeds.sh: one whole pipeline per seed (tiny configs, a minute or so each), then mean ± sd."""
    configs = tmp_path / "configs"
    configs.mkdir()
    for name, text in (("sft", TINY_SFT), ("grpo", TINY_GRPO), ("eval", TINY_EVAL)):
        (configs / f"{name}.yaml").write_text(text.format(data=small_data_dir))
    prefix = str(tmp_path / "results" / "tiny")
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    cmd = ["bash", "scripts/run_seeds.sh", "--config-dir", str(configs), "--seeds", "1 2", "--run-dir-prefix", prefix]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == f"{prefix}-seeds.md"
    rows = []
    for seed in (1, 2):
        run = f"{prefix}-seed{seed}"
        assert json.load(open(f"{run}/pipeline.json"))["seed"] == seed
        for stage in ("sft", "grpo"):
            assert json.load(open(f"{run}/{stage}/run_summary.json"))["seed"] == seed
        text = open(f"{run}/RESULTS.md").read()
        n = len(open(f"{run}/eval_sft/predictions.jsonl").read().splitlines())
        assert text.count(f"paired bootstrap over {n} test users, 1,000 resamples (seed 0).") == 2
        assert "| K | HR@K (GRPO vs SFT) | NDCG@K (GRPO vs SFT) |" in text and "No ±" not in text
        assert text.count(" ± ") == 16  # 4 K x (HR, NDCG) x (vs the rule, GRPO minus SFT)
        assert f"--seed {seed} --run-dir {run}" in text
        m = json.load(open(f"{run}/eval_sft/metrics.json"))
        rows.append(f"| tiny-seed{seed} (seed {seed}) | {m['HR@1']:.4f} | {m['HR@3']:.4f} |")
    summary = open(f"{prefix}-seeds.md").read()
    sft = summary.split("## SFT")[1].split("##")[0]
    assert all(row in sft for row in rows)
    hr1 = [json.load(open(f"{prefix}-seed{s}/eval_sft/metrics.json"))["HR@1"] for s in (1, 2)]
    mean_row = next(line for line in sft.splitlines() if line.startswith("| mean ± sd"))
    assert mean_row.startswith(f"| mean ± sd | {sum(hr1) / 2:.4f} ± {abs(hr1[0] - hr1[1]) / math.sqrt(2):.4f} |")


def test_two_sid_indexes_are_compared_user_by_user_each_against_its_own_target():
    from sidrec.analysis.bootstrap import paired_differences

    # the same two users under two SID indexes: A (index 1) hits user 1 at rank 0 and misses user 2; B (index 2) hits
    # user 2 at rank 1 and misses user 1. HR@1: A 1/2, B 0 -> +0.5; HR@3: 1/2 - 1/2 = 0; NDCG@3: (1 - 1/log2(3)) / 2
    a = [{"user_id": "u1", "target": "<a_1>", "predictions": ["<a_1>", "<a_2>"]},
         {"user_id": "u2", "target": "<a_3>", "predictions": ["<a_2>", "<a_1>"]}]  # fmt: skip
    b = [{"user_id": "u1", "target": "<a_9>", "predictions": ["<a_1>", "<a_2>"]},
         {"user_id": "u2", "target": "<a_8>", "predictions": ["<a_1>", "<a_8>"]}]  # fmt: skip
    with pytest.raises(ValueError, match="row 0 is user u1 -> <a_1> in one, u1 -> <a_9> in the other"):
        paired_differences(a, b, ks=(1, 3))
    d = paired_differences(a, b, ks=(1, 3), across_indexes=True)
    assert d["HR@1"][0] == pytest.approx(0.5) and d["HR@3"][0] == pytest.approx(0.0)
    assert d["NDCG@3"][0] == pytest.approx((1 - 1 / math.log2(3)) / 2)
    with pytest.raises(ValueError, match="row 1 is user u2"):
        paired_differences(a, [b[0], {**b[1], "user_id": "u7"}], ks=(1,), across_indexes=True)


def write_index_eval(root, name, split, data_dir, predictions, metrics, model):
    """An evaluation dir as `recipes/evaluate.py` leaves it: its run summary, metrics and predictions."""
    run = root / f"{name}-{split}"
    cfg = {"SidrecScriptArguments": {"data_dir": str(data_dir), "category": "Toy"}, "EvalConfig": {"split": split}}
    cfg["SidrecModelConfig"] = {"model_name_or_path": str(model)}
    atomic_write_json(str(run / "run_summary.json"), {"status": "ok", "config": cfg})
    atomic_write_json(str(run / "metrics.json"), metrics)
    atomic_write_text(str(run / "predictions.jsonl"), "".join(json.dumps(p) + "\n" for p in predictions))
    return str(run)


def test_sid_methods_report_on_a_hand_case(tmp_path):
    from sidrec.analysis.results import sid_methods_report
    from sidrec.errors import UserError

    # Index A (made elsewhere: diagnostics from its codes alone): items 1, 2, 3 = (0,0,0), (0,1,0), (1,0,0).
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_index = {"1": ["<a_0>", "<b_0>", "<c_0>"], "2": ["<a_0>", "<b_1>", "<c_0>"], "3": ["<a_1>", "<b_0>", "<c_0>"]}
    atomic_write_json(str(a_dir / "index" / "Toy.index.json"), a_index)
    # Index B, built by sidrec-build-sids: its diagnostics file is read as is.
    diag = {"method": "rq_vae", "items": 3, "collisions_before_resolution": 4, "collisions_after_resolution": 0}
    diag |= {"reconstruction_mse": 0.25, "wall_time_s": {"method": 1.5}}
    diag["levels"] = [{"codes_used": 3, "perplexity": 3.0, "largest_prefix_group": 1}] * 3
    atomic_write_json(str(b_dir / "index" / "Toy.sid_diagnostics.json"), diag)
    for model, seconds in (("sft_a", 600.4), ("sft_b", 700.0)):
        atomic_write_json(str(tmp_path / model / "run_summary.json"), {"wall_time_s": {"total": seconds}})
    t_a1, t_a3, t_b1, t_b3 = "<a_0><b_0><c_0>", "<a_1><b_0><c_0>", "<a_5><b_5><c_5>", "<a_6><b_6><c_6>"
    # A: user 1 hit at rank 1, user 2 at rank 3. B: user 1 at rank 2, user 2 missed.
    preds_a = [
        {"user_id": "u1", "target": t_a1, "predictions": [t_a1, "x"]},
        {"user_id": "u2", "target": t_a3, "predictions": ["x", "y", t_a3]},
    ]
    preds_b = [
        {"user_id": "u1", "target": t_b1, "predictions": ["x", t_b1]},
        {"user_id": "u2", "target": t_b3, "predictions": ["x", "y", "z"]},
    ]
    # Test metrics, by hand: A HR@1 (1+0)/2, HR@3 1, NDCG@3 (1 + 1/log2(4))/2; B 0, 0.5, (1/log2(3))/2.
    m_a = {"HR@1": 0.5, "HR@3": 1.0, "NDCG@3": 0.75}
    m_b = {"HR@1": 0.0, "HR@3": 0.5, "NDCG@3": 0.31546}
    runs = {
        "published": [
            write_index_eval(tmp_path, "a", "valid", a_dir, preds_a, {"NDCG@10": 0.1234}, tmp_path / "sft_a"),
            write_index_eval(tmp_path, "a", "test", a_dir, preds_a, m_a, tmp_path / "sft_a"),
        ],
        "rq_vae": [write_index_eval(tmp_path, "b", "test", b_dir, preds_b, m_b, tmp_path / "sft_b")],
        "rq_vae (valid too)": [
            write_index_eval(tmp_path, "c", "valid", b_dir, preds_b, {"NDCG@10": 0.0500}, tmp_path / "sft_b"),
            write_index_eval(tmp_path, "c", "test", b_dir, preds_b, m_b, tmp_path / "sft_b"),
        ],
    }
    with pytest.raises(UserError, match="rq_vae: no .*Toy.index.json to plot"):
        sid_methods_report(runs, ks=(1, 3), plot=str(tmp_path / "usage.png"))
    atomic_write_json(str(b_dir / "index" / "Toy.index.json"), {"1": ["<a_3>", "<b_0>", "<c_0>"]})
    text = sid_methods_report(runs, ks=(1, 3), plot=str(tmp_path / "usage.png"))
    assert open(tmp_path / "usage.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    lines = text.splitlines()
    # Diagnostics: A's L1 codes are used 2:1, perplexity exp(H(2/3, 1/3)) = 1.89 -> 2; largest L1 group 2 items.
    assert "| published | — | — → 0 | — | 2 / 2 / 1 | 2 / 2 / 1 | 2 / 1 |" in lines
    assert "| rq_vae | 1.5 | 4 → 0 | 0.250 | 3 / 3 / 3 | 3 / 3 / 3 | 1 / 1 |" in lines
    assert "| index | SFT s | valid NDCG@10 | test HR@1 | test HR@3 | test NDCG@3 |" in lines
    assert "| published | 600 | 0.1234 | 0.5000 | 1.0000 | 0.7500 |" in lines
    # B - A per user: HR@1 (-1, 0), HR@3 (0, -1), NDCG@3 (0.6309 - 1, -0.5): means -0.5, -0.5, -0.4345.
    row = next(line for line in lines if line.startswith("| rq_vae | 700 | — |"))
    assert "0.0000 (-0.5000 ± " in row and "0.5000 (-0.5000 ± " in row and "0.3155 (-0.4345 ± " in row
    # Valid NDCG@10 per user, B - A: (1/log2(3) - 1, 0 - 1/log2(4)): mean -0.4345.
    assert "| rq_vae (valid too) | 700 | 0.0500 (-0.4345 ± " in text
    assert "over the 2 test users" in text
    with pytest.raises(UserError, match="rq_vae: no test evaluation"):
        sid_methods_report({"published": runs["published"], "rq_vae": [runs["published"][0]]})
    with pytest.raises(UserError, match="rq_vae: two test evaluations"):
        sid_methods_report({"published": runs["published"], "rq_vae": runs["rq_vae"] * 2})
    with pytest.raises(UserError, match="rq_vae: its evaluations rank with different indexes"):
        sid_methods_report({"published": runs["published"], "rq_vae": [runs["published"][0], runs["rq_vae"][0]]})
