"""SID-constrained decoding: a stateless LogitsProcessor and the ``rank_items`` API shared by eval and GRPO."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from sidrec.sid import SidTrie
from sidrec.utils import UserError

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


@torch.no_grad()
def rank_items(
    model,
    tokenizer,
    prompts: Sequence[str],
    trie: SidTrie,
    num_beams: int = 50,
    batch_size: int = 8,
    show_progress: bool = True,
) -> RankedItems:
    """Rank catalog items for each prompt with SID-constrained beam search.

    Args:
        model: A causal LM whose vocabulary holds the SID tokens.
        tokenizer: Its tokenizer (left padding is used for batching).
        prompts (`Sequence[str]`): Prompts ending where the SID should start.
        trie (`SidTrie`): The catalog trie compiled for this tokenizer.
        num_beams (`int`): Beams, and the length of each returned list.
        batch_size (`int`): Prompts per ``generate`` call (prompts are grouped by length).

    Returns:
        `RankedItems`: up to ``num_beams`` distinct catalog SIDs per prompt, best first, in the order of ``prompts``.
    """
    if num_beams > trie.num_sids:
        raise UserError(f"num_beams={num_beams} is larger than the catalog's {trie.num_sids} distinct SIDs")
    device = next(model.parameters()).device
    trie = trie.to(device)
    length = trie.sid_length
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else trie.eos_token_id
    gen_config = GenerationConfig(
        num_beams=num_beams,
        num_return_sequences=num_beams,
        max_new_tokens=length + 1,
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
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    out_sids: list[list[str]] = [[] for _ in prompts]
    out_scores: list[list[float]] = [[] for _ in prompts]
    out_index: list[list[int]] = [[] for _ in prompts]
    invalid = 0
    was_training = model.training
    model.eval()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc=f"beam search ({num_beams} beams)", disable=not show_progress):
        input_ids, attention_mask = _left_pad([encoded[i] for i in batch], pad_id)
        width = input_ids.shape[1]
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=gen_config,
            logits_processor=LogitsProcessorList([SidConstrainedLogitsProcessor(trie, width)]),
        )
        completions = out.sequences[:, width:]
        index, valid = sequences_to_sids(trie, completions)
        scores = out.sequences_scores.float() if num_beams > 1 else _greedy_scores(out.logits, completions)
        real = torch.isfinite(scores) & (scores > _FILLER_SCORE)
        invalid += int((real & ~valid).sum())
        index, keep, scores = (
            index.view(len(batch), num_beams).tolist(),
            (real & valid).view(len(batch), num_beams).tolist(),
            scores.view(len(batch), num_beams).tolist(),
        )
        for row, i in enumerate(batch):
            seen = set()
            for beam in range(num_beams):
                sid = index[row][beam]
                if keep[row][beam] and sid not in seen:
                    seen.add(sid)
                    out_sids[i].append(trie.sid_strings[sid])
                    out_scores[i].append(scores[row][beam])
                    out_index[i].append(sid)
    model.train(was_training)
    if invalid:
        logger.warning("%d beams were not catalog SIDs (this should never happen with the constraint)", invalid)
    return RankedItems(out_sids, out_scores, invalid, out_index)


def _left_pad(encoded: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids, attention_mask


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
        input_ids, attention_mask = _left_pad(encoded[start : start + batch_size], pad_id)
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
