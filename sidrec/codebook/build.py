"""A SID build, the same for every method: embeddings -> the method's codes -> collision handling -> diagnostics,
and the outputs in MiniOneRec's layout (``index/<category>.index.json`` and the reports beside it)."""

from __future__ import annotations

import os
import time
from dataclasses import asdict

import numpy as np

from sidrec.atomic_io import atomic_write_json
from sidrec.codebook.collisions import handle_collisions
from sidrec.codebook.config import LEVEL_NAMES, CodebookConfig
from sidrec.codebook.diagnostics import codebook_report, plot_code_usage, sid_diagnostics
from sidrec.codebook.embed import DEFAULT_ENCODER, encode, item_text, load_embeddings, resolve_encoder
from sidrec.codebook.methods import get_sid_method
from sidrec.errors import UserError


def sid_tokens(codes: np.ndarray) -> list[list[str]]:
    """``[[<a_1>, <b_2>, <c_3>], ...]`` from integer codes.

    Example:
    >>> sid_tokens(np.array([[1, 2, 3]]))
    [['<a_1>', '<b_2>', '<c_3>']]
    """
    return [[f"<{LEVEL_NAMES[lv]}_{int(c)}>" for lv, c in enumerate(row)] for row in codes]


def build_codes(emb: np.ndarray, cfg: CodebookConfig) -> tuple[np.ndarray, dict]:
    """The final integer codes of ``cfg.method`` on ``emb`` (collisions handled) and the build's report part:
    codebook reports before and after resolution, the method's details and the diagnostics."""
    method = get_sid_method(cfg.method)
    method.check_available()
    t0 = time.perf_counter()
    raw, info = method.build(emb, cfg.codes_per_level, cfg.seed, **cfg.options)
    t_method = time.perf_counter() - t0
    if raw.shape != (len(emb), cfg.levels):
        raise RuntimeError(
            f"SID method {cfg.method} returned codes of shape {raw.shape}, not {(len(emb), cfg.levels)}"
        )
    codes, moved = handle_collisions(raw, info.last_dist, cfg.collisions, cfg.codes_per_level[-1])
    diag = {
        "method": cfg.method,
        "options": {**method.options, **cfg.options},
        "codebook_sizes": cfg.codes_per_level,
        "collision_handling": cfg.collisions,
        "moved_or_renumbered": moved,
        **sid_diagnostics(raw, codes, cfg.codes_per_level, emb, info.reconstruction),
        "wall_time_s": {"method": round(t_method, 3), "method_and_collisions": round(time.perf_counter() - t0, 3)},
        "method_info": info.details,
    }
    report = {
        "before_resolution": codebook_report(sid_tokens(raw), cfg.codes_per_level),
        "moved_to_resolve_collisions": moved,
        "after_resolution": codebook_report(sid_tokens(codes), cfg.codes_per_level),
        "diagnostics": diag,
    }
    return codes, report


def build_sids(
    items: dict[str, dict],
    cfg: CodebookConfig,
    fields: tuple[str, ...] = ("title", "description"),
    encoder: str | None = None,
    batch_size: int = 64,
    device: str | None = None,
    cache: str = "",
    embeddings: str | np.ndarray | None = None,
) -> tuple[dict[str, list[str]], dict]:
    """SIDs for every item of an item.json mapping; returns ``({item_id: [tokens]}, report)``.

    Items are taken in index order (ids sorted as numbers). ``embeddings``: a precomputed ``[items, dim]`` array or
    ``.npy`` path in that order, instead of encoding the ``fields`` text with ``encoder``."""
    if not items:
        raise UserError("the item file has no items")
    t0 = time.time()
    ids = sorted(items, key=lambda x: (len(x), x))
    if embeddings is None:
        texts = [item_text(items[i], fields) for i in ids]
        empty = [i for i, t in zip(ids, texts, strict=True) if not t]
        if empty:
            raise UserError(f"item {empty[0]} has none of the text fields {list(fields)} ({len(empty)} such items)")
        emb = encode(texts, resolve_encoder(encoder), batch_size, device, cache)
        source = {"fields": list(fields), "encoder": encoder or DEFAULT_ENCODER}
    elif isinstance(embeddings, str):
        emb, source = load_embeddings(embeddings, len(ids)), {"embeddings": embeddings}
    else:
        emb, source = np.asarray(embeddings, dtype=np.float32), {"embeddings": "given array"}
        if len(emb) != len(ids):
            raise UserError(f"{len(emb)} embeddings for {len(ids)} items")
    t_encode = time.time() - t0
    codes, part = build_codes(emb, cfg)
    report = {"config": asdict(cfg), **source, "embedding_dim": int(emb.shape[1]), **part}
    report["time_s"] = {"encode": round(t_encode, 2), "total": round(time.time() - t0, 2)}
    report["diagnostics"]["wall_time_s"]["embed"] = round(t_encode, 3)
    return dict(zip(ids, sid_tokens(codes), strict=True)), report


def write_index(index_dir: str, category: str, sids: dict[str, list[str]], report: dict) -> str:
    """The codebook report (``.codebook.json``, ``.codebook.png``), the diagnostics (``.sid_diagnostics.json``) and,
    last, MiniOneRec's ``<category>.index.json`` (item id -> SID tokens) under ``index_dir``; returns the index path."""
    os.makedirs(index_dir, exist_ok=True)
    stem = os.path.join(index_dir, category)
    atomic_write_json(stem + ".codebook.json", report)
    atomic_write_json(stem + ".sid_diagnostics.json", report["diagnostics"])
    method = report["diagnostics"]["method"]
    plot_code_usage(list(sids.values()), stem + ".codebook.png", f"{category}: code usage ({method})")
    atomic_write_json(stem + ".index.json", sids)
    return stem + ".index.json"
