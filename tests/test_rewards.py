import pytest

from sidrec.errors import UserError
from sidrec.rewards import (
    REWARDS,
    get_reward_funcs,
    ndcg_penalties,
    ndcg_rule_reward,
    normalize_sid,
    prefix_reward,
    rule_reward,
)


def test_rule_reward_compares_normalised_sids():
    completions = ["<a_1><b_2><c_3>", " <a_1><b_2><c_3>\n", "<a_1><b_2><c_4>", "garbage"]
    assert rule_reward(completions, ["<a_1><b_2><c_3>"] * 4) == [1.0, 1.0, 0.0, 0.0]
    assert normalize_sid("x<a_1> <b_2>y") == "<a_1><b_2>"


def test_prefix_reward_counts_leading_levels_only():
    target = "<a_1><b_2><c_3>"
    completions = [target, "<a_1><b_2><c_9>", "<a_1><b_9><c_3>", "<a_9><b_2><c_3>", "", " <a_1>\n<b_2><c_3>"]
    assert prefix_reward(completions, [target] * 6) == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0, 0.0, 1.0])
    assert prefix_reward(["<a_1><b_2><c_3><d_4>"], ["<a_1><b_2>"]) == [1.0]  # the target's levels count


def test_ndcg_penalties_worked_values():
    # G=3: 1/log2(2) = 1, 1/log2(3) = 0.630930, 1/log2(4) = 0.5; their sum is 2.130930, so each is divided by it
    assert ndcg_penalties(3) == pytest.approx([-0.469279, -0.296082, -0.234639], abs=1e-6)
    # G=2: 1 and 0.630930 over 1.630930
    assert ndcg_penalties(2) == pytest.approx([-0.613147, -0.386853], abs=1e-6)


def test_ndcg_rule_reward_penalises_wrong_beams_by_their_rank():
    target = "<a_1><b_1>"
    # group 1: the target is the 2nd-best beam; the completions arrive out of rank order. group 2: no hit.
    completions = ["<a_3><b_3>", target, "<a_2><b_2>", "<a_4><b_4>", "<a_5><b_5>", "<a_6><b_6>"]
    ranks = [2, 1, 0, 0, 1, 2]
    r = ndcg_rule_reward(completions, [target] * 6, beam_rank=ranks)
    assert r == pytest.approx([-0.234639, 0.0, -0.469279, 0.0, 0.0, 0.0], abs=1e-6)


def test_ndcg_rule_reward_refuses_completions_without_a_rank():
    with pytest.raises(ValueError, match="beam-search rollouts"):
        ndcg_rule_reward(["<a_1>", "<a_2>"], ["<a_1>"] * 2)
    with pytest.raises(ValueError, match="not a permutation"):
        ndcg_rule_reward(["<a_1>", "<a_2>", "<a_3>", "<a_4>"], ["<a_1>"] * 4, beam_rank=[0, 1, 1, 1])


def test_sampled_rollouts_cannot_use_rank_rewards(tmp_path):
    from sidrec.configs import SidrecGRPOConfig

    common = {"output_dir": str(tmp_path), "use_cpu": True, "per_device_train_batch_size": 4, "num_generations": 4}
    with pytest.raises(UserError, match=r"\['ndcg_rule'\] rank completions by beam score"):
        SidrecGRPOConfig(**common, beam_search=False, reward_funcs=["ranking"])
    assert SidrecGRPOConfig(**common, beam_search=False, reward_funcs=["rule"]).reward_funcs == ["rule"]


def test_registry_names_presets_and_unknown():
    assert [f.__name__ for f in get_reward_funcs(["ranking"])] == ["rule", "ndcg_rule"]
    assert [f.__name__ for f in get_reward_funcs(["rule", "rule"])] == ["rule"]
    assert set(REWARDS) >= {"rule", "ndcg_rule", "prefix"}
    with pytest.raises(UserError, match="unknown reward"):
        get_reward_funcs(["nope"])
