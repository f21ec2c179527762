"""`SidrecSFTConfig`: the SFT recipe's config."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from sidrec.configs.common import SidrecTrainingMixin
from sidrec.data.minionerec import check_history_items
from sidrec.data.prompts import PROMPT_STYLES, check_prompt_style
from sidrec.data.tasks import TASKS, check_task_names
from sidrec.errors import UserError
from sidrec.models.sid_init import SID_EMBEDDING_INITS


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
    rl_holdout: bool = field(
        default=False,
        metadata={
            "help": "Hold each user's latest train row out of every SFT task and leave it to GRPO (rl_rows: holdout): "
            "prompts the SFT model has not fitted. Recorded in the checkpoint; needs the whole train split "
            "(max_train_rows unset)."
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
