"""Ranking backends behind one interface, chosen in one place (`build_ranker`).

A ranker turns prompts into ranked catalog SIDs (`sidrec.decoding.RankedItems`) with the SID-constrained beam search,
and describes itself for ``run_summary.json``. The three, all giving the same lists and scores:

- ``tree``: sidrec's tree search on the checkpoint in transformers (`sidrec.backends.hf.HfRanker`);
- ``generate``: HF ``generate`` beam search with `sidrec.decoding.SidConstrainedLogitsProcessor` (same class);
- ``vllm``: the search driven over a vLLM engine (`sidrec.backends.vllm.VllmRanker`; optional extra, imported only
  when chosen).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sidrec.decoding import RankedItems
from sidrec.errors import UserError
from sidrec.models.loading import default_dtype, is_adapter_dir

BACKENDS = ("hf", "vllm")


class Ranker(Protocol):
    name: str  # tree, generate or vllm
    model: object  # the transformers model it runs on (None for vllm)

    def rank(self, prompts: Sequence[str]) -> RankedItems: ...

    def describe(self) -> dict: ...


def build_ranker(args, checkpoint, catalog, state) -> Ranker:
    """The ranker ``args`` (an `sidrec.configs.EvalConfig`) asks for, on ``checkpoint`` (`load_trained`).

    ``backend: hf`` loads the weights (bfloat16 on CUDA, float32 elsewhere, unless ``dtype`` is set) on the process's
    device and resolves ``decoder`` (tree or generate); ``backend: vllm`` builds an engine in this one process.
    """
    if args.backend not in BACKENDS:
        raise UserError(f"backend must be one of {', '.join(BACKENDS)}, got {args.backend!r}")
    trie = catalog.vocab.compile(checkpoint.tokenizer)
    if args.backend == "vllm":
        return _vllm_ranker(args, checkpoint, trie, state)
    from sidrec.backends.hf import HfRanker

    model = checkpoint.load_model(default_dtype(None, state.device)).to(state.device)
    return HfRanker(model, checkpoint.tokenizer, trie, args.num_beams, args.batch_size, args.decoder)


def _vllm_ranker(args, checkpoint, trie, state) -> Ranker:
    if state.num_processes > 1:
        raise UserError(
            "backend vllm runs in one process (the engine batches the beams itself); launch without "
            f"--num_processes, got {state.num_processes}"
        )
    if is_adapter_dir(checkpoint.path):
        raise UserError("backend vllm takes a full checkpoint; merge the adapter first or use backend hf")
    try:
        from sidrec.backends.vllm import VllmRanker, make_llm
    except ImportError as e:
        raise UserError(f"backend vllm needs vLLM (`make install-vllm`, then use .venv-vllm): {e}") from e
    dtype = checkpoint.model_args.dtype
    dtype = dtype if dtype not in (None, "auto") else str(default_dtype(None, state.device))
    dtype = dtype.removeprefix("torch.")
    llm = make_llm(
        checkpoint.path,
        dtype=dtype,
        seed=args.seed,
        enforce_eager=args.vllm_enforce_eager,
        trust_remote_code=args.trust_remote_code,
    )
    return VllmRanker(llm, checkpoint.tokenizer, trie, num_beams=args.num_beams, batch_size=args.batch_size)
