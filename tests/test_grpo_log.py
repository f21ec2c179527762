"""`sidrec-grpo-log`: a GRPO run's steps and rankings from its trainer_state.json, on a hand-written log."""

import json

from sidrec.analysis.grpo_log import grpo_diagnostics, report

from .helpers import tool

LOG = [
    {"step": 1, "reward": 0.31, "rewards/rule/mean": 0.03125, "frac_reward_zero_std": 0.75, "kl": 0.0},
    {"step": 1, "eval_hr@1": 0.05, "eval_ndcg@10": 0.08, "eval_train_hr@1": 0.6, "eval_train_ndcg@10": 0.7},
    {"step": 2, "reward": 0.5, "rewards/rule/mean": 0.0625, "frac_reward_zero_std": 0.25, "kl": 0.002},
    {"step": 2, "train_runtime": 9.0},  # the closing summary: neither a step nor an evaluation
]


def test_diagnostics_by_hand():
    train, evals = grpo_diagnostics(LOG, 16)
    # 16 beams x mean rule reward: 0.03125 x 16 = 0.5 of the prompts had the target among their beams, 0.0625 x 16 = 1
    assert [(r["step"], r["target_in_group"], r["no_signal"], r["kl"]) for r in train] == [
        (1, 0.5, 0.75, 0.0),
        (2, 1.0, 0.25, 0.002),
    ]
    assert evals == [
        {"step": 1, "eval_hr@1": 0.05, "eval_ndcg@10": 0.08, "eval_train_hr@1": 0.6, "eval_train_ndcg@10": 0.7}
    ]


def test_guided_groups_are_not_counted_as_found():
    # with guide_target every group holds the target (16 x 0.0625 = 1), 0.75 of them because it was put there:
    # the beams themselves found it in a quarter of the prompts
    log = [{"step": 3, "reward": 0.2, "rewards/rule/mean": 0.0625, "rollouts/guided_groups": 0.75, "kl": 0.01}]
    train, _ = grpo_diagnostics(log, 16)
    assert (train[0]["target_in_group"], train[0]["guided"]) == (0.25, 0.75)


def test_the_console_script_reads_a_run_dir(tmp_path):
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": LOG}))
    (tmp_path / "run_summary.json").write_text(json.dumps({"config": {"SidrecGRPOConfig": {"num_generations": 8}}}))
    text = report(str(tmp_path))
    assert "| 1 | 0.31 | 0 | 0.25 | 0.75 |" in text  # 8 x 0.03125 = 0.25 with the run's own G
    r = tool("sidrec-grpo-log", str(tmp_path), "--num_generations", "16")
    assert r.returncode == 0, r.stderr
    assert "| 2 | 0.5 | 0.002 | 1 | 0.25 |" in r.stdout
    r = tool("sidrec-grpo-log", str(tmp_path / "missing"))
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "trainer_state.json: no such file" in r.stderr
