"""Thin trainer subclasses."""

from __future__ import annotations

import json
import os

import torch
import trl.trainer.utils as trl_trainer_utils
from accelerate.utils import gather_object
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, EvalLoopOutput
from trl import GRPOTrainer, SFTTrainer
from trl.models import unwrap_model_for_generation

from sidrec.decoding import rank_items, sample_items, sequences_to_sids
from sidrec.evaluation import RankingEval
from sidrec.sid import SidTrie
from sidrec.utils import UserError

REF_MODEL_CHECKPOINT = "ref_model.safetensors"


def score_labelled_positions_on_cpu() -> None:
    """Make TRL's fused LM head score only the positions that have a label on CPU too.

    ``trl.trainer.utils.add_fused_lm_head`` (TRL 1.16) scores only the labelled positions where Triton runs, and every
    position elsewhere: a varying number of rows would recompile each batch on compiling backends (Neuron). Eager CPU
    recompiles nothing, and the per-row arithmetic is the same either way, so the loss and gradients are unchanged
    while the LM head skips the prompt tokens: a forward + backward of the tiny-cpu recipe takes half the time
    (``scripts/bench_sft_step.py``, docs/PERFORMANCE.md). The decision is the module-level name ``_use_triton`` that
    the fused head reads; the kernel keeps its own reference, so no Triton kernel runs on CPU. A test in
    ``tests/test_sft.py`` fails if TRL renames it or stops reading it there. Idempotent.
    """
    original = trl_trainer_utils._use_triton
    if getattr(original, "sidrec_compact_cpu", False):
        return

    def use_compact_rows(device: torch.device) -> bool:
        return device.type == "cpu" or original(device)

    use_compact_rows.sidrec_compact_cpu = True
    trl_trainer_utils._use_triton = use_compact_rows


class RankingEvalMixin:
    """Adds ranking metrics to every evaluation: ``eval_hr@K`` and ``eval_ndcg@K`` of the constrained beam search of
    ``recipes/evaluate.py`` on fixed rows (a `RankingEval`, usually a seeded subset of the valid split).

    Each process ranks its share of the rows; the shares are gathered to every process, so all of them log, select and
    stop on the same numbers. With ``ranking_only`` the parent's own evaluation loop is skipped (GRPO: its eval would
    run rollouts and a loss that nothing uses). The hook is ``evaluation_loop``, which ``Trainer.evaluate`` calls
    before it logs the metrics and hands them to the callbacks (early stopping) and checkpoint selection.
    """

    ranking_eval: RankingEval | None = None
    ranking_only: bool = False

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        if self.ranking_eval is None:
            return super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
        if self.ranking_only:
            output = EvalLoopOutput(
                predictions=None, label_ids=None, metrics={}, num_samples=len(self.ranking_eval.rows)
            )
        else:
            output = super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
        metrics = self.ranking_metrics()
        output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in metrics.items()})
        return output

    def ranking_metrics(self) -> dict:
        """Rank this process's share of the rows, gather every share, score (same result on every process)."""
        acc = self.accelerator
        with unwrap_model_for_generation(self.model_wrapped, acc) as model:
            mine = self.ranking_eval.rank(model, self.processing_class, acc.process_index, acc.num_processes)
        return self.ranking_eval.score(gather_object([mine]))


class SidSFTTrainer(RankingEvalMixin, SFTTrainer):
    """Only change from SFTTrainer: every evaluation also ranks next items with constrained beam search (see
    `RankingEvalMixin`), so checkpoints can be chosen and training stopped on ``eval_ndcg@10``, not the loss. On CPU
    the loss scores only the completion positions, as TRL already does on GPU (`score_labelled_positions_on_cpu`).

    Args:
        ranking_eval (`RankingEval`, *optional*): The rows to rank at each evaluation; None keeps SFTTrainer's eval.
    """

    def __init__(self, *args, ranking_eval: RankingEval | None = None, **kwargs):
        self.ranking_eval = ranking_eval
        score_labelled_positions_on_cpu()
        super().__init__(*args, **kwargs)

    def average_from_best(self) -> dict | None:
        """Average the best checkpoint with the later ones on disk; keep the average if it ranks better on valid.

        Call after ``train()`` (the best checkpoint is loaded). Every process reads the checkpoints and ranks its share,
        so all of them take the same decision. Returns the record for run_summary.json (None when fewer than two
        checkpoints qualify).
        """
        model = self.accelerator.unwrap_model(self.model)
        return average_checkpoints_from_best(
            model, self.args.output_dir, self.state.best_model_checkpoint, self.state.best_metric, self.ranking_metrics,
            self.args.metric_for_best_model,
        )  # fmt: skip


def checkpoints_from(best_checkpoint: str | None, output_dir: str) -> list[str]:
    """``best_checkpoint`` and every later ``checkpoint-<step>`` folder in ``output_dir``, by step."""
    if not best_checkpoint:
        return []

    def step(path: str) -> int:
        return int(os.path.basename(path).rsplit("-", 1)[1])

    prefix = f"{PREFIX_CHECKPOINT_DIR}-"
    found = [
        os.path.join(output_dir, d)
        for d in os.listdir(output_dir)
        if d.startswith(prefix) and d[len(prefix) :].isdigit()
    ]
    return sorted((p for p in found if step(p) >= step(best_checkpoint)), key=step)


def _safetensors_files(path: str) -> list[str]:
    """The weight files of a saved full model: ``model.safetensors``, or the shards its index lists."""
    single = os.path.join(path, "model.safetensors")
    if os.path.isfile(single):
        return [single]
    index = os.path.join(path, "model.safetensors.index.json")
    if not os.path.isfile(index):
        raise UserError(
            f"average_checkpoints: no model.safetensors(.index.json) in {path} (full models only, not adapters)"
        )
    with open(index) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    return [os.path.join(path, shard) for shard in shards]


@torch.no_grad()
def average_checkpoints_from_best(
    model, output_dir: str, best_checkpoint: str | None, best_metric: float | None, rank, metric: str = "eval_ndcg@10"
) -> dict | None:
    """Uniform average of the weights of ``best_checkpoint`` and the later checkpoints in ``output_dir``.

    ``model`` holds the best checkpoint's weights. The average is loaded into it and ``rank()`` (ranking metrics
    without the ``eval_`` prefix) scores it; it stays only when ``metric`` is above ``best_metric``, otherwise the
    best weights are put back exactly. Returns what was averaged and decided, or None with fewer than two checkpoints.
    """
    paths = checkpoints_from(best_checkpoint, output_dir)
    if len(paths) < 2 or best_metric is None:
        return None
    params = dict(model.named_parameters())  # tied weights once, as the checkpoints store them
    total = {name: torch.zeros(p.shape, dtype=torch.float32) for name, p in params.items()}
    for path in paths:
        seen = set()
        for file in _safetensors_files(path):
            with safe_open(file, "pt") as f:
                for name in params.keys() & set(f.keys()):
                    total[name] += f.get_tensor(name).to(torch.float32)
                    seen.add(name)
        missing = sorted(set(params) - seen)
        if missing:
            raise RuntimeError(f"average_checkpoints: {path} has no {missing[:3]} ({len(missing)} missing)")
    best = {name: p.detach().clone() for name, p in params.items()}
    for name, p in params.items():
        p.copy_(total[name] / len(paths))
    key = metric.removeprefix("eval_")
    scores = rank()
    kept = scores[key] > best_metric
    if not kept:
        for name, p in params.items():
            p.copy_(best[name])
    return {
        "checkpoints": [os.path.basename(p) for p in paths],
        "metrics": {f"eval_{k}": v for k, v in scores.items()},
        "best_metric": best_metric,
        "kept": bool(kept),
    }


class SidGRPOTrainer(RankingEvalMixin, GRPOTrainer):
    """Only change from GRPOTrainer: rollouts come from SID-constrained decoding instead of free sampling, and
    evaluation is the next-item ranking of `RankingEvalMixin` (no eval rollouts). On CPU the completions' log-probs
    skip the prompt positions, as TRL already does on GPU (`score_labelled_positions_on_cpu`).

    With ``beam_search=True`` (MiniOneRec's setting) the G completions of a prompt are the top-G beams of a
    constrained beam search, best first, all distinct catalog SIDs; with ``beam_search=False`` they are G constrained
    samples at the trainer's temperature, drawn by the trainer's model or, with ``use_vllm``, by TRL's vLLM engine
    (colocate or server) through `sidrec.vllm_backend.SidTrieLogitsProcessor` (TRL syncs the weights first). TRL
    repeats each prompt G times in a row; one search runs per unique prompt and its completions are returned in that
    layout. With beam search, each completion's rank among its group's beam scores reaches the reward functions as the
    ``beam_rank`` column; samples have no rank and no such column. The hook is TRL's ``rollout_func`` (TRL passes its
    extra fields to the rewards).

    Checkpoints also hold the reference model when ``sync_ref_model`` moves it (TRL reloads it from the starting
    checkpoint, which would make a resumed run differ from an uninterrupted one).

    Args:
        sid_trie (`SidTrie`): The catalog trie, compiled for the trainer's tokenizer.
        beam_search (`bool`): Beam-search rollouts (True) or constrained sampling (False).
        rollout_batch_size (`int`): Unique prompts per generate call.
        ranking_eval (`RankingEval`, *optional*): The rows to rank at each evaluation (needs an ``eval_dataset``,
            which Trainer requires whenever ``eval_strategy`` is set; its rows are not used).
    """

    ranking_only = True

    def __init__(
        self,
        *args,
        sid_trie: SidTrie,
        beam_search: bool = True,
        rollout_batch_size: int = 8,
        ranking_eval: RankingEval | None = None,
        **kwargs,
    ):
        if kwargs.get("rollout_func") is not None:
            raise ValueError("SidGRPOTrainer supplies its own rollout_func")
        self.ranking_eval = ranking_eval
        self.sid_trie = sid_trie
        self.beam_search = beam_search
        self.rollout_batch_size = rollout_batch_size
        config = kwargs.get("args")
        # What made the rollouts, for run_summary.json (the engine, and that every completion was a catalog SID).
        self.rollout_stats = {"engine": "trainer model", "completions": 0, "invalid": 0}
        if config is not None and config.use_vllm:
            self.rollout_stats["engine"] = _prepare_vllm_rollouts(config, sid_trie, beam_search)
        score_labelled_positions_on_cpu()
        super().__init__(*args, rollout_func=self._sid_rollout, **kwargs)
        check_group_layout(self.args, sid_trie.num_sids)
        if self.use_vllm and self.args.vllm_mode == "colocate":
            # vLLM's "auto" dtype (TRL passes none) runs a float32 checkpoint in bfloat16.
            self.rollout_stats["engine_dtype"] = str(self.vllm_generation.llm.llm_engine.model_config.dtype)

    def _sid_rollout(self, prompts: list[str], trainer: GRPOTrainer) -> dict:
        group = self.num_generations if self.model.training else self.num_generations_eval
        unique = prompts[::group]
        if len(unique) * group != len(prompts) or any(p != unique[i // group] for i, p in enumerate(prompts)):
            raise RuntimeError(f"expected each prompt repeated {group} times in a row")
        tokenizer = self.processing_class
        if self.use_vllm:
            return self._vllm_rollout(prompts, group)
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as model:
            if self.beam_search:
                ranked = rank_items(
                    model, tokenizer, unique, self.sid_trie, group, self.rollout_batch_size, show_progress=False
                )
                indices = ranked.indices
                if any(len(row) != group for row in indices):
                    raise RuntimeError(f"beam search returned fewer than {group} distinct SIDs for some prompt")
                ranks = [r for row in ranked.scores for r in score_ranks(row)]
            else:
                indices = sample_items(
                    model, tokenizer, unique, self.sid_trie, group, self.args.temperature, self.rollout_batch_size
                )
                ranks = None  # samples have no rank; rank-based rewards refuse them (SidrecGRPOConfig, ndcg_rule)
        sid_ids = self.sid_trie.sid_token_ids
        eos = self.sid_trie.eos_token_id
        completion_ids = [sid_ids[i].tolist() + [eos] for row in indices for i in row]
        prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        out = {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}
        if ranks is not None:
            out["beam_rank"] = ranks
        self.rollout_stats["completions"] += len(completion_ids)
        return out

    def _vllm_rollout(self, prompts: list[str], group: int) -> dict:
        """G constrained samples per prompt from TRL's vLLM engine (weights already synced by TRL)."""
        prompt_ids = self.processing_class(prompts, add_special_tokens=False)["input_ids"]
        prompt_ids, completion_ids, _, _ = self.vllm_generation.generate(
            prompts=prompt_ids, images=None, num_generations=group
        )
        completion_ids = [list(c) for c in completion_ids]
        width = self.sid_trie.sid_length + 1  # the SID and EOS; a shorter or longer completion is invalid as it is
        padded = torch.tensor([(c + [0] * width)[:width] for c in completion_ids], dtype=torch.long)
        _, valid = sequences_to_sids(self.sid_trie, padded)
        valid &= torch.tensor([len(c) == width for c in completion_ids])
        invalid = int((~valid).sum())
        self.rollout_stats["completions"] += len(completion_ids)
        self.rollout_stats["invalid"] += invalid
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

    def _synced_ref_model(self):
        if self.ref_model is None or not self.args.sync_ref_model:
            return None
        return self.accelerator.unwrap_model(self.ref_model)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        ref = self._synced_ref_model()
        if ref is not None and self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            save_model(ref, os.path.join(folder, REF_MODEL_CHECKPOINT))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        ref = self._synced_ref_model()
        path = os.path.join(checkpoint, REF_MODEL_CHECKPOINT) if checkpoint else ""
        if ref is not None and os.path.isfile(path):
            load_model(ref, path, device=str(next(ref.parameters()).device))


def _prepare_vllm_rollouts(args, sid_trie: SidTrie, beam_search: bool) -> str:
    """Before TRL builds its vLLM engine: the trie file the logits processor reads, passed to every rollout request
    through ``generation_kwargs``, and on CPU the weight-sync patch. Returns a description for run_summary.json."""
    if beam_search:
        raise UserError(
            "use_vllm: true samples rollouts on vLLM; set beam_search: false (beam search runs on the trainer's model)"
        )
    try:
        from sidrec import vllm_backend
    except ImportError as e:
        raise UserError(f"use_vllm: true needs vLLM (`make install-vllm`, then use .venv-vllm): {e}") from e
    import vllm

    os.makedirs(args.output_dir, exist_ok=True)
    path = vllm_backend.write_trie_file(sid_trie, os.path.abspath(os.path.join(args.output_dir, "sid_trie.json")))
    extra = {**((args.generation_kwargs or {}).get("extra_args") or {}), vllm_backend.TRIE_ARG: path}
    args.generation_kwargs = {**(args.generation_kwargs or {}), "extra_args": extra}
    engine = f"vllm {vllm.__version__} {args.vllm_mode}"
    if args.vllm_mode == "colocate":
        # The patch must reach the engine, so the engine must run in this process.
        if os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0") != "0":
            raise UserError("vllm_mode colocate needs VLLM_ENABLE_V1_MULTIPROCESSING=0 (the engine in-process)")
        if vllm_backend.patch_cpu_weight_sync():
            engine += " (CPU, weight-sync patch)"
    return engine


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


def check_rollout_layout(args, catalog) -> None:
    """Before any model work: a rollout is one SID plus EOS, and the GRPO groups fit (`check_group_layout`)."""
    if args.max_completion_length != catalog.sid_length + 1:
        raise UserError(
            f"max_completion_length must be the SID length + EOS = {catalog.sid_length + 1}, "
            f"got {args.max_completion_length}"
        )
    check_group_layout(args, len(catalog.vocab))


def check_group_layout(args, num_sids: int) -> None:
    """GRPO groups must fit the catalog and each process's batch (so a group never spans two processes)."""
    group = args.num_generations
    if group > num_sids:
        raise UserError(f"num_generations={group} is larger than the catalog's {num_sids} distinct SIDs")
    per_process = args.per_device_train_batch_size * args.steps_per_generation
    if per_process % group:
        raise UserError(
            f"num_generations={group} must divide the per-process generation batch "
            f"(per_device_train_batch_size x steps_per_generation = {per_process})"
        )


def best_model_record(trainer) -> dict:
    """For run_summary.json: the selection metric, its best value and checkpoint, and every evaluation's metrics."""
    evals = [
        {
            k: v
            for k, v in h.items()
            if k in ("epoch", "step", "eval_loss", "eval_ranked_rows", "eval_invalid") or "@" in k
        }
        for h in trainer.state.log_history
        if any(k.startswith("eval_") for k in h)
    ]
    return {
        "metric_for_best_model": trainer.args.metric_for_best_model,
        "best_metric": trainer.state.best_metric,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "evaluations": evals,
    }
