"""What every recipe shares: the data and tracking arguments, the model arguments, and the training fields common to
SFT and GRPO."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import ModelConfig

from sidrec.errors import UserError
from sidrec.run.tracking import TrackingArguments


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
class SidrecModelConfig(ModelConfig):
    """TRL's ModelConfig with ``dtype`` left to the recipe unless given.

    TRL 1.16 defaults ``dtype`` to ``"float32"``, so "unset" could not be told apart from an explicit float32 and
    every checkpoint loaded in float32, evaluation on CUDA included. Here it defaults to ``"auto"``: training follows
    the recipe's ``bf16``, evaluation takes bfloat16 on CUDA and float32 elsewhere (`sidrec.models.loading.default_dtype`).
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
