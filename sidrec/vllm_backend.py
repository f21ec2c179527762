"""vLLM backend (optional extra, `make install-vllm`): SID-constrained sampling and ranking on a vLLM engine.

- `SidTrieLogitsProcessor`: a vLLM V1 logits processor, registered under the ``vllm.logits_processors`` entry point
  (setup.cfg), so every engine in a venv with sidrec installed has it, TRL's colocated GRPO engine included. It acts
  only on requests whose ``SamplingParams.extra_args`` name a trie file (`TRIE_ARG`, written by `write_trie_file`): each
  step it masks every token that does not continue a catalog SID over the token-id trie, and everything but EOS once
  the SID is complete. Token ids, not strings: a string grammar lets the tokenizer pick a non-canonical tokenization.
- `VllmRanker`: the constrained beam search of `sidrec.decoding.rank_items` driven from Python over the engine. Each
  step asks for the full-vocabulary log-probs of exactly the trie children of every live beam
  (``SamplingParams.logprob_token_ids`` with the engine in ``raw_logprobs`` mode), so the beams and their scores are
  the HF ones: the sum of full-vocabulary log-probs of the SID tokens and EOS.
- `patch_cpu_weight_sync`: on CPU, vLLM packs linear weights into a private layout at load time and drops the
  parameters (``dispatch_cpu_unquantized_gemm``), so TRL's colocated weight sync fails (``'Parameter' object has no
  attribute 'weight_loader'``) and, for layers it keeps, would update weights the kernels no longer read. The patch
  makes those layers use ``torch.nn.functional.linear`` on their own parameters.

Nothing outside this module imports vllm; sidrec works without it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
from vllm.sampling_params import MAX_LOGPROB_TOKEN_IDS
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from sidrec.decoding import RankedItems
from sidrec.sid import SidTrie
from sidrec.utils import UserError, atomic_write_json

logger = logging.getLogger(__name__)

#: ``SamplingParams.extra_args`` key holding the path of a trie file (`write_trie_file`).
TRIE_ARG = "sidrec_sid_trie"


def write_trie_file(trie: SidTrie, path: str) -> str:
    """Write the catalog's SID token ids and EOS id as JSON (what the logits processor loads); returns ``path``."""
    atomic_write_json(path, {"eos_token_id": trie.eos_token_id, "sid_token_ids": trie.sid_token_ids.tolist()})
    return path


@functools.lru_cache(maxsize=8)
def load_prefix_table(path: str) -> tuple[dict[tuple[int, ...], list[int]], int]:
    """Trie file -> ({SID prefix (token ids): allowed next token ids}, eos id); complete SIDs allow only EOS.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "trie.json")
        >>> _ = open(path, "w").write('{"eos_token_id": 9, "sid_token_ids": [[1, 4], [1, 5], [2, 4]]}')
        >>> table, eos = load_prefix_table(path)
        >>> table[()], table[(1,)], table[(2,)], table[(1, 5)]
        ([1, 2], [4, 5], [4], [9])
    """
    with open(path) as f:
        spec = json.load(f)
    eos = int(spec["eos_token_id"])
    table: dict[tuple[int, ...], set[int]] = {}
    for sid in spec["sid_token_ids"]:
        for t in range(len(sid)):
            table.setdefault(tuple(sid[:t]), set()).add(int(sid[t]))
        table[tuple(sid)] = {eos}
    return {prefix: sorted(ids) for prefix, ids in table.items()}, eos


class _TrieMask:
    """Per-request processor: ``(output token ids, logits row) -> logits row`` with non-continuations at -inf."""

    def __init__(self, table: dict[tuple[int, ...], list[int]]):
        self.table = table
        self.allowed: dict[tuple[int, ...], torch.Tensor] = {}

    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        prefix = tuple(output_ids)
        ids = self.allowed.get(prefix)
        if ids is None:
            # Off the trie (cannot happen while this processor runs from the first step): nothing is allowed, so the
            # engine's output shows the failure instead of an unconstrained token.
            ids = self.allowed[prefix] = torch.tensor(self.table.get(prefix, []), dtype=torch.long)
        ids = ids.to(logits.device)
        keep = logits.index_select(0, ids)
        logits.fill_(float("-inf"))
        logits.index_copy_(0, ids, keep)
        return logits


class SidTrieLogitsProcessor(AdapterLogitsProcessor):
    """vLLM V1 logits processor: constrains requests that carry ``extra_args={TRIE_ARG: path}`` to catalog SIDs."""

    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token is best

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams):
        path = (sampling_params.extra_args or {}).get(TRIE_ARG)
        if path is not None and not os.path.isfile(path):
            raise ValueError(f"{TRIE_ARG}: trie file {path!r} does not exist")

    def new_req_logits_processor(self, params: SamplingParams):
        path = (params.extra_args or {}).get(TRIE_ARG)
        if path is None:
            return None
        table, _ = load_prefix_table(path)
        return _TrieMask(table)


def sid_sampling_params(trie_path: str, n: int, temperature: float) -> SamplingParams:
    """``n`` constrained samples of one SID plus EOS per prompt, with the sampled tokens' log-probs.

    No per-request seed: the engine's seed makes runs repeatable, and per-request generators fail on vLLM's CPU
    runner (0.32: ``CPU Generator does not use offset``)."""
    table, eos = load_prefix_table(trie_path)
    length = max(len(p) for p in table)  # complete SIDs are the longest keys
    return SamplingParams(
        n=n,
        temperature=temperature,
        max_tokens=length + 1,
        stop_token_ids=[eos],
        logprobs=0,
        extra_args={TRIE_ARG: trie_path},
    )


def patch_cpu_weight_sync() -> bool:
    """On vLLM's CPU platform, keep linear layers on their parameters so weight reloads take effect.

    Returns True when the patch was applied (CPU platform), False elsewhere (nothing to do on GPU).
    """
    from vllm.model_executor.layers import utils as layer_utils
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return False

    def keep_parameters(layer: torch.nn.Module, remove_weight: bool) -> None:
        layer.cpu_linear = torch.nn.functional.linear

    layer_utils.dispatch_cpu_unquantized_gemm = keep_parameters
    return True


def make_llm(
    model_path: str, dtype: str = "float32", seed: int = 0, max_model_len: int | None = None, **kwargs
) -> LLM:
    """A vLLM engine for ranking: raw (full-vocabulary) log-probs, prefix caching for the beams' shared prompts."""
    return LLM(
        model=model_path,
        dtype=dtype,
        seed=seed,
        max_model_len=max_model_len,
        logprobs_mode="raw_logprobs",
        enable_prefix_caching=True,
        **kwargs,
    )


class VllmRanker:
    """Constrained beam search over a vLLM engine: same lists and scores as `sidrec.decoding.rank_items`.

    Per level, every live beam is one request (prompt + the beam's SID tokens so far, one new token) that returns
    the full-vocabulary log-probs of that beam's trie children; the best ``num_beams`` extensions survive. A last
    step scores EOS after each complete SID. Beam prompts share their user's prompt, which prefix caching computes once.

    Args:
        llm (`vllm.LLM`): An engine in ``raw_logprobs`` mode (`make_llm`).
        tokenizer: The checkpoint's tokenizer (prompts are tokenized here, without special tokens, as HF does).
        trie (`SidTrie`): The catalog trie compiled for that tokenizer.
    """

    def __init__(self, llm: LLM, tokenizer, trie: SidTrie):
        mode = llm.llm_engine.model_config.logprobs_mode
        if mode != "raw_logprobs":
            raise UserError(f"VllmRanker needs an engine with logprobs_mode='raw_logprobs', got {mode!r}")
        self.llm = llm
        self.tokenizer = tokenizer
        self.trie = trie.to("cpu")
        # Level t: node -> (allowed token ids, child node per token); the last level's children are SID indices.
        self.levels = []
        for level in range(self.trie.sid_length):
            tokens = self.trie.level_token_ids[level].tolist()
            table = []
            for row in self.trie.children[level].tolist():
                cols = [j for j, c in enumerate(row) if c >= 0]
                table.append(([tokens[j] for j in cols], [row[j] for j in cols]))
            self.levels.append(table)

    def _score(self, contexts: list[list[int]], token_sets: list[list[int]]) -> list[dict[int, float]]:
        """Full-vocabulary log-probs of each context's next token, for the given token ids (chunked to vLLM's cap)."""
        requests, owners = [], []
        for i, (ids, tokens) in enumerate(zip(contexts, token_sets, strict=True)):
            for lo in range(0, len(tokens), MAX_LOGPROB_TOKEN_IDS):
                chunk = tokens[lo : lo + MAX_LOGPROB_TOKEN_IDS]
                params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=chunk)
                requests.append((TokensPrompt(prompt_token_ids=ids), params))
                owners.append(i)
        outputs = self.llm.generate([r[0] for r in requests], [r[1] for r in requests], use_tqdm=False)
        out: list[dict[int, float]] = [{} for _ in contexts]
        for i, result in zip(owners, outputs, strict=True):
            step = result.outputs[0].logprobs[0]
            out[i].update({tok: lp.logprob for tok, lp in step.items()})
        return out

    def rank(self, prompts: Sequence[str], num_beams: int, batch_size: int = 32, show_progress: bool = True):
        """Rank catalog SIDs for each prompt, best first (`RankedItems`, as `rank_items` returns)."""
        if num_beams > self.trie.num_sids:
            raise UserError(f"num_beams={num_beams} is larger than the catalog's {self.trie.num_sids} distinct SIDs")
        encoded = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        result = RankedItems([[] for _ in prompts], [[] for _ in prompts], 0, [[] for _ in prompts])
        starts = range(0, len(prompts), batch_size)
        for lo in tqdm(starts, desc=f"vLLM beam search ({num_beams} beams)", disable=not show_progress):
            batch = list(range(lo, min(lo + batch_size, len(prompts))))
            # A beam: (score, node at the current level, SID tokens so far); one list per prompt, best first.
            beams = {i: [(0.0, 0, [])] for i in batch}
            for table in self.levels:
                keys = [(i, b) for i in batch for b in range(len(beams[i]))]
                contexts = [encoded[i] + beams[i][b][2] for i, b in keys]
                allowed = [table[beams[i][b][1]][0] for i, b in keys]
                logps = self._score(contexts, allowed)
                grown = {i: [] for i in batch}
                for (i, b), scores in zip(keys, logps, strict=True):
                    score, node, tokens = beams[i][b]
                    for tok, child in zip(*table[node], strict=True):
                        grown[i].append((score + scores[tok], child, [*tokens, tok]))
                # Best first; ties keep the order of their parents, then of the tokens (as a stable top-k would).
                beams = {i: sorted(grown[i], key=lambda x: -x[0])[:num_beams] for i in batch}
            keys = [(i, b) for i in batch for b in range(len(beams[i]))]
            eos = self.trie.eos_token_id
            logps = self._score([encoded[i] + beams[i][b][2] for i, b in keys], [[eos]] * len(keys))
            final = {i: [] for i in batch}
            for (i, b), scores in zip(keys, logps, strict=True):
                score, sid, _ = beams[i][b]
                final[i].append((score + scores[eos], sid))
            for i in batch:
                for score, sid in sorted(final[i], key=lambda x: -x[0]):
                    result.sids[i].append(self.trie.sid_strings[sid])
                    result.scores[i].append(score)
                    result.indices[i].append(sid)
        return result
