"""`SidrecGRPOConfig`: the GRPO recipe's config, and the rollout layout it must fit."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from trl import GRPOConfig

from sidrec.configs.common import SidrecTrainingMixin
from sidrec.data.tasks import RL_TASKS, check_task_names, rl_task_names
from sidrec.errors import UserError
from sidrec.rewards import MODEL_REWARDS, NEEDS_BEAM_RANK, PRESETS, REWARDS, expand_reward_names

RL_ROWS = ("train", "holdout")


@dataclass
class SidrecGRPOConfig(SidrecTrainingMixin, GRPOConfig):
    """`trl.GRPOConfig` plus the RL prompt mix, the rewards by name and the rollout mode."""

    rl_tasks: list[str] = field(
        default_factory=lambda: ["sid_seq"],
        metadata={"help": f"RL prompt tasks (completions must be SIDs): any of {list(RL_TASKS)}."},
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["ranking"],
        metadata={
            "help": f"Rewards by name, any of {sorted([*REWARDS, *MODEL_REWARDS])}, or a preset {sorted(PRESETS)} "
            "(ranking = rule + ndcg_rule). cf needs cf_model."
        },
    )
    beam_search: bool = field(
        default=True,
        metadata={"help": "Rollouts are the top-G constrained beams (True) or G constrained samples (False)."},
    )
    guide_target: bool = field(
        default=False,
        metadata={
            "help": "With beam_search: when a prompt's G beams miss its target, the target takes the lowest beam's "
            "place (off-policy guidance, as in LUFFY), so every group has a reward signal: the target pushed up, the "
            "model's wrong top beams down. Off: MiniOneRec's pure on-policy beams."
        },
    )
    rollout_batch_size: int = field(default=8, metadata={"help": "Unique prompts per generate call in rollouts."})
    vllm_importance_sampling_correction: bool = field(
        default=False,
        metadata={
            "help": "TRL's correction for the vLLM/trainer mismatch. Off, and refused with use_vllm: vLLM's sampling "
            "log-probs are of the SID-masked distribution, the trainer's of the full vocabulary, so their ratio is "
            "the masked-out mass, not a mismatch (docs/VLLM.md)."
        },
    )
    cf_model: str | None = field(
        default=None,
        metadata={
            "help": "For the cf reward: a sequential recommender saved by sidrec-baselines (<run>/baselines/sasrec.pt "
            "or gru4rec.pt), trained on the same catalog; the reward is its probability of the rollout's item."
        },
    )
    rl_rows: str = field(
        default="train",
        metadata={
            "help": "Which rows prompt GRPO: train (the train split, cut by max_train_rows) or holdout (each user's "
            "latest train row, which an SFT checkpoint trained with rl_holdout: true never saw; max_train_rows unset)."
        },
    )
    ranking_eval_train_rows: int = field(
        default=0,
        metadata={
            "help": "Also rank this many of GRPO's own prompt rows (drawn with ranking_eval_seed) at each evaluation, "
            "logged as eval_train_hr@K / eval_train_ndcg@K beside valid's: how the target's rank moves on the "
            "prompts GRPO trains on. 0: none. Never used to choose the checkpoint."
        },
    )
    max_prompt_tokens: int = field(
        default=512, metadata={"help": "Prompt token budget; the oldest history items are dropped to fit."}
    )

    def __post_init__(self):
        check_task_names(self.rl_tasks, rl_task_names(), "rl_tasks")  # GRPO prompts must have SID answers
        rewards = expand_reward_names(self.reward_funcs)  # unknown names fail at launch
        if "cf" in rewards and not (self.cf_model and os.path.isfile(self.cf_model)):
            raise UserError(
                f"reward cf scores rollouts with a trained recommender: cf_model {self.cf_model!r} is not a file "
                "(run sidrec-baselines and pass <run>/baselines/sasrec.pt)"
            )
        if self.cf_model and "cf" not in rewards:
            raise UserError(f"cf_model is set but reward_funcs {self.reward_funcs} has no cf")
        if not self.beam_search and NEEDS_BEAM_RANK.intersection(rewards):
            raise UserError(
                f"reward(s) {sorted(NEEDS_BEAM_RANK.intersection(rewards))} rank completions by beam score; sampled "
                "rollouts (beam_search: false) have no rank: use beam_search: true or reward_funcs: [rule]"
            )
        if self.guide_target and not self.beam_search:
            raise UserError("guide_target: true puts the target among the beams: it needs beam_search: true")
        if self.rl_rows not in RL_ROWS:
            raise UserError(f"rl_rows must be one of {', '.join(RL_ROWS)}, got {self.rl_rows!r}")
        if self.ranking_eval_train_rows < 0:
            raise UserError(f"ranking_eval_train_rows must be >= 0, got {self.ranking_eval_train_rows}")
        if self.rollout_batch_size < 1:
            raise UserError("rollout_batch_size must be positive")
        if self.use_vllm and self.beam_search:
            raise UserError(
                "use_vllm: true samples rollouts on vLLM; set beam_search: false (beam-search rollouts run on the "
                "trainer's model, the default)"
            )
        if self.use_vllm and self.vllm_importance_sampling_correction:
            raise UserError(
                "vllm_importance_sampling_correction: true cannot be used with SID-constrained vLLM rollouts: vLLM's "
                "log-probs are of the masked distribution, the trainer's of the full vocabulary (docs/VLLM.md)"
            )
        self._check_sidrec_fields()
        self._setup_model_selection(ranking_required=True)
        if self.evaluates:
            # Evaluation ranks next items and runs no eval rollouts: GRPOConfig's eval-group check must not apply.
            self.num_generations_eval = 1
        super().__post_init__()

    def check_rollout_layout(self, catalog) -> None:
        """Before any model work: a rollout is one SID plus EOS, and the GRPO groups fit (`check_group_layout`)."""
        if self.max_completion_length != catalog.sid_length + 1:
            raise UserError(
                f"max_completion_length must be the SID length + EOS = {catalog.sid_length + 1}, "
                f"got {self.max_completion_length}"
            )
        self.check_group_layout(len(catalog.vocab))

    def check_group_layout(self, num_sids: int) -> None:
        """GRPO groups must fit the catalog and each process's batch (so a group never spans two processes)."""
        group = self.num_generations
        if group > num_sids:
            raise UserError(f"num_generations={group} is larger than the catalog's {num_sids} distinct SIDs")
        per_process = self.per_device_train_batch_size * self.steps_per_generation
        if per_process % group:
            raise UserError(
                f"num_generations={group} must divide the per-process generation batch "
                f"(per_device_train_batch_size x steps_per_generation = {per_process})"
            )
