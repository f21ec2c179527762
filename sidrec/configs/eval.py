"""`EvalConfig`: the evaluation recipe's config."""

from __future__ import annotations

from dataclasses import dataclass, field

from sidrec.backends import BACKENDS
from sidrec.decoding import DECODERS
from sidrec.errors import UserError
from sidrec.metrics import DEFAULT_KS


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
        if self.backend not in BACKENDS:
            raise UserError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.num_beams < 1 or self.batch_size < 1:
            raise UserError("num_beams and batch_size must be positive")
        if self.max_samples is not None and self.max_samples < 1:
            raise UserError(f"max_samples must be positive, got {self.max_samples}")

    def check_catalog(self, catalog) -> None:
        """A ranked list cannot be longer than the catalog has distinct SIDs."""
        if self.num_beams > len(catalog.vocab):
            raise UserError(
                f"num_beams={self.num_beams} is larger than the catalog's {len(catalog.vocab)} distinct "
                "SIDs; a ranked list cannot be that long"
            )
