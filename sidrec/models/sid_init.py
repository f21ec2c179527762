"""SID-embedding initialisation from item text: each code starts at the mean residual text vector of its items."""

from __future__ import annotations

import torch

from sidrec.sid import parse_sid

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
    `sidrec-build-sids` uses) embeds title + description and PCA takes it to the hidden size. A pretrained model
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
