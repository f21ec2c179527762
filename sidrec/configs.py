"""Configuration dataclasses for the recipes: YAML gives defaults, CLI flags override (via TrlParser)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig, ModelConfig, SFTConfig

from sidrec.data.minionerec import check_history_items
from sidrec.data.prompts import PROMPT_STYLES, RL_TASKS, TASKS, check_prompt_style, check_task_names
from sidrec.decoding import DECODERS
from sidrec.metrics import DEFAULT_KS
from sidrec.modeling import SID_EMBEDDING_INITS
from sidrec.rewards import PRESETS, REWARDS
from sidrec.tracking import TrackingArguments
from sidrec.utils import UserError


@dataclass
class SidrecScriptArguments(TrackingArguments):
    """Where the data is, and experiment tracking; shared by every recipe."""

    data_dir: str = field(
        default="data/synthetic",
        metadata={"help": "Folder in MiniOneRec's layout (train/ valid/ test/ info/ index/)."},
    )
    category: str = field(
        default="Synthetic",
        metadata={"help": "File-name prefix of the category, e.g. Industrial_and_Scientific."},
    )
    max_train_rows: int | None = field(
        default=None, metadata={"help": "Read at most this many rows of the train CSV (quick runs)."}
    )
    max_valid_rows: int | None = field(
        default=None, metadata={"help": "Read at most this many rows of the valid CSV (eval loss during training)."}
    )
    max_description_words: int = field(
        default=32, metadata={"help": "Item descriptions in alignment prompts are cut to this many words."}
    )

    def __post_init__(self):
        super().__post_init__()
        for name in ("max_train_rows", "max_valid_rows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"{name} must be a positive number of rows, got {value}")


@dataclass
class SidrecTrainingMixin:
    """Fields shared by the SFT and GRPO configs."""

    freeze_llm: bool = field(
        default=False,
        metadata={
            "help": "Train only the new SID token embeddings; the rest of the LM stays frozen (needs weight_decay 0)."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Allow writing into a non-empty output_dir (an earlier run's files are replaced)."},
    )

    ranking_eval_rows: int | None = field(
        default=1000,
        metadata={
            "help": "Valid rows ranked at each evaluation by the constrained beam search of recipes/evaluate.py "
            "(eval_hr@K, eval_ndcg@K for K = 1, 5, 10); a fixed subset drawn with ranking_eval_seed, null for the "
            "whole split, 0 for none (SFT then selects on eval_loss)."
        },
    )
    ranking_eval_beams: int = field(
        default=50, metadata={"help": "Beams of the ranking eval (>= 10); 50 gives the same lists as evaluation."}
    )
    ranking_eval_seed: int = field(
        default=42,
        metadata={
            "help": "Seed that draws the ranking eval's rows (recipes/evaluate.py --max_samples N --sample_seed S "
            "ranks the same ones)."
        },
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "Stop after this many evaluations without a better metric_for_best_model (eval_ndcg@10 with a "
            "ranking eval, else eval_loss); null disables. With any evaluation the best checkpoint is loaded at the end."
        },
    )
    global_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Expected per_device_train_batch_size x gradient_accumulation_steps x processes; the launch fails "
            "when they disagree, naming the gradient_accumulation_steps that would fit when one does (reference "
            "recipes pin 1024)."
        },
    )

    def check_global_batch(self, num_processes: int) -> None:
        """Fail before any work when this launch's process count does not give the recipe's global batch."""
        if self.global_batch_size is None:
            return
        micro, accum = self.per_device_train_batch_size, self.gradient_accumulation_steps
        if micro * accum * num_processes == self.global_batch_size:
            return
        hint = ""
        if self.global_batch_size % (micro * num_processes) == 0:
            hint = f"; for {num_processes} processes use gradient_accumulation_steps {self.global_batch_size // (micro * num_processes)}"
        raise UserError(
            f"global batch {micro} (per_device_train_batch_size) x {accum} (gradient_accumulation_steps) x "
            f"{num_processes} (processes) = {micro * accum * num_processes}, but the recipe's global_batch_size is "
            f"{self.global_batch_size}{hint}"
        )

    @property
    def evaluates(self) -> bool:
        """Whether the Trainer evaluates at all (``eval_strategy`` other than ``no``)."""
        return str(self.eval_strategy) not in ("no", "IntervalStrategy.NO")

    def _setup_model_selection(self, ranking_required: bool) -> None:
        """Checkpoints are chosen (and training stopped) on eval_ndcg@10 when there is a ranking eval."""
        evaluating = self.evaluates
        if self.ranking_eval_rows is not None and self.ranking_eval_rows < 0:
            raise UserError(f"ranking_eval_rows must be >= 0 or null, got {self.ranking_eval_rows}")
        if self.ranking_eval_beams < 10:
            raise UserError(f"ranking_eval_beams must be >= 10 (NDCG@10 is reported), got {self.ranking_eval_beams}")
        if self.early_stopping_patience is not None:
            if self.early_stopping_patience < 1:
                raise UserError(f"early_stopping_patience must be >= 1 or null, got {self.early_stopping_patience}")
            if not evaluating:
                raise UserError("early_stopping_patience needs evaluation: set eval_strategy to 'epoch' or 'steps'")
        if not evaluating:
            return
        ranking = self.ranking_eval_rows != 0
        if ranking_required and not ranking:
            raise UserError("GRPO evaluates by next-item ranking: set ranking_eval_rows (or eval_strategy: no)")
        if self.metric_for_best_model is None:
            self.metric_for_best_model = "eval_ndcg@10" if ranking else "eval_loss"
        elif ranking_required and not self.metric_for_best_model.removeprefix("eval_").startswith(("hr@", "ndcg@")):
            raise UserError("metric_for_best_model must be a ranking metric (eval_ndcg@10, eval_hr@5, ...)")
        self.load_best_model_at_end = True  # the best checkpoint by that metric is the saved model
        self.save_strategy = self.eval_strategy
        if str(self.eval_strategy).endswith("steps"):
            self.save_steps = self.eval_steps

    def _check_sidrec_fields(self) -> None:
        if self.freeze_llm and self.weight_decay:
            raise UserError(
                "freeze_llm keeps the old vocabulary fixed; weight_decay would still move it: set weight_decay: 0"
            )


@dataclass
class SidrecSFTConfig(SidrecTrainingMixin, SFTConfig):
    """`trl.SFTConfig` plus the SFT task mix, early stopping and the tiny from-scratch model's shape."""

    sft_tasks: list[str] = field(
        default_factory=lambda: ["sid_seq", "item_alignment"],
        metadata={
            "help": f"Training tasks, any of {list(TASKS)}; a task listed n times contributes its examples n times "
            "(a mixture weight). Eval loss is measured on sid_seq over valid."
        },
    )
    prompt_style: str = field(
        default="minionerec",
        metadata={
            "help": f"Prompt layout, one of {list(PROMPT_STYLES)}: MiniOneRec's instructions (for pretrained LMs) or "
            "a short task tag plus the input (for from-scratch models). Saved in the checkpoint's config; GRPO and "
            "eval use the checkpoint's style."
        },
    )
    history_items: int | None = field(
        default=None,
        metadata={
            "help": "Show only each user's n most recent history items, in every split's prompts; null shows the "
            "whole history (MiniOneRec keeps up to 10). Saved in the checkpoint's config; GRPO and eval cut the "
            "histories the same way."
        },
    )
    early_stopping_patience: int | None = field(
        default=3,
        metadata={
            "help": "Stop after this many evaluations without a better metric_for_best_model (eval_ndcg@10 with a "
            "ranking eval, else eval_loss); null disables. With any evaluation the best checkpoint is loaded at the end."
        },
    )
    sid_embedding_init: str = field(
        default="default",
        metadata={
            "help": "How new SID token embeddings start: default (random from scratch, the vocabulary mean for a "
            "pretrained LM) or text (each code at the mean residual text vector of its items: the packaged MiniLM "
            "encoder + PCA from scratch, the title-token embeddings of a pretrained LM)."
        },
    )
    from_scratch: bool = field(
        default=False,
        metadata={
            "help": "Build a tiny random-init Qwen2 and a tokenizer from the catalog text instead of loading model_name_or_path."
        },
    )
    tiny_hidden_size: int = field(default=128, metadata={"help": "from_scratch: hidden size."})
    tiny_num_layers: int = field(default=2, metadata={"help": "from_scratch: decoder layers."})
    tiny_num_heads: int = field(default=4, metadata={"help": "from_scratch: attention heads."})
    tiny_num_kv_heads: int = field(default=2, metadata={"help": "from_scratch: key/value heads."})
    tiny_intermediate_size: int = field(default=512, metadata={"help": "from_scratch: MLP width."})
    tiny_attention_dropout: float = field(default=0.0, metadata={"help": "from_scratch: attention dropout."})
    tiny_dropout: float = field(
        default=0.0, metadata={"help": "from_scratch: dropout on embeddings and residual branches (GPT-2 style)."}
    )
    tiny_tie_word_embeddings: bool = field(
        default=True,
        metadata={
            "help": "from_scratch: share the input embeddings with the output layer (Qwen2.5's small models do)."
        },
    )
    tiny_tokenizer_vocab_size: int = field(
        default=2048, metadata={"help": "from_scratch: BPE vocabulary size (SID tokens come on top)."}
    )
    average_checkpoints: bool = field(
        default=False,
        metadata={
            "help": "After training, average the weights of the best checkpoint and the later ones still on disk "
            "(save_total_limit keeps the newest), rank the average on the same valid rows, and keep it instead of the "
            "best checkpoint only when its ranking metric is higher. Needs the ranking eval; full models only."
        },
    )

    def __post_init__(self):
        check_task_names(self.sft_tasks, TASKS, "sft_tasks")
        check_prompt_style(self.prompt_style)
        check_history_items(self.history_items)
        if self.sid_embedding_init not in SID_EMBEDDING_INITS:
            raise UserError(
                f"sid_embedding_init must be one of {list(SID_EMBEDDING_INITS)}, got {self.sid_embedding_init!r}"
            )
        self._check_sidrec_fields()
        self._setup_model_selection(ranking_required=False)
        if self.average_checkpoints and not (
            self.evaluates and self.ranking_eval_rows != 0 and "@" in str(self.metric_for_best_model)
        ):
            raise UserError(
                "average_checkpoints is judged by the valid ranking: set eval_strategy, ranking_eval_rows and a "
                "ranking metric_for_best_model"
            )
        super().__post_init__()


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
            "help": f"Rewards by name, any of {sorted(REWARDS)}, or a preset {sorted(PRESETS)} (ranking = rule + ndcg_rule)."
        },
    )
    beam_search: bool = field(
        default=True,
        metadata={"help": "Rollouts are the top-G constrained beams (True) or G constrained samples (False)."},
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
    max_prompt_tokens: int = field(
        default=512, metadata={"help": "Prompt token budget; the oldest history items are dropped to fit."}
    )

    def __post_init__(self):
        from sidrec.rewards import NEEDS_BEAM_RANK, get_reward_funcs

        check_task_names(self.rl_tasks, RL_TASKS, "rl_tasks")  # GRPO prompts must have SID answers
        rewards = [f.__name__ for f in get_reward_funcs(self.reward_funcs)]  # unknown names fail at launch
        if not self.beam_search and NEEDS_BEAM_RANK.intersection(rewards):
            raise UserError(
                f"reward(s) {sorted(NEEDS_BEAM_RANK.intersection(rewards))} rank completions by beam score; sampled "
                "rollouts (beam_search: false) have no rank: use beam_search: true or reward_funcs: [rule]"
            )
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


@dataclass
class SidrecModelConfig(ModelConfig):
    """TRL's ModelConfig with ``dtype`` left to the recipe unless given.

    TRL 1.16 defaults ``dtype`` to ``"float32"``, so "unset" could not be told apart from an explicit float32 and
    every checkpoint loaded in float32, evaluation on CUDA included. Here it defaults to ``"auto"``: training follows
    the recipe's ``bf16``, evaluation takes bfloat16 on CUDA and float32 elsewhere (`sidrec.modeling.default_dtype`).
    """

    dtype: str | None = field(
        default="auto",
        metadata={
            "help": "Load the model in this dtype; auto (default) follows bf16 in training, and in evaluation takes "
            "bfloat16 on CUDA and float32 elsewhere.",
            "choices": ["auto", "bfloat16", "float16", "float32"],
        },
    )


@dataclass
class EvalConfig:
    """Constrained beam-search evaluation."""

    output_dir: str = field(default="outputs/eval", metadata={"help": "Where metrics.json and predictions.jsonl go."})
    split: str = field(default="test", metadata={"help": "Which CSV split to rank: test or valid."})
    num_beams: int = field(
        default=50, metadata={"help": "Beams of the constrained beam search (= length of each ranked list)."}
    )
    batch_size: int = field(default=32, metadata={"help": "Prompts per decoding batch (grouped by length)."})
    decoder: str = field(
        default="auto",
        metadata={
            "help": "tree (one prefill per prompt, beams share its KV cache), generate (HF beam search + the "
            "constraint processor, for comparison) or auto (tree unless the attention cannot take a tree mask)."
        },
    )
    backend: str = field(
        default="hf",
        metadata={
            "help": "hf (the checkpoint in transformers, `decoder` picks the search) or vllm (the same constrained "
            "beam search driven over a vLLM engine: same lists and scores; needs `make install-vllm`, one process)."
        },
    )
    vllm_enforce_eager: bool = field(
        default=False,
        metadata={"help": "backend vllm: skip vLLM's graph compilation (faster start, slower steps)."},
    )
    max_samples: int | None = field(
        default=None,
        metadata={
            "help": "Evaluate only N rows of the split: the first N, or N drawn with sample_seed when it is set."
        },
    )
    sample_seed: int | None = field(
        default=None,
        metadata={
            "help": "With max_samples, draw the rows at random with this seed (the rows a training run's ranking "
            "eval ranks with ranking_eval_seed) instead of taking the first N."
        },
    )
    max_length: int = field(
        default=512, metadata={"help": "Prompt token budget; the oldest history items are dropped to fit."}
    )
    topk: list[int] = field(
        default_factory=lambda: list(DEFAULT_KS), metadata={"help": "K values for HR@K / NDCG@K (those <= num_beams)."}
    )
    shard_size: int = field(
        default=512,
        metadata={
            "help": "Rows per shard. Shards are split across processes and written as they finish, so an "
            "interrupted eval resumes at the first unfinished one (--resume true)."
        },
    )
    resume: bool = field(
        default=False, metadata={"help": "Continue an interrupted eval in output_dir, keeping its finished shards."}
    )
    seed: int = field(default=42, metadata={"help": "Random seed."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow model and tokenizer code from the checkpoint's repository to run."}
    )
    use_cpu: bool = field(
        default=False,
        metadata={
            "help": "Run on the CPU even under a GPU launch config (as the Trainer's use_cpu): how a DeepSpeed "
            "launch such as accelerate_configs/zero2.yaml evaluates on a machine without CUDA."
        },
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Allow writing into a non-empty output_dir."})

    def __post_init__(self):
        if self.shard_size < 1:
            raise UserError(f"shard_size must be positive, got {self.shard_size}")
        if self.split not in ("test", "valid", "train"):
            raise UserError(f"split must be test, valid or train, got {self.split!r}")
        if self.decoder not in DECODERS:
            raise UserError(f"decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}")
        if self.backend not in ("hf", "vllm"):
            raise UserError(f"backend must be hf or vllm, got {self.backend!r}")
        if self.num_beams < 1 or self.batch_size < 1:
            raise UserError("num_beams and batch_size must be positive")
        if self.max_samples is not None and self.max_samples < 1:
            raise UserError(f"max_samples must be positive, got {self.max_samples}")
