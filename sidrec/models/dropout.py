"""Dropout surgery: GPT-2-style residual dropout for small from-scratch models, and zeroing the attention dropout
that HF keeps as a float (TRL's ``disable_dropout`` misses it)."""

from __future__ import annotations

import torch


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
