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
- `prepare_rollouts` and `sample_rollouts`: GRPO's constrained sampled rollouts on TRL's vLLM engine (colocate or
  server). On CPU the colocated engine needs `sidrec.patches.patch_cpu_weight_sync`: vLLM packs linear weights into a
  private layout at load time and drops the parameters, so TRL's weight sync would fail or update weights the kernels
  no longer read.

Nothing outside this module imports vllm; sidrec works without it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Sequence

import torch
import vllm
from tqdm.auto import tqdm
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
from vllm.sampling_params import MAX_LOGPROB_TOKEN_IDS
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from sidrec.atomic_io import atomic_write_json
from sidrec.decoding import RankedItems, sequences_to_sids
from sidrec.errors import UserError
from sidrec.patches import patch_cpu_weight_sync
from sidrec.sid import SidTrie

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
        num_beams (`int`), batch_size (`int`): What `rank` uses when not given them.
    """

    name = "vllm"
    model = None  # the weights live in the engine

    def __init__(self, llm: LLM, tokenizer, trie: SidTrie, num_beams: int = 50, batch_size: int = 32):
        mode = llm.llm_engine.model_config.logprobs_mode
        if mode != "raw_logprobs":
            raise UserError(f"VllmRanker needs an engine with logprobs_mode='raw_logprobs', got {mode!r}")
        self.llm = llm
        self.tokenizer = tokenizer
        self.trie = trie.to("cpu")
        self.num_beams, self.batch_size = num_beams, batch_size
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

    def describe(self) -> dict:
        """The engine that ranked, for ``run_summary.json``."""
        dtype = str(self.llm.llm_engine.model_config.dtype).removeprefix("torch.")
        return {"ranker": "vllm", "engine": f"vllm {vllm.__version__} {type(self.llm.llm_engine).__name__}",
                "vllm_dtype": dtype}  # fmt: skip

    def rank(
        self,
        prompts: Sequence[str],
        num_beams: int | None = None,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> RankedItems:
        """Rank catalog SIDs for each prompt, best first (`RankedItems`, as `rank_items` returns)."""
        num_beams = num_beams or self.num_beams
        batch_size = batch_size or self.batch_size
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


def prepare_rollouts(args, sid_trie: SidTrie, beam_search: bool) -> str:
    """Before TRL builds its vLLM engine: the trie file the logits processor reads, passed to every rollout request
    through ``generation_kwargs``, and on CPU the weight-sync patch. Returns a description for run_summary.json."""
    if beam_search:
        raise UserError(
            "use_vllm: true samples rollouts on vLLM; set beam_search: false (beam search runs on the trainer's model)"
        )
    os.makedirs(args.output_dir, exist_ok=True)
    path = write_trie_file(sid_trie, os.path.abspath(os.path.join(args.output_dir, "sid_trie.json")))
    extra = {**((args.generation_kwargs or {}).get("extra_args") or {}), TRIE_ARG: path}
    args.generation_kwargs = {**(args.generation_kwargs or {}), "extra_args": extra}
    engine = f"vllm {vllm.__version__} {args.vllm_mode}"
    if args.vllm_mode == "colocate":
        # The patch must reach the engine, so the engine must run in this process.
        if os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0") != "0":
            raise UserError("vllm_mode colocate needs VLLM_ENABLE_V1_MULTIPROCESSING=0 (the engine in-process)")
        if patch_cpu_weight_sync():
            engine += " (CPU, weight-sync patch)"
    return engine


def sample_rollouts(trainer, prompts: list[str], group: int) -> dict:
    """G constrained samples per prompt from the trainer's vLLM engine (weights already synced by TRL), checked to
    be catalog SIDs; counts go to ``trainer.rollout_stats``."""
    prompt_ids = trainer.processing_class(prompts, add_special_tokens=False)["input_ids"]
    prompt_ids, completion_ids, _, _ = trainer.vllm_generation.generate(
        prompts=prompt_ids, images=None, num_generations=group
    )
    completion_ids = [list(c) for c in completion_ids]
    width = trainer.sid_trie.sid_length + 1  # the SID and EOS; a shorter or longer completion is invalid as it is
    padded = torch.tensor([(c + [0] * width)[:width] for c in completion_ids], dtype=torch.long)
    _, valid = sequences_to_sids(trainer.sid_trie, padded)
    valid &= torch.tensor([len(c) == width for c in completion_ids])
    invalid = int((~valid).sum())
    trainer.rollout_stats["completions"] += len(completion_ids)
    trainer.rollout_stats["invalid"] += invalid
    if invalid:
        bad = completion_ids[int((~valid).nonzero()[0])]
        raise RuntimeError(
            f"vLLM returned {invalid} of {len(completion_ids)} completions that are not a catalog SID + EOS "
            f"(first: {bad}); the SID trie logits processor did not constrain them"
        )
    # Sampling log-probs are not returned: vLLM's are of the trie-masked distribution, the trainer's of the full
    # vocabulary, so TRL's importance-sampling correction would compare two different distributions (it is
    # refused with use_vllm in SidrecGRPOConfig).
    return {"prompt_ids": [list(p) for p in prompt_ids], "completion_ids": completion_ids, "logprobs": None}
