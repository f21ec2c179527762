"""GRPO rewards, looked up by name. Each is a pure function with TRL's reward signature and a stable ``__name__``.

TRL calls ``reward(prompts=..., completions=..., completion_ids=..., **columns)`` where ``columns`` holds the
dataset's columns (here ``target_sid``) and the rollout's extra fields (here ``beam_rank``). Completions are compared
as normalised SID strings (the SID tokens found in the decoded text), never as raw text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from sidrec.errors import UserError
from sidrec.sid import SID_TOKEN_RE

REWARDS: dict[str, Callable[..., list[float]]] = {}
PRESETS = {"ranking": ["rule", "ndcg_rule"], "rule": ["rule"]}
# Rewards that score with a trained model, built by the recipe from the config field named here (not pure functions):
# ``cf`` is `sidrec.models.seqrec.CFReward`, a trained SASRec/GRU4Rec's probability of the completion's item.
MODEL_REWARDS = {"cf": "cf_model"}


def register(name: str):
    def wrap(fn):
        fn.__name__ = name
        REWARDS[name] = fn
        return fn

    return wrap


def normalize_sid(text: str) -> str:
    """The SID written in a completion: its SID tokens joined, whitespace and special tokens ignored.

    Example:
        >>> normalize_sid(" <a_1><b_2> <c_3>\\n")
        '<a_1><b_2><c_3>'
    """
    return "".join(SID_TOKEN_RE.findall(text))


def _hits(completions: Sequence[str], target_sid: Sequence[str]) -> list[bool]:
    return [normalize_sid(c) == t for c, t in zip(completions, target_sid, strict=True)]


@register("rule")
def rule_reward(completions: Sequence[str], target_sid: Sequence[str], **kwargs) -> list[float]:
    """1.0 when the completion is the target item's SID, else 0.0.

    Example:
        >>> rule_reward(["<a_1><b_2>", "<a_1><b_3>"], ["<a_1><b_2>", "<a_1><b_2>"])
        [1.0, 0.0]
    """
    return [1.0 if hit else 0.0 for hit in _hits(completions, target_sid)]


@register("prefix")
def prefix_reward(completions: Sequence[str], target_sid: Sequence[str], **kwargs) -> list[float]:
    """The share of SID levels, from the first, that the completion has in common with the target.

    A dense partial credit: most groups contain no exact hit (so ``rule`` and ``ndcg_rule`` give them no signal), but
    many contain beams in the target's first-level (and second-level) cluster, which RQ codes make similar items.

    Example:
        >>> prefix_reward(["<a_1><b_2><c_3>", "<a_1><b_2><c_4>", "<a_1><b_5><c_3>", "<a_9><b_2><c_3>"], ["<a_1><b_2><c_3>"] * 4)
        [1.0, 0.6666666666666666, 0.3333333333333333, 0.0]
    """
    out = []
    for c, t in zip(completions, target_sid, strict=True):
        got, want = SID_TOKEN_RE.findall(c), SID_TOKEN_RE.findall(t)
        common = 0
        for a, b in zip(got, want, strict=False):
            if a != b:
                break
            common += 1
        out.append(common / len(want) if want else 0.0)
    return out


def ndcg_penalties(group_size: int) -> list[float]:
    """MiniOneRec's rank penalties: ``-1/log2(i+2)`` for beam rank i, scaled so their absolute values sum to 1.

    Example:
        >>> [round(p, 4) for p in ndcg_penalties(2)]
        [-0.6131, -0.3869]
    """
    raw = [1.0 / math.log2(i + 2) for i in range(group_size)]
    total = sum(raw)
    return [-r / total for r in raw]


# Rewards that read ``beam_rank``: they need beam-search rollouts (samples have no rank).
NEEDS_BEAM_RANK = frozenset({"ndcg_rule", "top1"})


@register("top1")
def top1_reward(
    completions: Sequence[str], target_sid: Sequence[str], beam_rank: Sequence[int] | None = None, **kwargs
) -> list[float]:
    """1.0 when the completion is the target and the group's best beam (rank 0), else 0.0: pays for HR@1 only, where
    ``rule`` pays the target wherever it ranks. A group whose target is ranked lower gets no reward from it.

    Example:
        >>> top1_reward(["<a_1>", "<a_2>", "<a_3>", "<a_2>"], ["<a_1>"] * 2 + ["<a_2>"] * 2, beam_rank=[0, 1, 0, 1])
        [1.0, 0.0, 0.0, 0.0]
    """
    if beam_rank is None:
        raise ValueError("top1 needs each completion's beam rank: use beam-search rollouts (beam_search: true)")
    if len(beam_rank) != len(completions):
        raise ValueError(f"beam_rank has {len(beam_rank)} entries for {len(completions)} completions")
    hits = _hits(completions, target_sid)
    return [1.0 if hit and rank == 0 else 0.0 for hit, rank in zip(hits, beam_rank, strict=True)]


@register("ndcg_rule")
def ndcg_rule_reward(
    completions: Sequence[str], target_sid: Sequence[str], beam_rank: Sequence[int] | None = None, **kwargs
) -> list[float]:
    """Rank-aware penalty: in a group that contains the target, a wrong completion at beam rank i gets
    ``ndcg_penalties(G)[i]`` and the correct one 0; a group without the target gets all zeros.

    ``beam_rank`` is each completion's rank among its group's beam scores (the rollout computes it); groups are the
    runs of consecutive completions holding each rank 0..G-1 once. Without it (sampled rollouts) the reward refuses.

    Example:
        >>> r = ndcg_rule_reward(["x", "<a_1>", "y", "z"], ["<a_1>"] * 4, beam_rank=[0, 1, 1, 0])
        >>> [round(v, 4) for v in r]
        [-0.6131, 0.0, 0.0, 0.0]
    """
    if beam_rank is None:
        raise ValueError("ndcg_rule needs each completion's beam rank: use beam-search rollouts (beam_search: true)")
    hits = _hits(completions, target_sid)
    ranks = list(beam_rank)
    if len(ranks) != len(hits):
        raise ValueError(f"beam_rank has {len(ranks)} entries for {len(hits)} completions")
    group = max(ranks) + 1 if ranks else 0
    if not ranks or len(ranks) % group:
        raise ValueError("beam_rank must hold groups of equal size G, each with the ranks 0..G-1")
    out = [0.0] * len(ranks)
    for lo in range(0, len(ranks), group):
        hi = lo + group
        if sorted(ranks[lo:hi]) != list(range(group)):
            raise ValueError(
                f"beam_rank {ranks[lo:hi]} of completions {lo}..{hi - 1} is not a permutation of 0..{group - 1}"
            )
        if any(hits[lo:hi]):
            penalties = ndcg_penalties(hi - lo)
            for i in range(lo, hi):
                out[i] = 0.0 if hits[i] else penalties[ranks[i]]
    return out


def expand_reward_names(names: Sequence[str]) -> list[str]:
    """``names`` with presets expanded, each once, in order; an unknown name fails.

    Example:
        >>> expand_reward_names(["ranking", "prefix", "rule"])
        ['rule', 'ndcg_rule', 'prefix']
    """
    expanded: list[str] = []
    for name in names:
        expanded.extend(PRESETS.get(name, [name]))
    unknown = [n for n in expanded if n not in REWARDS and n not in MODEL_REWARDS]
    if unknown or not expanded:
        raise UserError(
            f"unknown reward(s) {unknown or list(names)}; known: {sorted([*REWARDS, *MODEL_REWARDS])}, "
            f"presets: {sorted(PRESETS)}"
        )
    return list(dict.fromkeys(expanded))


def get_reward_funcs(
    names: Sequence[str], built: dict[str, Callable[..., list[float]]] | None = None
) -> list[Callable[..., list[float]]]:
    """The reward functions for ``names`` (`expand_reward_names`); a model reward (`MODEL_REWARDS`) is taken from
    ``built``, where the recipe put it."""
    built = built or {}
    expanded = expand_reward_names(names)
    missing = [n for n in expanded if n in MODEL_REWARDS and n not in built]
    if missing:
        raise UserError(f"reward {missing[0]} scores with a trained model: set {MODEL_REWARDS[missing[0]]}")
    return [built[n] if n in MODEL_REWARDS else REWARDS[n] for n in expanded]
