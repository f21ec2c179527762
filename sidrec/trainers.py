"""Thin subclasses of TRL's trainers: a ranking evaluation for both, constrained rollouts for GRPO."""

from __future__ import annotations

import os

from accelerate.utils import gather_object
from safetensors.torch import load_model, save_model
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, EvalLoopOutput
from trl import GRPOTrainer, SFTTrainer
from trl.models import unwrap_model_for_generation

from sidrec.decoding import rank_items, sample_items, score_ranks
from sidrec.evaluation import RankingEval
from sidrec.models.averaging import average_checkpoints_from_best
from sidrec.sid import SidTrie

REF_MODEL_CHECKPOINT = "ref_model.safetensors"


def guide_groups(indices: list[list[int]], targets: list[int]) -> tuple[list[list[int]], list[bool]]:
    """Each group's items with its target in place of the last (lowest-ranked) one when the group lacks it, and
    whether it was put there. The replaced slot keeps its beam rank, so the target enters as the group's lowest beam.

    Example:
        >>> guide_groups([[4, 7, 9], [3, 1, 8]], [7, 5])
        ([[4, 7, 9], [3, 1, 5]], [False, True])
    """
    out, guided = [], []
    for row, target in zip(indices, targets, strict=True):
        hit = target in row
        out.append(list(row) if hit else [*row[:-1], target])
        guided.append(not hit)
    return out, guided


class RankingEvalMixin:
    """Adds ranking metrics to every evaluation: ``eval_hr@K`` and ``eval_ndcg@K`` of the constrained beam search of
    ``recipes/evaluate.py`` on fixed rows (a `RankingEval`, usually a seeded subset of the valid split).

    Each process ranks its share of the rows; the shares are gathered to every process, so all of them log, select and
    stop on the same numbers. With ``ranking_only`` the parent's own evaluation loop is skipped (GRPO: its eval would
    run rollouts and a loss that nothing uses). The hook is ``evaluation_loop``, which ``Trainer.evaluate`` calls
    before it logs the metrics and hands them to the callbacks (early stopping) and checkpoint selection.
    """

    ranking_eval: RankingEval | None = None
    extra_rankings: dict[str, RankingEval] | None = None  # also ranked, logged as eval_<name>_*, never selected on
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
        for name, ranking in (self.extra_rankings or {}).items():
            metrics = self.ranking_metrics(ranking)
            output.metrics.update({f"{metric_key_prefix}_{name}_{k}": v for k, v in metrics.items()})
        return output

    def ranking_metrics(self, ranking: RankingEval | None = None) -> dict:
        """Rank this process's share of the rows (``ranking_eval``'s unless given), gather every share, score (same
        result on every process)."""
        ranking = ranking or self.ranking_eval
        acc = self.accelerator
        with unwrap_model_for_generation(self.model_wrapped, acc) as model:
            mine = ranking.rank(model, self.processing_class, acc.process_index, acc.num_processes)
        return ranking.score(gather_object([mine]))


class SidSFTTrainer(RankingEvalMixin, SFTTrainer):
    """Only change from SFTTrainer: every evaluation also ranks next items with constrained beam search (see
    `RankingEvalMixin`), so checkpoints can be chosen and training stopped on ``eval_ndcg@10``, not the loss; and
    `average_from_best` (`sidrec.models.averaging`).

    Args:
        ranking_eval (`RankingEval`, *optional*): The rows to rank at each evaluation; None keeps SFTTrainer's eval.
    """

    def __init__(self, *args, ranking_eval: RankingEval | None = None, **kwargs):
        self.ranking_eval = ranking_eval
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


class SidGRPOTrainer(RankingEvalMixin, GRPOTrainer):
    """Only change from GRPOTrainer: rollouts come from SID-constrained decoding instead of free sampling, and
    evaluation is the next-item ranking of `RankingEvalMixin` (no eval rollouts).

    With ``guide_target=True`` (beam search only) a group whose G beams miss the prompt's target gets the target in
    place of its lowest beam (`guide_groups`): off-policy guidance in the manner of LUFFY (arXiv 2504.14945), so every
    group carries a reward signal. The hook that hands the rows' targets to the rollout is TRL's private
    ``_generate_and_score_completions`` (TRL's ``rollout_func`` sees only the prompts).

    With ``beam_search=True`` (MiniOneRec's setting) the G completions of a prompt are the top-G beams of a
    constrained beam search, best first, all distinct catalog SIDs; with ``beam_search=False`` they are G constrained
    samples at the trainer's temperature, drawn by the trainer's model or, with ``use_vllm``, by TRL's vLLM engine
    (colocate or server) through `sidrec.backends.vllm` (`SidTrieLogitsProcessor`) (TRL syncs the weights first). TRL
    repeats each prompt G times in a row; one search runs per unique prompt and its completions are returned in that
    layout. With beam search, each completion's rank among its group's beam scores reaches the reward functions as the
    ``beam_rank`` column; samples have no rank and no such column. The hook is TRL's ``rollout_func`` (TRL passes its
    extra fields to the rewards).

    Checkpoints also hold the reference model when ``sync_ref_model`` moves it (TRL reloads it from the starting
    checkpoint, which would make a resumed run differ from an uninterrupted one).

    Args:
        sid_trie (`SidTrie`): The catalog trie, compiled for the trainer's tokenizer.
        beam_search (`bool`): Beam-search rollouts (True) or constrained sampling (False).
        guide_target (`bool`): Put the target in place of the lowest beam of a group that misses it.
        rollout_batch_size (`int`): Unique prompts per generate call.
        ranking_eval (`RankingEval`, *optional*): The rows to rank at each evaluation (needs an ``eval_dataset``,
            which Trainer requires whenever ``eval_strategy`` is set; its rows are not used).
        extra_rankings (`dict[str, RankingEval]`, *optional*): More rows ranked at each evaluation, logged as
            ``eval_<name>_hr@K`` (e.g. GRPO's own prompts), never used to choose the checkpoint.
    """

    ranking_only = True

    def __init__(
        self,
        *args,
        sid_trie: SidTrie,
        beam_search: bool = True,
        guide_target: bool = False,
        rollout_batch_size: int = 8,
        ranking_eval: RankingEval | None = None,
        extra_rankings: dict[str, RankingEval] | None = None,
        **kwargs,
    ):
        if kwargs.get("rollout_func") is not None:
            raise ValueError("SidGRPOTrainer supplies its own rollout_func")
        self.ranking_eval, self.extra_rankings = ranking_eval, extra_rankings
        self.sid_trie = sid_trie
        self.beam_search = beam_search
        if guide_target and not beam_search:
            raise ValueError("guide_target needs beam-search rollouts (beam_search=True)")
        self.guide_target = guide_target
        # Only guidance looks targets up (a 10^6-item catalog would otherwise build this map for nothing).
        self._sid_index = {sid: i for i, sid in enumerate(sid_trie.sid_strings)} if guide_target else {}
        self._rollout_targets: list[str] | None = None
        self.rollout_batch_size = rollout_batch_size
        config = kwargs.get("args")
        # What made the rollouts, for run_summary.json (the engine, and that every completion was a catalog SID).
        self.rollout_stats = {"engine": "trainer model", "completions": 0, "invalid": 0}
        if guide_target:
            self.rollout_stats["guided_groups"] = 0  # groups whose lowest beam was replaced by the target
        if config is not None and config.use_vllm:
            from sidrec.backends.vllm import prepare_rollouts

            self.rollout_stats["engine"] = prepare_rollouts(config, sid_trie, beam_search)
        super().__init__(*args, rollout_func=self._sid_rollout, **kwargs)
        self.args.check_group_layout(sid_trie.num_sids)
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
            from sidrec.backends.vllm import sample_rollouts

            return sample_rollouts(self, prompts, group)
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as model:
            if self.beam_search:
                ranked = rank_items(
                    model, tokenizer, unique, self.sid_trie, group, self.rollout_batch_size, show_progress=False
                )
                indices = ranked.indices
                if any(len(row) != group for row in indices):
                    raise RuntimeError(f"beam search returned fewer than {group} distinct SIDs for some prompt")
                ranks = [r for row in ranked.scores for r in score_ranks(row)]
                if self.guide_target:
                    targets = self._targets_of(unique, group)
                    indices, guided = guide_groups(indices, targets)
                    self.rollout_stats["guided_groups"] += sum(guided)
                    self._metrics["train"]["rollouts/guided_groups"].append(sum(guided) / len(guided))
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

    def _generate_and_score_completions(self, inputs):
        self._rollout_targets = [x["target_sid"] for x in inputs] if self.guide_target else None
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self._rollout_targets = None

    def _targets_of(self, unique: list[str], group: int) -> list[int]:
        """The catalog index of each unique prompt's target (the rows TRL handed to this rollout)."""
        rows = self._rollout_targets
        if rows is None or len(rows) != len(unique) * group:
            raise RuntimeError("guide_target: the rollout's rows and targets are not in step")
        targets = rows[::group]
        missing = [t for t in targets if t not in self._sid_index]
        if missing:
            raise ValueError(f"guide_target: target SID {missing[0]!r} is not in the catalog")
        return [self._sid_index[t] for t in targets]

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
