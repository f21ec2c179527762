"""The one loader: tokenizers and models for every recipe (from scratch, pretrained with SID tokens added, trained
checkpoints full or PEFT), dtype and attention in one place, and `load_trained`, the entry GRPO and evaluation share.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Sequence

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from sidrec.data.minionerec import last_history
from sidrec.errors import UserError
from sidrec.models.dropout import add_residual_dropout
from sidrec.models.metadata import CheckpointMetadata
from sidrec.models.sid_init import init_sid_embeddings_from_text
from sidrec.models.sid_tokens import check_sid_tokens, freeze_all_but_new_tokens, load_pretrained_with_sids
from sidrec.models.tiny import build_local_tokenizer, build_tiny_model, tokenizer_corpus

logger = logging.getLogger(__name__)

# Tokenizer classes written by `save_pretrained` for tokenizers built with the `tokenizers` library.
_LOCAL_TOKENIZER_CLASSES = {"PreTrainedTokenizerFast", "TokenizersBackend"}
ADAPTER_CONFIG = "adapter_config.json"
# A Hub repo id: "name" or "namespace/name" of letters, digits, "-", "_" and "." (no "--" or ".." inside).
_HUB_ID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*")


def check_model_path(path: str | None) -> None:
    """Fail in one line, before anything loads, when ``path`` is neither an existing folder nor a plausible Hub id.

    A path that names a local place (absolute, ``./``, ``~``, more than one ``/``, or one whose first part is an
    existing folder, like ``outputs/sft`` when ``outputs/`` exists) must exist; otherwise it is taken as a Hub id.

    Example:
        >>> check_model_path("Qwen/Qwen2.5-1.5B-Instruct")
        >>> check_model_path("outputs/demo/no-such-run/sft")
        Traceback (most recent call last):
        ...
        sidrec.errors.UserError: model_name_or_path 'outputs/demo/no-such-run/sft': no such folder, and not a Hub id (name or namespace/name)
    """
    if not path or os.path.isdir(path):
        return
    local = (
        path.startswith(("/", ".", "~"))
        or path.count("/") > 1
        or "--" in path
        or ".." in path
        or not _HUB_ID.fullmatch(path)
        or ("/" in path and os.path.isdir(path.split("/", 1)[0]))
    )
    if local:
        raise UserError(f"model_name_or_path {path!r}: no such folder, and not a Hub id (name or namespace/name)")


def load_tokenizer(path: str, revision: str | None = None, trust_remote_code: bool = False):
    """Load a saved tokenizer; ones we built locally load as `PreTrainedTokenizerFast` (AutoTokenizer mis-reads them)."""
    config_path = os.path.join(path, "tokenizer_config.json")
    if os.path.isfile(config_path):
        with open(config_path) as f:
            if json.load(f).get("tokenizer_class") in _LOCAL_TOKENIZER_CLASSES:
                return PreTrainedTokenizerFast.from_pretrained(path)
    return AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)


def _revision(value: str | None) -> str | None:
    """A revision worth passing on: None for unset and for ``main`` (TRL's default, the Hub's default branch)."""
    return value if value and value != "main" else None


def get_tokenizer(model_args, trust_remote_code: bool = False):
    """The tokenizer of ``model_args.model_name_or_path`` (a Hub id, a local checkpoint or a PEFT adapter folder)."""
    revision = _revision(model_args.model_revision)
    return load_tokenizer(model_args.model_name_or_path, revision=revision, trust_remote_code=trust_remote_code)


def is_adapter_dir(path: str) -> bool:
    """True for a folder holding a PEFT adapter (what SFT with ``use_peft`` saves), not a full model."""
    return os.path.isfile(os.path.join(path, ADAPTER_CONFIG))


def default_dtype(bf16: bool | None, device: torch.device | str = "cpu") -> torch.dtype:
    """The one precision rule: training follows the recipe's ``bf16``; evaluation (``bf16=None``) takes bfloat16 on
    CUDA and float32 elsewhere. ModelConfig's ``dtype``, when set, overrides it in `model_kwargs`.

    Example:
        >>> default_dtype(True), default_dtype(False, "cuda"), default_dtype(None, "cuda"), default_dtype(None, "cpu")
        (torch.bfloat16, torch.float32, torch.bfloat16, torch.float32)
    """
    if bf16 is None:
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return torch.bfloat16 if bf16 else torch.float32


def model_kwargs(model_args, fallback_dtype: torch.dtype, trust_remote_code: bool = False) -> dict:
    """``from_pretrained`` keyword arguments from TRL's ModelConfig: dtype, attention, revision, remote code.

    ``dtype`` unset or ``auto`` takes ``fallback_dtype``, which recipes get from `default_dtype`.
    """
    dtype = fallback_dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if _revision(model_args.model_revision):
        kwargs["revision"] = model_args.model_revision
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    from trl import get_quantization_config

    quantization = get_quantization_config(model_args)  # load_in_4bit / load_in_8bit (bitsandbytes, CUDA)
    if quantization is not None:
        from accelerate import PartialState

        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": PartialState().local_process_index}
    return kwargs


def get_model(model_args, fallback_dtype: torch.dtype, trust_remote_code: bool = False):
    """The one loader for trained checkpoints (GRPO's start, evaluation): a full model, or a PEFT adapter folder.

    An adapter folder (SFT with ``use_peft``) is loaded as its base model (``base_model_name_or_path`` and
    ``revision`` in ``adapter_config.json``), resized to the SID vocabulary recorded in the folder's ``config.json``,
    with the adapter and its trained embedding rows applied and merged, so GRPO and eval see one plain model. The
    prompt style recorded at SFT travels with it.
    """
    path = model_args.model_name_or_path
    kwargs = model_kwargs(model_args, fallback_dtype, trust_remote_code)
    if not is_adapter_dir(path):
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    from peft import PeftConfig, PeftModel

    adapter = PeftConfig.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    kwargs.pop("revision", None)  # the adapter folder's revision; the base's is the one it was trained from
    if _revision(adapter.revision):
        kwargs["revision"] = adapter.revision
    base = AutoModelForCausalLM.from_pretrained(adapter.base_model_name_or_path, **kwargs)
    rows = config.get_text_config().vocab_size
    if base.get_input_embeddings().weight.shape[0] != rows:
        base.resize_token_embeddings(rows, mean_resizing=False)
    model = PeftModel.from_pretrained(base, path).merge_and_unload()
    if config.get_text_config().tie_word_embeddings:
        model.tie_weights()
    CheckpointMetadata.from_config(config).save_to(model)  # the base's config lacks what SFT recorded
    logger.info("loaded %s with the adapter in %s (merged)", adapter.base_model_name_or_path, path)
    return model


def save_adapter_config(model, output_dir: str) -> None:
    """Write the (resized, prompt-style-carrying) base config beside a saved adapter, for `get_model`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.config.save_pretrained(output_dir)


def lora_config_for_sids(model_args, model):
    """TRL's LoRA config from ModelConfig, with the embedding matrices trained in full so the new SID rows learn.

    peft's ``trainable_token_indices`` would be lighter, but TRL's fused LM-head loss multiplies by
    ``lm_head.weight`` directly and never sees those deltas; a tied head is kept tied to the trained copy.
    """
    from trl import get_peft_config

    peft_config = get_peft_config(model_args)
    if peft_config is None:
        return None
    if _revision(model_args.model_revision):
        peft_config.revision = model_args.model_revision  # `get_model` reloads the base at this revision
    if peft_config.modules_to_save:
        return peft_config
    names = {id(m): n.rsplit(".", 1)[-1] for n, m in model.named_modules()}
    modules = [names[id(model.get_input_embeddings())]]
    if model.config.get_text_config().tie_word_embeddings:
        peft_config.ensure_weight_tying = True
    elif model.get_output_embeddings() is not None:
        modules.append(names[id(model.get_output_embeddings())])
    peft_config.modules_to_save = modules
    return peft_config


def prepare_sft_model(training_args, model_args, catalog, examples):
    """Model and tokenizer for SFT: a tiny from-scratch Qwen2 (``from_scratch``) or a pretrained LM with SID tokens.

    Returns:
        `(model, tokenizer)`.
    """
    if training_args.from_scratch:
        if model_args.model_name_or_path:
            raise UserError(
                "from_scratch builds a new model: leave model_name_or_path unset (or set from_scratch: false)"
            )
        tokenizer = build_local_tokenizer(
            tokenizer_corpus(catalog, examples), training_args.tiny_tokenizer_vocab_size, catalog.vocab
        )
        model = build_tiny_model(
            tokenizer,
            hidden_size=training_args.tiny_hidden_size,
            num_layers=training_args.tiny_num_layers,
            num_heads=training_args.tiny_num_heads,
            num_kv_heads=training_args.tiny_num_kv_heads,
            intermediate_size=training_args.tiny_intermediate_size,
            max_position_embeddings=max(training_args.max_length or 1024, 64),
            attention_dropout=training_args.tiny_attention_dropout,
            seed=training_args.seed,
            tie_word_embeddings=training_args.tiny_tie_word_embeddings,
        )
        add_residual_dropout(model, training_args.tiny_dropout)
        new_ids = tokenizer.convert_tokens_to_ids(catalog.vocab.level_tokens())
    else:
        if not model_args.model_name_or_path:
            raise UserError("set model_name_or_path (a Hub id or local path), or from_scratch: true for a tiny model")
        tokenizer = get_tokenizer(model_args, training_args.trust_remote_code)
        kwargs = model_kwargs(model_args, default_dtype(training_args.bf16), training_args.trust_remote_code)
        model, new_ids = load_pretrained_with_sids(model_args.model_name_or_path, tokenizer, catalog.vocab, **kwargs)
    if training_args.sid_embedding_init == "text":
        cache = os.path.join(training_args.output_dir, "item_text_embeddings.npy")
        n = init_sid_embeddings_from_text(model, tokenizer, catalog, training_args.from_scratch, cache)
        logger.info("%d SID token embeddings initialised from the items' text", n)
    if training_args.freeze_llm:
        freeze_all_but_new_tokens(model, new_ids)
    CheckpointMetadata(training_args.prompt_style, training_args.history_items, training_args.rl_holdout).save_to(
        model
    )
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model: %s, %.2fM parameters, vocab %d", type(model).__name__, n_params / 1e6, len(tokenizer))
    return model, tokenizer


@dataclasses.dataclass
class TrainedCheckpoint:
    """A checkpoint trained by ``recipes/sft.py`` (or GRPO), checked against a catalog; see `load_trained`.

    Args:
        model_args: TRL's ModelConfig naming it (``model_name_or_path``, revision, dtype, attention).
        tokenizer: Its tokenizer, which holds every SID token of the catalog.
        metadata (`CheckpointMetadata`): Its prompt style and history window.
        trust_remote_code (`bool`): Passed on to `get_model`.
    """

    model_args: object
    tokenizer: object
    metadata: CheckpointMetadata
    trust_remote_code: bool = False

    @property
    def path(self) -> str:
        return self.model_args.model_name_or_path

    def cut_history(self, rows: Sequence) -> list:
        """``rows`` with each history cut to the window the checkpoint was trained with."""
        return last_history(rows, self.metadata.history_items)

    def load_model(self, fallback_dtype: torch.dtype):
        """The weights (a full model, or the SFT adapter merged into its base); see `get_model`."""
        return get_model(self.model_args, fallback_dtype, self.trust_remote_code)


def load_trained(model_args, catalog, trust_remote_code: bool = False) -> TrainedCheckpoint:
    """What GRPO and evaluation load first: the checkpoint's tokenizer, checked to hold ``catalog``'s SID tokens, and
    its `CheckpointMetadata`; the weights load later, on demand (`TrainedCheckpoint.load_model`)."""
    path = model_args.model_name_or_path
    if not path:
        raise UserError("set model_name_or_path to a checkpoint trained by recipes/sft.py")
    check_model_path(path)
    tokenizer = get_tokenizer(model_args, trust_remote_code)
    check_sid_tokens(tokenizer, catalog.vocab, path)
    return TrainedCheckpoint(model_args, tokenizer, CheckpointMetadata.from_checkpoint(path), trust_remote_code)
