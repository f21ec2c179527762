"""SID tokens in a language model: added to the tokenizer as regular tokens, the embeddings resized, checked on
reload, and (``freeze_llm``) the only rows that train."""

from __future__ import annotations

import logging

import torch
from transformers import AutoModelForCausalLM

from sidrec.errors import UserError
from sidrec.sid import SidVocab

logger = logging.getLogger(__name__)

# Embedding rows are padded to a multiple of this after adding SID tokens (tensor-core friendly, as Qwen pads its own
# 151,665 tokens to 151,936 rows).
EMBEDDING_PAD_MULTIPLE = 64
ADAPTER_CONFIG = "adapter_config.json"


def add_sid_tokens(tokenizer, sid_vocab: SidVocab) -> list[int]:
    """Add the catalog's SID level tokens as regular (not special) tokens; returns the ids of the new ones."""
    tokens = sid_vocab.level_tokens()
    vocab = tokenizer.get_vocab()
    new = [t for t in tokens if t not in vocab]
    tokenizer.add_tokens(new)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer.convert_tokens_to_ids(new)


def check_sid_tokens(tokenizer, sid_vocab: SidVocab, where: str) -> None:
    """Fail clearly when a checkpoint's tokenizer lacks this catalog's SID tokens (each must be one token)."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in sid_vocab.level_tokens() if t not in vocab]
    if missing:
        raise UserError(
            f"{where}: the tokenizer lacks {len(missing)} of the catalog's SID tokens (first: {missing[:3]}); "
            "was this checkpoint trained on this catalog by recipes/sft.py?"
        )


def load_pretrained_with_sids(path: str, tokenizer, sid_vocab: SidVocab, **model_kwargs):
    """Load a pretrained causal LM, add the SID tokens to its tokenizer and resize the embeddings.

    New rows are mean-initialised; the row count is padded to a multiple of `EMBEDDING_PAD_MULTIPLE`.
    """
    model = AutoModelForCausalLM.from_pretrained(path, **model_kwargs)
    new_ids = add_sid_tokens(tokenizer, sid_vocab)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=EMBEDDING_PAD_MULTIPLE)
    logger.info(
        "added %d SID tokens to %s (tokenizer %d, embedding rows %d)",
        len(new_ids),
        path,
        len(tokenizer),
        model.get_input_embeddings().weight.shape[0],
    )
    return model, new_ids


def freeze_all_but_new_tokens(model, new_token_ids: list[int]) -> None:
    """Train only the new (SID) token embeddings: freeze every other parameter and zero the old rows' gradients."""
    if not new_token_ids:
        raise UserError("freeze_llm needs new SID tokens to train, but the tokenizer already had all of them")
    for p in model.parameters():
        p.requires_grad_(False)
    keep = torch.zeros(model.get_input_embeddings().weight.shape[0], 1, dtype=torch.bool)
    keep[new_token_ids] = True
    weights = {id(model.get_input_embeddings().weight): model.get_input_embeddings().weight}
    out = model.get_output_embeddings()
    if out is not None:
        weights[id(out.weight)] = out.weight
    for w in weights.values():
        w.requires_grad_(True)
        mask = keep.to(w.device)
        w.register_hook(lambda grad, mask=mask: grad * mask.to(grad.dtype))
