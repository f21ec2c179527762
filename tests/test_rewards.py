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
    top1_reward,
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


def test_top1_reward_pays_the_target_only_as_the_best_beam():
    target = "<a_1><b_1>"
    # group 1 (ranks 1, 0, 2): the target is the 2nd beam, so nothing is paid; group 2: the target is beam 0
    completions = [target, "<a_2><b_2>", "<a_3><b_3>", " <a_1><b_1>\n", "<a_4><b_4>", "<a_5><b_5>"]
    r = top1_reward(completions, [target] * 6, beam_rank=[1, 0, 2, 0, 2, 1])
    assert r == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="beam-search rollouts"):
        top1_reward([target], [target])


def test_sampled_rollouts_cannot_use_rank_rewards(tmp_path):
    from sidrec.configs import SidrecGRPOConfig

    common = {"output_dir": str(tmp_path), "use_cpu": True, "per_device_train_batch_size": 4, "num_generations": 4}
    with pytest.raises(UserError, match=r"\['ndcg_rule'\] rank completions by beam score"):
        SidrecGRPOConfig(**common, beam_search=False, reward_funcs=["ranking"])
    with pytest.raises(UserError, match=r"\['top1'\] rank completions by beam score"):
        SidrecGRPOConfig(**common, beam_search=False, reward_funcs=["top1"])
    assert SidrecGRPOConfig(**common, beam_search=False, reward_funcs=["rule"]).reward_funcs == ["rule"]


def test_registry_names_presets_and_unknown():
    assert [f.__name__ for f in get_reward_funcs(["ranking"])] == ["rule", "ndcg_rule"]
    assert [f.__name__ for f in get_reward_funcs(["rule", "rule"])] == ["rule"]
    assert set(REWARDS) >= {"rule", "ndcg_rule", "prefix"}
    with pytest.raises(UserError, match="unknown reward"):
        get_reward_funcs(["nope"])


def _fixed_scorer(path, probs: dict[str, float], model="sasrec"):
    """A saved recommender whose next-item probabilities are ``probs`` whatever the history: zero output weights, and
    biases log p (the padding item's is never used)."""
    import math

    import torch

    from sidrec.models.seqrec import SeqBaselineConfig, build_seqrec, save_seqrec

    cfg = SeqBaselineConfig(model=model, hidden=8, max_len=4)
    index = {item: i + 1 for i, item in enumerate(probs)}
    net = build_seqrec(len(index), cfg)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([0.0, *[math.log(p) for p in probs.values()]]))
    save_seqrec(str(path), net, index, cfg)
    return str(path)


@pytest.mark.parametrize("model", ["sasrec", "gru4rec"])
def test_cf_reward_is_the_recommenders_probability_of_the_completions_item(tmp_path, model):
    from sidrec.models.seqrec import CFReward

    path = _fixed_scorer(tmp_path / "rec.pt", {"i1": 0.5, "i2": 0.3, "i3": 0.2}, model)
    sid_to_item = {"<a_1><b_1>": "i1", "<a_1><b_2>": "i2", "<a_2><b_1>": "i3"}
    reward = CFReward(path, histories=[("i1", "i2"), ()], sid_to_item=sid_to_item)
    completions = ["<a_1><b_2>", " <a_2><b_1>\n", "<a_9><b_9>", "<a_1><b_1>", "<a_1><b_1>"]
    # rows 1, 1, 1 (a SID outside the catalog: 0), 2 (an empty history: 0), 0 (a catalog task's prompt: 0)
    got = reward(completions, row=[1, 1, 1, 2, 0], target_sid=["<a_1><b_1>"] * 5)
    assert got == pytest.approx([0.3, 0.2, 0.0, 0.0, 0.0], abs=1e-6)
    assert reward.__name__ == "cf"


def test_cf_reward_reads_the_history(tmp_path):
    # a random GRU4Rec, saved and loaded: the reward is its probability after the row's own history
    import torch

    from sidrec.models.seqrec import CFReward, GRU4Rec, SeqBaselineConfig, load_seqrec, save_seqrec

    torch.manual_seed(0)
    cfg = SeqBaselineConfig(model="gru4rec", hidden=8, max_len=4)
    net = GRU4Rec(3, cfg)
    save_seqrec(str(tmp_path / "g.pt"), net, {"i1": 1, "i2": 2, "i3": 3}, cfg)
    loaded, index, cfg2 = load_seqrec(str(tmp_path / "g.pt"))
    assert index == {"i1": 1, "i2": 2, "i3": 3} and cfg2 == cfg
    seq = torch.tensor([[1, 2, 0, 0]])
    assert torch.equal(loaded(seq, torch.tensor([2])), net.eval()(seq, torch.tensor([2])))
    reward = CFReward(str(tmp_path / "g.pt"), [("i1",), ("i1", "i3")], {"<a_1>": "i1", "<a_2>": "i2", "<a_3>": "i3"})
    a, b = reward(["<a_2>", "<a_2>"], row=[1, 2])
    probs = [
        loaded(torch.tensor([h + [0] * (4 - len(h))]), torch.tensor([len(h)]))[0, 1:].softmax(-1)[1]
        for h in ([1], [1, 3])
    ]
    assert (a, b) == pytest.approx([float(p.detach()) for p in probs]) and a != pytest.approx(b)


def test_cf_reward_refuses_a_recommender_of_another_catalog(tmp_path):
    from sidrec.models.seqrec import CFReward

    path = _fixed_scorer(tmp_path / "rec.pt", {"i1": 0.5, "i2": 0.5})
    with pytest.raises(UserError, match=r"trained on another catalog \(items such as \['i7'\]"):
        CFReward(path, [], {"<a_1>": "i1", "<a_7>": "i7"})
    with pytest.raises(UserError, match="no such file"):
        CFReward(str(tmp_path / "none.pt"), [], {})


def test_cf_needs_its_model_in_the_config_and_in_the_registry(tmp_path):
    from sidrec.configs import SidrecGRPOConfig

    common = {
        "output_dir": str(tmp_path / "o"),
        "report_to": "none",
        "per_device_train_batch_size": 4,
        "num_generations": 4,
    }
    with pytest.raises(UserError, match="reward cf scores rollouts with a trained recommender: cf_model None"):
        SidrecGRPOConfig(**common, reward_funcs=["ranking", "cf"])
    with pytest.raises(UserError, match="cf_model is set but reward_funcs"):
        SidrecGRPOConfig(**common, reward_funcs=["ranking"], cf_model=_fixed_scorer(tmp_path / "r.pt", {"i1": 1.0}))
    with pytest.raises(UserError, match="reward cf scores with a trained model: set cf_model"):
        get_reward_funcs(["rule", "cf"])
    marker = object()
    assert get_reward_funcs(["ranking", "cf"], {"cf": marker})[2] is marker


def test_grpo_prompts_carry_their_row_for_the_cf_reward(small_data):
    from sidrec.data import build_tasks, fit_to_length
    from sidrec.data.prompts import to_rl_dataset

    rows = small_data.splits["train"][:5]
    examples = build_tasks(["sid_seq", "item_alignment"], rows, small_data.catalog)
    ds = to_rl_dataset(fit_to_length(examples, None, None))
    seq = [r for r in ds if r["row"] > 0]
    # each sid_seq prompt holds its own row's history and target: row i is rows[i - 1]
    assert [r["row"] for r in seq] == [1, 2, 3, 4, 5]
    for r in seq:
        row = rows[r["row"] - 1]
        assert r["target_sid"] == row.item_sid and row.history_sids[-1] in r["prompt"]
    # catalog-task prompts (item_alignment: title -> SID) have no row
    assert len(ds) - len(seq) == sum(
        1 for ex in examples if ex.task == "item_alignment" and ex.completion == ex.target_sid
    )
