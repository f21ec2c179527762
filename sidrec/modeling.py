"""Models and tokenizers: SID tokens added to a pretrained LM, or a tiny random-init Qwen2 with a local tokenizer.

The offline default (no Hub) builds a byte-level BPE tokenizer from the catalog's own text with the ``tokenizers``
library and a small Qwen2-architecture model from config values.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from sidrec.data.prompts import DEFAULT_PROMPT_STYLE, check_prompt_style
from sidrec.sid import SidVocab, parse_sid
from sidrec.utils import UserError

logger = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
# Tokenizer classes written by `save_pretrained` for tokenizers built with the `tokenizers` library.
_LOCAL_TOKENIZER_CLASSES = {"PreTrainedTokenizerFast", "TokenizersBackend"}


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


# Embedding rows are padded to a multiple of this after adding SID tokens (tensor-core friendly, as Qwen pads its own
# 151,665 tokens to 151,936 rows).
EMBEDDING_PAD_MULTIPLE = 64
ADAPTER_CONFIG = "adapter_config.json"


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
    for key in (PROMPT_STYLE_KEY, HISTORY_ITEMS_KEY):  # the base's config lacks what SFT recorded
        if hasattr(config, key):
            setattr(model.config, key, getattr(config, key))
    logger.info("loaded %s with the adapter in %s (merged)", adapter.base_model_name_or_path, path)
    return model


def save_adapter_config(model, output_dir: str) -> None:
    """Write the (resized, prompt-style-carrying) base config beside a saved adapter, for `get_model`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.config.save_pretrained(output_dir)


def add_sid_tokens(tokenizer, sid_vocab: SidVocab) -> list[int]:
    """Add the catalog's SID level tokens as regular (not special) tokens; returns the ids of the new ones."""
    tokens = sid_vocab.level_tokens()
    vocab = tokenizer.get_vocab()
    new = [t for t in tokens if t not in vocab]
    tokenizer.add_tokens(new)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer.convert_tokens_to_ids(new)


PROMPT_STYLE_KEY = "sidrec_prompt_style"


def set_prompt_style(model, style: str) -> None:
    """Record the SFT prompt style in the model config, so it is saved with every checkpoint trained from it."""
    setattr(model.config, PROMPT_STYLE_KEY, style)


def _style_in(config) -> str:
    style = getattr(config, PROMPT_STYLE_KEY, None) or DEFAULT_PROMPT_STYLE
    check_prompt_style(style)
    return style


def prompt_style_of(model) -> str:
    """The prompt style ``model`` was trained with (MiniOneRec's for checkpoints that do not record one)."""
    return _style_in(model.config)


def _checkpoint_config(path: str):
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the checkpoint's config.json ({e})") from e


def checkpoint_prompt_style(path: str) -> str:
    """`prompt_style_of` read from a checkpoint's config.json, before (and without) loading its weights."""
    return _style_in(_checkpoint_config(path))


HISTORY_ITEMS_KEY = "sidrec_history_items"


def set_history_items(model, n: int | None) -> None:
    """Record how many of the most recent history items SFT showed (None: all), like the prompt style."""
    setattr(model.config, HISTORY_ITEMS_KEY, n)


def history_items_of(model) -> int | None:
    """The history window ``model`` was trained with (None, the whole history, for checkpoints without one)."""
    return getattr(model.config, HISTORY_ITEMS_KEY, None)


def checkpoint_history_items(path: str) -> int | None:
    """`history_items_of` read from a checkpoint's config.json, without loading its weights."""
    return getattr(_checkpoint_config(path), HISTORY_ITEMS_KEY, None)


def check_sid_tokens(tokenizer, sid_vocab: SidVocab, where: str) -> None:
    """Fail clearly when a checkpoint's tokenizer lacks this catalog's SID tokens (each must be one token)."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in sid_vocab.level_tokens() if t not in vocab]
    if missing:
        raise UserError(
            f"{where}: the tokenizer lacks {len(missing)} of the catalog's SID tokens (first: {missing[:3]}); "
            "was this checkpoint trained on this catalog by recipes/sft.py?"
        )


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


def add_residual_dropout(model, p: float) -> None:
    """GPT-2-style dropout for a Qwen2/Llama-layout model: on the embeddings and on each residual branch's output.

    Qwen2's config only has attention dropout; a small from-scratch model over-fits a small split without this.
    Implemented with forward hooks on the existing modules, so checkpoints stay plain Qwen2 (dropout is a no-op in
    eval mode).
    """
    if p <= 0:
        return

    def hook(module, args, output):
        return torch.nn.functional.dropout(output, p, training=module.training)

    model.get_input_embeddings().register_forward_hook(hook)
    for layer in model.model.layers:
        layer.self_attn.o_proj.register_forward_hook(hook)
        layer.mlp.down_proj.register_forward_hook(hook)


def disable_attention_dropout(model) -> int:
    """Zero attention-probability dropout, which HF attention modules keep as a float (``attention_dropout``) rather
    than an ``nn.Dropout`` (so TRL's ``disable_dropout`` misses it). Returns the number of modules changed."""
    changed = 0
    for module in model.modules():
        if isinstance(getattr(module, "attention_dropout", None), float) and module.attention_dropout:
            module.attention_dropout = 0.0
            changed += 1
    return changed


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
    set_prompt_style(model, training_args.prompt_style)
    set_history_items(model, training_args.history_items)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model: %s, %.2fM parameters, vocab %d", type(model).__name__, n_params / 1e6, len(tokenizer))
    return model, tokenizer


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


SID_EMBEDDING_INITS = ("default", "text")


def residual_code_means(vectors: torch.Tensor, codes: list[tuple[str, ...]]) -> dict[str, torch.Tensor]:
    """Residual quantization in reverse: each level-``l`` code's vector is the mean, over the items that carry it, of
    what is left of their vectors after the codes of the levels before (the centred vector at level 1).

    >>> v = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    >>> means = residual_code_means(v, [("<a_0>", "<b_0>"), ("<a_0>", "<b_1>"), ("<a_1>", "<b_0>")])
    >>> [[round(x, 4) for x in means[t].tolist()] for t in ("<a_0>", "<a_1>", "<b_0>", "<b_1>")]
    [[0.6667, -1.3333], [-1.3333, 2.6667], [-0.5, 0.0], [1.0, 0.0]]
    """
    residual = vectors - vectors.mean(0, keepdim=True)
    means: dict[str, torch.Tensor] = {}
    for level in range(len(codes[0])):
        tokens = [c[level] for c in codes]
        names = sorted(set(tokens))
        lookup = {t: i for i, t in enumerate(names)}
        index = torch.tensor([lookup[t] for t in tokens])
        sums = torch.zeros(len(names), vectors.shape[1]).index_add_(0, index, residual)
        level_means = sums / torch.bincount(index, minlength=len(names)).unsqueeze(1)
        means.update(zip(names, level_means, strict=True))
        residual = residual - level_means[index]
    return means


def item_text_vectors(catalog, model, tokenizer, from_scratch: bool, cache: str = "") -> torch.Tensor:
    """One vector per catalog item (catalog order), in the model's hidden size, from the item's text.

    From scratch the model's own embeddings are random, so the packaged sentence encoder (all-MiniLM-L6-v2, as
    `scripts/build_sids.py` uses) embeds title + description and PCA takes it to the hidden size. A pretrained model
    already has meaningful token embeddings: an item's vector is the mean input embedding of its title's tokens.
    """
    items = list(catalog.items.values())
    hidden = model.get_input_embeddings().weight.shape[1]
    if not from_scratch:
        emb = model.get_input_embeddings().weight.detach().float()
        ids = tokenizer([it.title for it in items], add_special_tokens=False)["input_ids"]
        return torch.stack([emb[torch.tensor(i or [tokenizer.eos_token_id])].mean(0) for i in ids])
    from sidrec.codebook import encode, item_text, resolve_encoder

    texts = [item_text({"title": it.title, "description": it.description}, ("title", "description")) for it in items]
    emb = torch.from_numpy(encode(texts, resolve_encoder(None), cache=cache)).float()
    emb = emb - emb.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(emb, full_matrices=False)
    out = emb @ v[: min(hidden, v.shape[0])].T
    return torch.nn.functional.pad(out, (0, hidden - out.shape[1]))


def init_sid_embeddings_from_text(model, tokenizer, catalog, from_scratch: bool, cache: str = "") -> int:
    """Start each SID token's embedding at its items' text (see `residual_code_means`), not at random or the mean.

    Items whose text is alike share SID prefixes; with these starting points the model also knows which items are
    alike before it has seen them in a history. Each level's vectors are scaled to the embedding's mean row norm.
    Returns the number of SID tokens set.
    """
    vectors = item_text_vectors(catalog, model, tokenizer, from_scratch, cache)
    codes = [parse_sid(it.sid) for it in catalog.items.values()]
    means = residual_code_means(vectors, codes)
    weight = model.get_input_embeddings().weight
    sid_ids = set(tokenizer.convert_tokens_to_ids(list(means)))
    others = [i for i in range(weight.shape[0]) if i not in sid_ids]
    target_norm = weight.detach()[others].float().norm(dim=1).mean()
    with torch.no_grad():
        for level in range(len(codes[0])):
            tokens = sorted({c[level] for c in codes})
            vecs = torch.stack([means[t] for t in tokens])
            vecs = vecs * (target_norm / vecs.norm(dim=1).mean().clamp_min(1e-12))
            weight[tokenizer.convert_tokens_to_ids(tokens)] = vecs.to(weight.dtype)
    return len(means)
