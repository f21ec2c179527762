"""SID-constrained decoding: a stateless LogitsProcessor and the ``rank_items`` API shared by eval and GRPO."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, GenerationConfig, LogitsProcessor, LogitsProcessorList

from sidrec.errors import UserError
from sidrec.sid import SidTrie

logger = logging.getLogger(__name__)

# HF beam search starts beams 2..N at -1e9 so that step 1 expands beam 1 only; anything that low is such a filler.
_FILLER_SCORE = -1e8


class SidConstrainedLogitsProcessor(LogitsProcessor):
    """Masks every token that does not continue a catalog SID (and everything but EOS once the SID is complete).

    Stateless: the step and each row's trie node are recomputed from ``input_ids`` on every call, for the whole batch
    of beams in a few tensor gathers. Rows whose prefix is not a catalog SID prefix get every token masked; there is
    no unconstrained fallback.

    Args:
        trie (`SidTrie`): The compiled catalog trie (on the model's device).
        prompt_length (`int`): Length of the (left-padded) prompt block; generated tokens start here.
    """

    def __init__(self, trie: SidTrie, prompt_length: int):
        self.trie = trie
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        blocked = self.trie.blocked_mask(input_ids[:, self.prompt_length :], scores.shape[-1])
        return scores.masked_fill(blocked, float("-inf"))


@dataclass
class RankedItems:
    """Per prompt: catalog SIDs best first, their beam scores (sum of token log-probs), and invalid-beam counts."""

    sids: list[list[str]] = field(default_factory=list)
    scores: list[list[float]] = field(default_factory=list)
    invalid: int = 0
    indices: list[list[int]] = field(default_factory=list)  # rows of SidTrie.sid_token_ids, same order as `sids`


def sequences_to_sids(trie: SidTrie, completions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Map generated completions `[N, >= L+1]` to SID indices `[N]` (-1 when not a catalog SID followed by EOS)."""
    length = trie.sid_length
    index = trie.walk(completions[:, :length])
    ends_with_eos = (
        completions[:, length] == trie.eos_token_id
        if completions.shape[1] > length
        else torch.zeros_like(index, dtype=torch.bool)
    )
    valid = (index >= 0) & ends_with_eos
    return torch.where(valid, index, torch.full_like(index, -1)), valid


def _greedy_scores(step_logits: tuple[torch.Tensor, ...], completions: torch.Tensor) -> torch.Tensor:
    logp = torch.stack([torch.log_softmax(x.float(), dim=-1) for x in step_logits], dim=1)
    return logp.gather(2, completions[:, : logp.shape[1], None]).sum(dim=(1, 2))


#: ``rank_items`` methods: "tree" (prefill once, beams share the prompt cache), "generate" (HF beam search + the
#: processor), "auto" (tree where the model's attention takes a custom 4D mask, else generate).
DECODERS = ("auto", "tree", "generate")
_TREE_ATTENTION = ("eager", "sdpa")


def supports_tree_attention(model) -> bool:
    """Whether the model's attention accepts an arbitrary additive 4D mask (eager and SDPA do; flash/flex do not)."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) in _TREE_ATTENTION and not getattr(
        config, "is_encoder_decoder", False
    )


def resolve_decoder(model, decoder: str) -> str:
    """The search `rank_items` runs for ``decoder`` on ``model``: ``tree`` or ``generate`` (``auto`` picks)."""
    if decoder not in DECODERS:
        raise UserError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    if decoder == "generate":
        return decoder
    if supports_tree_attention(model):
        return "tree"
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if decoder == "tree":
        raise UserError(f"decoder=tree needs eager or sdpa attention, the model uses {impl!r}")
    logger.warning("attention %r cannot take a tree mask: falling back to HF generate beam search (slower)", impl)
    return "generate"


@torch.no_grad()
def rank_items(
    model,
    tokenizer,
    prompts: Sequence[str],
    trie: SidTrie,
    num_beams: int = 50,
    batch_size: int = 8,
    show_progress: bool = True,
    decoder: str = "auto",
) -> RankedItems:
    """Rank catalog items for each prompt with SID-constrained beam search.

    Both decoders return the same lists (up to float ties): beams ranked by the sum of full-vocabulary log-probs of
    their SID tokens and EOS, as HF beam search with ``length_penalty=0`` and the constraint processor scores them.

    Args:
        model: A causal LM whose vocabulary holds the SID tokens.
        tokenizer: Its tokenizer (left padding is used for batching).
        prompts (`Sequence[str]`): Prompts ending where the SID should start.
        trie (`SidTrie`): The catalog trie compiled for this tokenizer.
        num_beams (`int`): Beams, and the length of each returned list.
        batch_size (`int`): Prompts per batch (prompts are grouped by length).
        decoder (`str`): ``"tree"``, ``"generate"`` or ``"auto"`` (see `DECODERS`).

    Returns:
        `RankedItems`: up to ``num_beams`` distinct catalog SIDs per prompt, best first, in the order of ``prompts``.
    """
    if num_beams > trie.num_sids:
        raise UserError(f"num_beams={num_beams} is larger than the catalog's {trie.num_sids} distinct SIDs")
    decoder = resolve_decoder(model, decoder)
    device = next(model.parameters()).device
    trie = trie.to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else trie.eos_token_id
    search = _tree_search if decoder == "tree" else functools.partial(_generate_search, pad_id=pad_id)
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    out_sids: list[list[str]] = [[] for _ in prompts]
    out_scores: list[list[float]] = [[] for _ in prompts]
    out_index: list[list[int]] = [[] for _ in prompts]
    invalid = 0
    was_training = model.training
    model.eval()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    try:
        for batch in tqdm(batches, desc=f"beam search ({num_beams} beams)", disable=not show_progress):
            input_ids, attention_mask = left_pad([encoded[i] for i in batch], pad_id)
            index, valid, scores = search(model, input_ids.to(device), attention_mask.to(device), trie, num_beams)
            real = torch.isfinite(scores) & (scores > _FILLER_SCORE)
            invalid += int((real & ~valid).sum())
            index, keep, scores = index.tolist(), (real & valid).tolist(), scores.tolist()
            for row, i in enumerate(batch):
                seen = set()
                for beam in range(num_beams):
                    sid = index[row][beam]
                    if keep[row][beam] and sid not in seen:
                        seen.add(sid)
                        out_sids[i].append(trie.sid_strings[sid])
                        out_scores[i].append(scores[row][beam])
                        out_index[i].append(sid)
    finally:
        model.train(was_training)
    if invalid:
        logger.warning("%d beams were not catalog SIDs (this should never happen with the constraint)", invalid)
    return RankedItems(out_sids, out_scores, invalid, out_index)


def _generate_search(model, input_ids, attention_mask, trie: SidTrie, num_beams: int, pad_id: int):
    """HF ``generate`` beam search with the processor; returns `[B, N]` SID indices, validity and scores."""
    gen_config = GenerationConfig(
        num_beams=num_beams,
        num_return_sequences=num_beams,
        max_new_tokens=trie.sid_length + 1,
        do_sample=False,
        eos_token_id=trie.eos_token_id,
        pad_token_id=pad_id,
        output_scores=num_beams > 1,
        output_logits=num_beams == 1,  # greedy search reports no sequence scores: sum log-probs ourselves
        return_dict_in_generate=True,
    )
    if num_beams > 1:
        gen_config.early_stopping = True
        gen_config.length_penalty = 0.0  # all completions have one length; 0 keeps scores as plain sums of log-probs
    width = input_ids.shape[1]
    out = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        generation_config=gen_config,
        logits_processor=LogitsProcessorList([SidConstrainedLogitsProcessor(trie, width)]),
    )
    completions = out.sequences[:, width:]
    index, valid = sequences_to_sids(trie, completions)
    scores = out.sequences_scores.float() if num_beams > 1 else _greedy_scores(out.logits, completions)
    shape = (input_ids.shape[0], num_beams)
    return index.view(shape), valid.view(shape), scores.view(shape)


def _tree_search(model, input_ids, attention_mask, trie: SidTrie, num_beams: int):
    """Constrained beam search with one prefill per prompt and tree attention over the beams.

    The KV cache keeps one row per prompt. Each step appends the N beams' new tokens to their prompt's row; an
    additive 4D mask lets every beam token see its prompt, its own ancestors (one slot per earlier step) and itself,
    and explicit position ids put it where a plain decode would. Nothing is copied per beam. Only the SID tokens of
    the current level are scored: one logsumexp over the vocabulary per beam, then a gather.

    Returns:
        `[B, N]` SID indices, validity and scores, best first per row (beams with -inf scores are not real).
    """
    batch, width = input_ids.shape
    device = input_ids.device
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    cache = DynamicCache(config=model.config)
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    ).logits  # [B, 1, V]
    # Step 0 has a single live beam per prompt (the rest start at -inf, as HF's start at -1e9).
    scores = torch.full((batch, num_beams), float("-inf"), device=device)
    scores[:, 0] = 0.0
    node = torch.zeros(batch, num_beams, dtype=torch.long, device=device)
    logits = logits.expand(batch, num_beams, logits.shape[-1])
    total = width + num_beams * trie.sid_length
    visible = torch.zeros(batch, num_beams, total, dtype=torch.bool, device=device)  # which cache slots a beam sees
    visible[:, :, :width] = attention_mask.bool()[:, None, :]
    slots = torch.arange(num_beams, device=device)
    prompt_length = attention_mask.sum(-1, keepdim=True)
    for level in range(trie.sid_length):
        tokens = trie.level_token_ids[level]
        logp = logits[..., tokens].float() - torch.logsumexp(logits.float(), dim=-1, keepdim=True)  # [B, N, K]
        child = trie.children[level][node.clamp(min=0)]  # [B, N, K]; dead beams (-inf) may hold node -1
        candidates = (scores[..., None] + logp.masked_fill(child < 0, float("-inf"))).view(batch, -1)
        scores, flat = candidates.topk(num_beams, dim=-1)
        parent = flat // len(tokens)
        node = child.view(batch, -1).gather(1, flat)
        visible = visible.gather(1, parent[..., None].expand_as(visible))
        offset = width + num_beams * level
        visible[:, slots, offset + slots] = True
        seen = visible[:, None, :, : offset + num_beams]
        mask = torch.zeros(seen.shape, dtype=dtype, device=device).masked_fill(~seen, torch.finfo(dtype).min)
        logits = model(
            input_ids=tokens[flat % len(tokens)],
            attention_mask=mask,
            position_ids=(prompt_length + level).expand(batch, num_beams),
            past_key_values=cache,
            use_cache=True,
        ).logits  # [B, N, V]
    eos = trie.eos_token_id
    scores = scores + (logits[..., eos].float() - torch.logsumexp(logits.float(), dim=-1))
    scores, order = scores.sort(dim=-1, descending=True, stable=True)
    node = node.gather(1, order)
    valid = torch.isfinite(scores)
    return torch.where(valid, node, torch.full_like(node, -1)), valid, scores


def left_pad(encoded: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids, attention_mask


def rankings_match(a: RankedItems, b: RankedItems, tol: float = 1e-4) -> bool:
    """Whether two rankings are the same up to float ties.

    Each prompt's lists are sorted by score, so they rank the same items in the same order up to ties exactly when
    they have the same length and the scores at every position agree within ``tol``: where the SIDs at a position
    differ, their scores are then within ``tol`` of each other (a swap of near-equal items).

    Example:
    >>> x = RankedItems([["<a_1>", "<a_2>"]], [[-1.0, -1.00001]])
    >>> y = RankedItems([["<a_2>", "<a_1>"]], [[-1.0, -1.00001]])
    >>> rankings_match(x, y), rankings_match(x, RankedItems([["<a_2>", "<a_1>"]], [[-1.0, -1.5]]))
    (True, False)
    """
    if len(a.sids) != len(b.sids):
        return False
    for sids_a, sids_b, scores_a, scores_b in zip(a.sids, b.sids, a.scores, b.scores, strict=True):
        if len(sids_a) != len(sids_b) or any(abs(x - y) > tol for x, y in zip(scores_a, scores_b, strict=True)):
            return False
    return True


@torch.no_grad()
def sample_items(
    model,
    tokenizer,
    prompts: Sequence[str],
    trie: SidTrie,
    num_samples: int,
    temperature: float = 1.0,
    batch_size: int = 8,
) -> list[list[int]]:
    """Draw ``num_samples`` SIDs per prompt by constrained sampling (repeats possible); returns SID indices."""
    device = next(model.parameters()).device
    trie = trie.to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else trie.eos_token_id
    gen_config = GenerationConfig(
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        num_return_sequences=num_samples,
        max_new_tokens=trie.sid_length + 1,
        eos_token_id=trie.eos_token_id,
        pad_token_id=pad_id,
    )
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    out: list[list[int]] = []
    was_training = model.training
    model.eval()
    for start in range(0, len(encoded), batch_size):
        input_ids, attention_mask = left_pad(encoded[start : start + batch_size], pad_id)
        seqs = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=gen_config,
            logits_processor=LogitsProcessorList([SidConstrainedLogitsProcessor(trie, input_ids.shape[1])]),
        )
        index, valid = sequences_to_sids(trie, seqs[:, input_ids.shape[1] :])
        if not bool(valid.all()):
            raise RuntimeError("constrained sampling produced a non-catalog SID")
        out.extend(index.view(-1, num_samples).tolist())
    model.train(was_training)
    return out


def score_ranks(scores: list[float]) -> list[int]:
    """Each completion's rank in its group by beam score, best first (0); ties keep the search's order.

    Example:
        >>> score_ranks([-1.0, -3.0, -0.5, -3.0])
        [1, 2, 0, 3]
    """
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    ranks = [0] * len(scores)
    for rank, i in enumerate(order):
        ranks[i] = rank
    return ranks
