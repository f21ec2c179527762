import math

import pytest

from sidrec.metrics import compute_metrics, hr_ndcg, per_level_analysis


def test_hr_ndcg_hand_computed():
    preds = [["t", "x", "y"], ["x", "y", "t"], ["x", "y", "z"], ["y", "t", "x"]]
    targets = ["t"] * 4  # first-hit ranks: 0, 2, miss, 1
    m = hr_ndcg(preds, targets, ks=(1, 2, 3))
    assert m["HR@1"] == 0.25 and m["HR@2"] == 0.5 and m["HR@3"] == 0.75
    assert m["NDCG@1"] == pytest.approx(0.25)
    assert m["NDCG@2"] == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert m["NDCG@3"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(4)) / 4)


def test_hr_counts_first_hit_only():
    m = hr_ndcg([["t", "t"]], ["t"], ks=(2,))
    assert m["HR@2"] == 1.0 and m["NDCG@2"] == 1.0


def test_per_level_hand_computed():
    target = "<a_1><b_2><c_3>"
    preds = [
        ["<a_1><b_2><c_3>"],  # exact at rank 0
        ["<a_1><b_9><c_3>", "<a_1><b_2><c_8>"],  # L1 ok top-1; L2 only via rank 1; c matches independently at rank 0
        ["<a_7><b_2><c_3>", "<a_1><b_5><c_5>"],  # L1 wrong at top-1, right at rank 1
        ["<a_9><b_9><c_9>"],  # nothing
    ]
    r = per_level_analysis(preds, [target] * 4, ks=(1, 2))
    ind, cum, drop = r["independent"], r["cumulative"], r["top1_dropoff"]
    assert ind["level_1"] == {"1": 0.5, "2": 0.75}
    assert ind["level_2"] == {"1": 0.5, "2": 0.75}  # b_2 top-1 in samples 1 and 3, at rank 1 in sample 2
    assert ind["level_3"] == {"1": 0.75, "2": 0.75}
    assert ind["exact"] == {"1": 0.25, "2": 0.25}
    assert cum["L1"] == {"1": 0.5, "2": 0.75}
    assert cum["L1+L2"] == {"1": 0.25, "2": 0.5}
    assert cum["L1+L2+L3"] == {"1": 0.25, "2": 0.25}
    assert drop == {"L1_accuracy": 0.5, "L1->L1+L2_retention": 0.5, "L1+L2->L1+L2+L3_retention": 1.0}


def test_dropoff_with_zero_accuracy_is_none():
    r = per_level_analysis([["<a_2><b_1>"]], ["<a_1><b_1>"], ks=(1,))
    assert r["top1_dropoff"] == {"L1_accuracy": 0.0, "L1->L1+L2_retention": None}


def test_compute_metrics_keys_and_k_filter():
    m = compute_metrics([["<a_1><b_1>", "<a_2><b_2>"]], ["<a_2><b_2>"], num_beams=2, invalid=0, ks=(1, 3, 5))
    assert m["HR@1"] == 0.0 and "HR@3" not in m
    assert m["num_beams"] == 2 and m["num_samples"] == 1 and m["invalid"] == 0 and m["short_lists"] == 0


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        hr_ndcg([["a"]], ["a", "b"])


def test_report_table_uses_common_ks():
    from sidrec.analysis.report import metrics_table

    a = {"HR@1": 0.1, "HR@10": 0.2, "NDCG@1": 0.1, "NDCG@10": 0.15, "invalid": 0}
    b = {"HR@1": 0.3, "NDCG@1": 0.3, "invalid": 0}
    table = metrics_table({"SFT": a, "RL": b})
    assert table.splitlines()[0] == "| stage | HR@1 | NDCG@1 | invalid |"
    assert table.splitlines()[3] == "| RL | 0.3000 | 0.3000 | 0 |"
