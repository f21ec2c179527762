"""Baselines (most-popular, last-item transition, SASRec, GRU4Rec) and the RESULTS.md writer."""

import json
import os

import pytest
import torch

from sidrec.analysis.baselines import (
    last_item_transition,
    most_popular,
    rank_seq_baseline,
    score_rankings,
    train_seq_baseline,
)
from sidrec.analysis.results import write_results
from sidrec.atomic_io import atomic_write_json
from sidrec.data import load_rec_dataset
from sidrec.data.synthetic import SyntheticConfig, make_synthetic_dataset
from sidrec.models.seqrec import SASRec, SeqBaselineConfig

from .helpers import tool


@pytest.mark.parametrize("model", ["sasrec", "gru4rec"])
@pytest.mark.parametrize("loss", ["bce", "ce"])
def test_neural_baselines_train_and_beat_random(tmp_path, model, loss):
    # the demo's default synthetic catalog (600 items): random ranking gets HR@10 = 10/600
    data = load_rec_dataset(make_synthetic_dataset(str(tmp_path / "syn"), SyntheticConfig()), "Synthetic")
    train, valid, test = (data.splits[s] for s in ("train", "valid", "test"))
    cfg = SeqBaselineConfig(model=model, loss=loss, hidden=32, max_epochs=8, patience=8, lr=1e-2, batch_size=128)
    net, index, log = train_seq_baseline(train, valid, data.catalog, cfg, show_progress=False)
    assert log["epochs"][-1]["loss"] < log["epochs"][0]["loss"]
    m = score_rankings(rank_seq_baseline(net, index, test, cfg.max_len), test, data.catalog)
    assert m["HR@10"] > 5 * 10 / len(data.catalog.vocab) and m["invalid"] == 0
    # the kept model is the best epoch's: ranking valid again gives the best logged valid metric
    again = score_rankings(rank_seq_baseline(net, index, valid, cfg.max_len), valid, data.catalog)["NDCG@20"]
    assert (
        again
        == max(e["valid_NDCG@20"] for e in log["epochs"])
        == log["epochs"][log["best_epoch"] - 1]["valid_NDCG@20"]
    )


def test_neural_baselines_stop_after_patience_epochs_without_a_better_valid(tmp_path):
    # lr 0: the model never changes, so epoch 1 stays best and training stops after 1 + (patience + 1) epochs
    data = load_rec_dataset(make_synthetic_dataset(str(tmp_path / "syn"), SyntheticConfig()), "Synthetic")
    train, valid = data.splits["train"], data.splits["valid"]
    cfg = SeqBaselineConfig(lr=0.0, weight_decay=0.0, dropout=0.0, patience=3, max_epochs=50)
    _, _, log = train_seq_baseline(train, valid, data.catalog, cfg, show_progress=False)
    assert log["best_epoch"] == 1 and len(log["epochs"]) == 5


def test_sasrec_reads_only_the_history_before_each_position():
    # causal attention: the score of a history does not depend on anything after its last item, and right padding
    # with the true length gives the same scores as the unpadded history
    cfg = SeqBaselineConfig(dropout=0.0, max_len=6)
    torch.manual_seed(0)
    net = SASRec(20, cfg).eval()
    seq = torch.tensor([[3, 5, 7, 0, 0, 0], [3, 5, 7, 9, 11, 2]])
    out = net(seq, torch.tensor([3, 3]))
    assert torch.allclose(out[0], out[1], atol=1e-6)
    assert not torch.allclose(net(seq, torch.tensor([3, 6]))[1], out[1])


def test_heuristic_baselines_on_a_hand_case():
    from sidrec.data import Catalog, Interaction
    from sidrec.data.minionerec import Item
    from sidrec.sid import SidVocab

    # Catalog order i5, i4, i3, i2, i1 (popularity ties keep it); transition ties go by item id instead.
    sids = {"i5": "<a_2><b_3><c_5>", "i4": "<a_2><b_3><c_4>", "i3": "<a_1><b_2><c_3>", "i2": "<a_1><b_1><c_2>",
            "i1": "<a_1><b_1><c_1>"}  # fmt: skip
    catalog = Catalog({i: Item(i, sid, f"T{i}") for i, sid in sids.items()}, SidVocab.from_sids(sids.values()))

    def row(user, history, target):
        return Interaction(user, history, tuple(f"T{i}" for i in history), tuple(sids[i] for i in history), target,
                           f"T{target}", sids[target])  # fmt: skip

    train = [
        row("u1", ("i1",), "i2"), row("u1", ("i1", "i2"), "i3"), row("u2", ("i4",), "i3"),
        row("u2", ("i4", "i3"), "i2"), row("u3", ("i5",), "i1"), row("u4", ("i2",), "i1"), row("u5", ("i5",), "i2"),
    ]  # fmt: skip
    # train targets: i2 x3, i3 x2, i1 x2, i4 and i5 never; the i3 / i1 and i5 / i4 ties in catalog order
    assert most_popular(train, catalog) == ["i2", "i3", "i1", "i5", "i4"]
    # transitions in the train sequences (history + target): i1->i2 x2, i2->i3, i4->i3 x2, i3->i2, i5->i1, i2->i1,
    # i5->i2; so after i2: i1, i3 (one each, by id); after i5: i1, i2; after i4: i3; after i3: i2; then by popularity
    test = [
        row("u1", ("i3", "i2"), "i3"),
        row("u3", ("i5",), "i4"),
        row("u6", ("i4",), "i3"),
        row("u2", ("i3",), "i5"),
    ]
    assert last_item_transition(train, test, catalog) == [
        ["i1", "i3", "i2", "i5", "i4"],
        ["i1", "i2", "i3", "i5", "i4"],
        ["i3", "i2", "i1", "i5", "i4"],
        ["i2", "i3", "i1", "i5", "i4"],
    ]
    # most-popular: the targets i3, i4, i3, i5 at 0-based ranks 1, 4, 1, 3; a hit at rank r scores 1 / log2(r + 2):
    # NDCG@3 = (2 x 1/log2 3) / 4 = (2 x 0.63093) / 4 = 0.31546; NDCG@5 adds 1/log2 6 = 0.38685 and 1/log2 5 = 0.43068
    pop = score_rankings([most_popular(train, catalog)] * len(test), test, catalog)
    assert (pop["HR@1"], pop["HR@3"], pop["HR@5"]) == (0.0, 0.5, 1.0)
    assert round(pop["NDCG@3"], 5) == 0.31546
    assert round(pop["NDCG@5"], 5) == 0.51985  # (0.63093 + 0.38685 + 0.63093 + 0.43068) / 4
    # transitions: ranks 1, 4, 0, 3: NDCG@3 = (0.63093 + 1) / 4 = 0.40773, NDCG@5 = (1.63093 + 0.43068 + 0.38685) / 4
    trans = score_rankings(last_item_transition(train, test, catalog), test, catalog)
    assert (trans["HR@1"], trans["HR@3"], trans["HR@5"]) == (0.25, 0.5, 1.0)
    assert round(trans["NDCG@3"], 5) == 0.40773
    assert round(trans["NDCG@5"], 5) == 0.61211
    assert pop["invalid"] == trans["invalid"] == 0 and pop["num_samples"] == trans["num_samples"] == 4


def metrics(hr1, hr10):
    per_level = {
        "independent": {"level_1": {"1": 0.5, "10": 0.9}, "exact": {"1": hr1, "10": hr10}},
        "cumulative": {
            "L1": {"1": 0.5, "10": 0.9},
            "L1+L2": {"1": 0.3, "10": 0.5},
            "L1+L2+L3": {"1": hr1, "10": hr10},
        },
        "top1_dropoff": {"L1_accuracy": 0.5, "L1->L1+L2_retention": 0.6, "L1+L2->L1+L2+L3_retention": hr1 / 0.3},
    }
    return {"HR@1": hr1, "HR@10": hr10, "NDCG@1": hr1, "NDCG@10": hr10 / 2, "invalid": 0, "per_level": per_level}


def test_results_writer_tables_and_plots(tmp_path):
    run = tmp_path / "run"
    atomic_write_json(str(run / "eval_sft" / "metrics.json"), metrics(0.1, 0.2))
    atomic_write_json(str(run / "eval_grpo" / "metrics.json"), metrics(0.125, 0.25))
    log = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5, "eval_loss": 2.7}]
    atomic_write_json(str(run / "sft" / "trainer_state.json"), {"log_history": log})
    baselines = {"metrics": {"most-popular": {"HR@1": 0.01, "HR@10": 0.05, "NDCG@1": 0.01, "NDCG@10": 0.02}}}
    atomic_write_json(str(run / "baselines.json"), baselines)
    path = write_results(str(run), command="scripts/run_pipeline.sh --config-dir x")
    text = open(path).read()
    assert "| SFT | 0.1000 | 0.2000 | 0.1000 | 0.1000 | 0 |" in text
    assert "| RL (GRPO) | 0.1250 | 0.2500 | 0.1250 | 0.1250 | 0 |" in text
    assert "| baseline: most-popular | 0.0100 | 0.0500 | 0.0100 | 0.0200 | - |" in text
    assert "| L1+L2 | 0.3000 | 0.5000 |" in text and "| L1+L2->L1+L2+L3_retention | 0.4167 |" in text
    assert "scripts/run_pipeline.sh --config-dir x" in text
    for png in ("training_curves.png", "hr_ndcg_at_k.png", "per_level.png"):
        assert os.path.getsize(run / "plots" / png) > 1000 and f"(plots/{png})" in text
    assert json.load(open(run / "baselines.json")) == baselines


def test_tuning_log_pairs_evals_with_their_training_runs(tmp_path):
    def summary(name, stage, command, model=None, wall=10.0, metrics=None):
        os.makedirs(tmp_path / name)
        data = {"stage": stage, "command": command, "wall_time_s": {"total": wall}}
        data["config"] = {"ModelConfig": {"model_name_or_path": model}}
        atomic_write_json(str(tmp_path / name / "run_summary.json"), data)
        if metrics:
            atomic_write_json(str(tmp_path / name / "metrics.json"), metrics)

    m = {"HR@1": 0.01, "HR@10": 0.1, "NDCG@10": 0.05, "HR@50": 0.2}
    summary("sft", "sft", "recipes/sft.py --config s.yaml --output_dir x --num_train_epochs 10", wall=100)
    summary("grpo", "grpo", f"recipes/grpo.py --config g.yaml --model_name_or_path {tmp_path}/sft --learning_rate 5e-5",
            model=str(tmp_path / "sft"), wall=50)  # fmt: skip
    summary("e1", "eval", "recipes/evaluate.py", model=str(tmp_path / "sft"), metrics=m)
    summary("e2", "eval", "recipes/evaluate.py", model=str(tmp_path / "grpo"), metrics={**m, "HR@10": 0.12})
    out = tmp_path / "log"
    r = tool("sidrec-tuning-log", str(tmp_path / "e1"), str(tmp_path / "e2"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = (out / "README.md").read_text().splitlines()[-2:]
    assert rows[0] == "| e1 | `--num_train_epochs 10` | 100 |  |  | 0.0100 | 0.1000 | 0.0500 | 0.2000 |"
    assert rows[1] == (
        "| e2 | `--num_train_epochs 10` | 100 | `--learning_rate 5e-5` | 50 | 0.0100 | 0.1200 | 0.0500 | 0.2000 |"
    )
    assert sorted(os.listdir(out)) == ["README.md", "e1.eval.json", "e1.sft.json", "e2.eval.json", "e2.grpo.json",
                                       "e2.sft.json"]  # fmt: skip
    r = tool("sidrec-tuning-log", str(tmp_path / "sft"))  # a training dir is not an eval dir
    assert r.returncode != 0 and "metrics.json" in r.stderr


def test_results_say_where_the_model_beats_the_transition_baseline(tmp_path):
    from sidrec.analysis.results import versus_baseline

    ks = (1, 3, 5, 10)
    base = {f"{n}@{k}": 0.05 + 0.01 * k for n in ("HR", "NDCG") for k in ks}
    better = {key: v + 0.002 for key, v in base.items()}
    ok, table = versus_baseline(better, base)
    assert ok and "| K=10 | 0.1520 vs 0.1500 (+0.0020) | 0.1520 vs 0.1500 (+0.0020) |" in table
    tied_at_3 = {**better, "NDCG@3": base["NDCG@3"]}  # equal is not above
    assert versus_baseline(tied_at_3, base)[0] is False

    run = tmp_path / "run"
    atomic_write_json(str(run / "eval_sft" / "metrics.json"), {**metrics(0.1, 0.2), **better})
    atomic_write_json(str(run / "baselines.json"), {"metrics": {"last-item transition": base}})
    evals = [
        {"epoch": 1.0, "eval_hr@10": 0.2, "eval_ndcg@10": 0.11, "eval_ranked_rows": 100},
        {"epoch": 2.0, "eval_hr@10": 0.25, "eval_ndcg@10": 0.13, "eval_ranked_rows": 100},
        {"epoch": 3.0, "eval_hr@10": 0.3, "eval_ndcg@10": 0.12, "eval_ranked_rows": 100},
    ]
    summary = {"metrics": {"metric_for_best_model": "eval_ndcg@10", "evaluations": evals}}
    atomic_write_json(str(run / "sft" / "run_summary.json"), summary)
    text = open(write_results(str(run))).read()
    assert "**SFT vs the last-item transition baseline**: above it on HR@K and NDCG@K for every K" in text
    assert "eval_ndcg@10 on 100 valid users after each epoch (1: 0.1100, 2: 0.1300, 3: 0.1200); kept epoch 2" in text


def test_the_reported_model_is_grpo_only_if_it_beat_its_start_on_valid(tmp_path):
    base = {f"{n}@{k}": 0.05 for n in ("HR", "NDCG") for k in (1, 3, 5, 10)}
    rd = tmp_path / "run"
    atomic_write_json(str(rd / "eval_sft" / "metrics.json"), {**metrics(0.1, 0.2), **dict.fromkeys(base, 0.06)})
    atomic_write_json(str(rd / "eval_grpo" / "metrics.json"), {**metrics(0.1, 0.2), **dict.fromkeys(base, 0.04)})
    atomic_write_json(str(rd / "baselines.json"), {"metrics": {"last-item transition": base}})

    def grpo_evals(*ndcgs):  # step 0 is GRPO's evaluation of its start model (eval_on_start)
        evals = [
            {"step": 16 * i, "eval_hr@10": 0.2, "eval_ndcg@10": v, "eval_ranked_rows": 50} for i, v in enumerate(ndcgs)
        ]
        atomic_write_json(str(rd / "grpo" / "run_summary.json"), {"metrics": {"evaluations": evals}})

    grpo_evals(0.09, 0.085, 0.09)  # a tie is no improvement: SFT (above the baseline) is the result
    text = open(write_results(str(rd))).read()
    assert "**SFT vs the last-item transition baseline**: above it" in text
    assert "GRPO's best valid NDCG@10 (0.0900) is not above its start model's (0.0900)" in text
    assert "step 0: " not in text and "(0: 0.0900, 16: 0.0850, 32: 0.0900); kept step 32" in text
    r = tool("sidrec-results", str(rd), "--final-metrics")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(rd / "eval_sft" / "metrics.json")

    grpo_evals(0.09, 0.095)  # GRPO improved on valid: its model is the result, below the baseline here
    text = open(write_results(str(rd))).read()
    assert "**RL (GRPO) vs the last-item transition baseline**: NOT above it" in text
    assert "GRPO's best valid NDCG@10 (0.0950) is above its start model's (0.0900)" in text
    r = tool("sidrec-results", str(rd), "--final-metrics")
    assert r.stdout.strip().splitlines()[-1] == str(rd / "eval_grpo" / "metrics.json")


def test_results_say_whether_the_sft_checkpoint_average_was_kept(tmp_path):
    rd = tmp_path / "run"
    atomic_write_json(str(rd / "eval_sft" / "metrics.json"), metrics(0.1, 0.2))
    evals = [
        {"epoch": e, "eval_hr@10": 0.1, "eval_ndcg@10": v, "eval_ranked_rows": 20}
        for e, v in [(1, 0.05), (2, 0.07), (3, 0.06)]
    ]
    for kept, score in ((True, 0.08), (False, 0.065)):
        average = {
            "checkpoints": ["checkpoint-20", "checkpoint-30"],
            "metrics": {"eval_ndcg@10": score},
            "best_metric": 0.07,
            "kept": kept,
        }
        summary = {
            "metrics": {"metric_for_best_model": "eval_ndcg@10", "evaluations": evals, "checkpoint_average": average}
        }
        atomic_write_json(str(rd / "sft" / "run_summary.json"), summary)
        text = open(write_results(str(rd))).read()
        assert "(1: 0.0500, 2: 0.0700, 3: 0.0600); kept epoch 2 (HR@10 0.1000)." in text
        if kept:
            assert (
                "average of checkpoint-20, checkpoint-30 scored 0.0800, above the kept epoch's 0.0700: the average is the model."
                in text
            )
        else:
            assert "scored 0.0650, not above the kept epoch's 0.0700: the checkpoint stays the model." in text


def test_index_comparison_reads_each_runs_data_and_metrics(tmp_path, small_data_dir, small_data):
    from sidrec.analysis.results import compare_indexes

    run = tmp_path / "run"
    atomic_write_json(str(run / "pipeline.json"), {"data_dir": small_data_dir, "category": "Synthetic"})
    atomic_write_json(str(run / "eval_sft" / "metrics.json"), metrics(0.1, 0.2))
    table = compare_indexes({"ours": str(run)})
    items = len(small_data.catalog.items)
    distinct = len({it.sid for it in small_data.catalog.items.values()})
    assert f"| ours | {distinct} / {items} | {items - distinct} | SFT | 0.2000 | 0.1000 | 0.5000 | 0.3000 |" in table
