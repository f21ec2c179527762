import math

import pytest

from sidrec.rewards import (
    REWARDS,
    get_reward_funcs,
    ndcg_penalties,
    ndcg_rule_reward,
    normalize_sid,
    prefix_reward,
    rule_reward,
)
from sidrec.utils import UserError


def test_rule_reward_compares_normalised_sids():
    completions = ["<a_1><b_2><c_3>", " <a_1><b_2><c_3>\n", "<a_1><b_2><c_4>", "garbage"]
    assert rule_reward(completions, ["<a_1><b_2><c_3>"] * 4) == [1.0, 1.0, 0.0, 0.0]
    assert normalize_sid("x<a_1> <b_2>y") == "<a_1><b_2>"


def test_prefix_reward_counts_leading_levels_only():
    target = "<a_1><b_2><c_3>"
    completions = [target, "<a_1><b_2><c_9>", "<a_1><b_9><c_3>", "<a_9><b_2><c_3>", "", " <a_1>\n<b_2><c_3>"]
    assert prefix_reward(completions, [target] * 6) == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0, 0.0, 1.0])
    assert prefix_reward(["<a_1><b_2><c_3><d_4>"], ["<a_1><b_2>"]) == [1.0]  # the target's levels count


def test_ndcg_penalties_hand_computed():
    p = ndcg_penalties(3)
    raw = [1.0, 1 / math.log2(3), 0.5]
    assert p == pytest.approx([-r / sum(raw) for r in raw])
    assert sum(abs(x) for x in p) == pytest.approx(1.0)


def test_ndcg_rule_reward_groups():
    target = "<a_1><b_1>"
    completions = ["<a_2><b_2>", target, "<a_3><b_3>", "<a_4><b_4>", "<a_5><b_5>", "<a_6><b_6>"]
    ranks = [0, 1, 2, 0, 1, 2]
    r = ndcg_rule_reward(completions, [target] * 6, beam_rank=ranks)
    p = ndcg_penalties(3)
    # group 1 holds the target at rank 1: the others are penalised by rank; group 2 has no hit: zeros
    assert r == pytest.approx([p[0], 0.0, p[2], 0.0, 0.0, 0.0])


def test_registry_names_presets_and_unknown():
    assert [f.__name__ for f in get_reward_funcs(["ranking"])] == ["rule", "ndcg_rule"]
    assert [f.__name__ for f in get_reward_funcs(["rule", "rule"])] == ["rule"]
    assert set(REWARDS) >= {"rule", "ndcg_rule", "prefix"}
    with pytest.raises(UserError, match="unknown reward"):
        get_reward_funcs(["nope"])
