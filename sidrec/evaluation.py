"""Offline evaluation: rank a split's next items with constrained beam search and score them."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from sidrec.data.minionerec import Catalog, Interaction
from sidrec.data.prompts import build_sid_seq, fit_to_length
from sidrec.decoding import rank_items
from sidrec.metrics import compute_metrics
from sidrec.utils import atomic_write_json, atomic_write_text


def evaluate_rows(
    model,
    tokenizer,
    rows: Sequence[Interaction],
    catalog: Catalog,
    num_beams: int,
    batch_size: int = 8,
    max_length: int | None = 512,
    ks: Sequence[int] = (1, 3, 5, 10, 20, 50),
    source: str = "",
    show_progress: bool = True,
    decoder: str = "auto",
) -> tuple[dict, list[dict]]:
    """Rank the next item of every row; returns ``(metrics, predictions)``."""
    records = fit_to_length(build_sid_seq(rows, source), tokenizer, max_length)
    trie = catalog.vocab.compile(tokenizer)
    ranked = rank_items(
        model, tokenizer, [r["prompt"] for r in records], trie, num_beams, batch_size, show_progress, decoder
    )
    targets = [r.item_sid for r in rows]
    metrics = compute_metrics(ranked.sids, targets, num_beams, ranked.invalid, ks)
    predictions = [
        {"user_id": row.user_id, "target": row.item_sid, "predictions": sids, "scores": [round(s, 6) for s in scores]}
        for row, sids, scores in zip(rows, ranked.sids, ranked.scores, strict=False)
    ]
    return metrics, predictions


def write_eval_outputs(output_dir: str, metrics: dict, predictions: list[dict]) -> tuple[str, str]:
    """Write ``predictions.jsonl`` and ``metrics.json`` atomically; returns their paths."""
    pred_path = os.path.join(output_dir, "predictions.jsonl")
    metrics_path = os.path.join(output_dir, "metrics.json")
    atomic_write_text(pred_path, "".join(json.dumps(p) + "\n" for p in predictions))
    atomic_write_json(metrics_path, metrics)
    return metrics_path, pred_path
