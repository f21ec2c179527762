"""The offline models: a byte-level BPE tokenizer trained on the catalog's own text, a tiny random-init Qwen2, and
random models shaped like published Qwen2.5 checkpoints (for speed and memory runs; no Hub)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from sidrec.errors import UserError
from sidrec.models.sid_tokens import add_sid_tokens
from sidrec.sid import SidVocab

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def build_local_tokenizer(texts: Iterable[str], vocab_size: int, sid_vocab: SidVocab) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` (no download) and add the SID tokens.

    Byte-level BPE never needs an unknown token, so any title or prompt text encodes.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)
    add_sid_tokens(tokenizer, sid_vocab)
    return tokenizer


def tokenizer_corpus(catalog, examples, max_description_words: int = 32, prompts_per_task: int = 200) -> list[str]:
    """Text to train the local tokenizer on: item titles and descriptions, plus rendered prompts of every task."""
    from sidrec.data.prompts import clean_description

    texts = [item.title for item in catalog.items.values()]
    texts += [clean_description(item.description, max_description_words) for item in catalog.items.values()]
    seen: dict[str, int] = {}
    for ex in examples:
        if seen.get(ex.task, 0) < prompts_per_task:
            seen[ex.task] = seen.get(ex.task, 0) + 1
            texts.append(ex.prompt() + ex.completion)
    return texts


def build_tiny_model(
    tokenizer,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 512,
    max_position_embeddings: int = 1024,
    attention_dropout: float = 0.0,
    seed: int = 0,
    tie_word_embeddings: bool = True,
) -> Qwen2ForCausalLM:
    """A random-init Qwen2-architecture causal LM sized for CPU runs (tied input/output embeddings by default)."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        attention_dropout=attention_dropout,
        tie_word_embeddings=tie_word_embeddings,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


# Published config values of Qwen2.5 models, to build same-shaped random models for speed and memory runs (no Hub).
QWEN25_SHAPES = {
    "qwen2.5-0.5b": {
        "hidden_size": 896,
        "num_layers": 24,
        "num_heads": 14,
        "num_kv_heads": 2,
        "intermediate_size": 4864,
    },
    "qwen2.5-1.5b": {
        "hidden_size": 1536,
        "num_layers": 28,
        "num_heads": 12,
        "num_kv_heads": 2,
        "intermediate_size": 8960,
    },
}
QWEN25_VOCAB_SIZE = 151936


def build_shaped_model(tokenizer, shape: str, seed: int = 0) -> Qwen2ForCausalLM:
    """A random-init model shaped like a published Qwen2.5 checkpoint, its embedding padded to Qwen's vocabulary."""
    if shape not in QWEN25_SHAPES:
        raise UserError(f"unknown model shape {shape!r}; known: {', '.join(QWEN25_SHAPES)}")
    model = build_tiny_model(tokenizer, max_position_embeddings=32768, seed=seed, **QWEN25_SHAPES[shape])
    model.resize_token_embeddings(max(QWEN25_VOCAB_SIZE, len(tokenizer)), mean_resizing=False)
    return model
