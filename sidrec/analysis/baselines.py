"""Non-LLM baselines on the same split and metrics: most-popular, last-item transition, and SASRec.

Each ranks catalog items for every test row; the ranked items are mapped to their SIDs (items sharing a SID count
once) and scored with `sidrec.metrics.compute_metrics`, exactly as the LLM's beam-search lists are. Each baseline's
top-50 SIDs per test row are saved too (`write_baselines`), so a model can be compared with it user by user
(`sidrec.analysis.bootstrap`).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from sidrec.atomic_io import atomic_dir, atomic_write_json, atomic_write_text
from sidrec.data.minionerec import Catalog, Interaction
from sidrec.metrics import compute_metrics

logger = logging.getLogger(__name__)

# How many SIDs of each ranking are scored and saved (the LLM's lists have num_beams = 50).
TOP_K = 50


def _to_sids(ranked_items: list[str], catalog: Catalog, k: int) -> list[str]:
    out, seen = [], set()
    for item in ranked_items:
        sid = catalog.items[item].sid
        if sid not in seen:
            seen.add(sid)
            out.append(sid)
            if len(out) == k:
                break
    return out


def score_rankings(rankings: list[list[str]], rows: Sequence[Interaction], catalog: Catalog, k: int = TOP_K) -> dict:
    """HR/NDCG@K of item rankings (best first) against the rows' next items, via their SIDs."""
    sids = [_to_sids(r, catalog, k) for r in rankings]
    return compute_metrics(sids, [r.item_sid for r in rows], k, 0)


def most_popular(train: Sequence[Interaction], catalog: Catalog) -> list[str]:
    """Items by how often they are a train target (ties: catalog order), then the never-seen ones."""
    counts = Counter(r.item_id for r in train)
    return sorted(catalog.items, key=lambda i: -counts[i])


def last_item_transition(train: Sequence[Interaction], rows: Sequence[Interaction], catalog: Catalog) -> list[list]:
    """Most frequent next items after the row's last history item in train, backfilled by popularity."""
    follows: dict[str, Counter] = defaultdict(Counter)
    for r in train:
        seq = [*r.history_item_ids, r.item_id]
        for a, b in zip(seq, seq[1:], strict=False):
            follows[a][b] += 1
    popular = most_popular(train, catalog)
    out = []
    for r in rows:
        last = r.history_item_ids[-1] if r.history_item_ids else None
        first = [i for i, _ in sorted(follows[last].items(), key=lambda x: (-x[1], x[0]))] if last else []
        seen = set(first)
        out.append(first + [i for i in popular if i not in seen])
    return out


@dataclass
class SASRecConfig:
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    max_len: int = 10
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 60
    patience: int = 5
    seed: int = 42


class SASRec(nn.Module):
    """Self-attentive sequential recommendation (Kang & McAuley, 2018): causal transformer over item embeddings,
    next-item logits against the (shared) item embedding table. Item 0 is padding."""

    def __init__(self, num_items: int, cfg: SASRecConfig):
        super().__init__()
        self.items = nn.Embedding(num_items + 1, cfg.hidden, padding_idx=0)
        self.positions = nn.Embedding(cfg.max_len, cfg.hidden)
        layer = nn.TransformerEncoderLayer(
            cfg.hidden, cfg.heads, 2 * cfg.hidden, cfg.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.hidden)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """``seq`` `[B, T]` left-padded item indices -> logits `[B, T, num_items + 1]` for the next item."""
        pos = torch.arange(seq.shape[1], device=seq.device)
        # padding positions are zeroed (the original's timeline mask) rather than masked out of attention, so no
        # query row is ever fully masked
        x = self.dropout(self.items(seq) + self.positions(pos)) * (seq != 0).unsqueeze(-1)
        causal = nn.Transformer.generate_square_subsequent_mask(seq.shape[1], device=seq.device)
        h = self.norm(self.encoder(x, mask=causal, is_causal=True))
        return h @ self.items.weight.T


def _pad_left(seqs: list[list[int]], length: int) -> torch.Tensor:
    out = torch.zeros(len(seqs), length, dtype=torch.long)
    for i, s in enumerate(seqs):
        s = s[-length:]
        if s:
            out[i, length - len(s) :] = torch.tensor(s)
    return out


def train_sasrec(
    train: Sequence[Interaction],
    valid: Sequence[Interaction],
    catalog: Catalog,
    cfg: SASRecConfig | None = None,
    show_progress: bool = True,
) -> tuple[SASRec, dict[str, int], dict]:
    """Train on every position of the train sequences (history + target), early-stopped on valid HR@10.

    Returns the best model, the item -> index map, and a log (per-epoch loss and valid HR@10, best epoch).
    """
    cfg = cfg or SASRecConfig()
    torch.manual_seed(cfg.seed)
    index = {item: i + 1 for i, item in enumerate(sorted(catalog.items))}
    seqs = [[index[i] for i in (*r.history_item_ids, r.item_id)] for r in train]
    full = _pad_left(seqs, cfg.max_len + 1)
    inputs, labels = full[:, :-1], full[:, 1:]
    model = SASRec(len(index), cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    best, best_state, bad, log = -1.0, None, 0, {"epochs": []}
    for epoch in tqdm(range(cfg.epochs), desc="SASRec", disable=not show_progress):
        model.train()
        total = 0.0
        for batch in torch.randperm(len(inputs), generator=gen).split(cfg.batch_size):
            logits = model(inputs[batch])
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels[batch].flatten(), ignore_index=0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        hr = score_rankings(rank_sasrec(model, index, valid, cfg.max_len), valid, catalog)["HR@10"]
        log["epochs"].append({"epoch": epoch + 1, "loss": total / len(inputs), "valid_HR@10": hr})
        if hr > best:
            best, bad, best_state = hr, 0, {k: v.clone() for k, v in model.state_dict().items()}
            log["best_epoch"] = epoch + 1
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    model.load_state_dict(best_state)
    return model, index, log


@torch.no_grad()
def rank_sasrec(model: SASRec, index: dict[str, int], rows: Sequence[Interaction], max_len: int, k: int = 60):
    """Top-``k`` items per row (padding excluded), best first."""
    model.eval()
    items = {v: i for i, v in index.items()}
    out = []
    for start in range(0, len(rows), 512):
        chunk = rows[start : start + 512]
        seq = _pad_left([[index[i] for i in r.history_item_ids] for r in chunk], max_len)
        logits = model(seq)[:, -1]
        logits[:, 0] = float("-inf")
        top = logits.topk(min(k, logits.shape[-1] - 1), dim=-1).indices.tolist()
        out.extend([[items[j] for j in row] for row in top])
    return out


def run_baselines(data_dir: str, category: str, sasrec: SASRecConfig | None = None) -> dict:
    """Most-popular, last-item transition and SASRec on the test split.

    Returns ``{"metrics": {...}, "sasrec_config": ..., "sasrec_log": ..., "predictions": {...}}``; ``predictions``
    holds each baseline's records for `write_baselines`: per test row, in split order, ``user_id``, ``target`` and
    ``predictions`` (the top-50 SIDs, best first, as scored; no ``scores``: a baseline ranks, it does not score).
    """
    from sidrec.data import load_rec_dataset

    data = load_rec_dataset(data_dir, category)
    train, valid, test = data.splits["train"], data.splits["valid"], data.splits["test"]
    rankings = {
        "most-popular": [most_popular(train, data.catalog)] * len(test),
        "last-item transition": last_item_transition(train, test, data.catalog),
    }
    cfg = sasrec or SASRecConfig()
    model, index, log = train_sasrec(train, valid, data.catalog, cfg)
    rankings["SASRec"] = rank_sasrec(model, index, test, cfg.max_len)
    metrics = {name: score_rankings(r, test, data.catalog) for name, r in rankings.items()}
    predictions = {
        name: [
            {"user_id": row.user_id, "target": row.item_sid, "predictions": _to_sids(items, data.catalog, TOP_K)}
            for row, items in zip(test, r, strict=True)
        ]
        for name, r in rankings.items()
    }
    return {"metrics": metrics, "sasrec_config": vars(cfg), "sasrec_log": log, "predictions": predictions}


def write_baselines(result: dict, out: str) -> str:
    """Write ``run_baselines``' result: each baseline's predictions into the folder named after ``out`` (``x.json``
    -> ``x/<baseline>.jsonl``, one folder replaced as a whole), then ``out`` (JSON) with ``predictions`` naming those
    files relative to its own folder. ``out`` is written last, so one that exists has its predictions."""
    folder = os.path.splitext(out)[0]
    folder = folder if folder != out else out + "_predictions"
    records = result["predictions"]
    paths = {name: f"{name.replace(' ', '-').lower()}.jsonl" for name in records}
    with atomic_dir(folder) as tmp:
        for name, rows in records.items():
            atomic_write_text(os.path.join(tmp, paths[name]), "".join(json.dumps(r) + "\n" for r in rows))
    base = os.path.basename(folder)
    atomic_write_json(out, {**result, "predictions": {name: f"{base}/{p}" for name, p in paths.items()}})
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Baselines on a MiniOneRec-layout dataset's test split.")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--out", required=True, help="JSON file to write (the predictions go to a folder beside it)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run_baselines(args.data_dir, args.category, SASRecConfig(seed=args.seed))
    write_baselines(result, args.out)
    for name, m in result["metrics"].items():
        logger.info("%s: HR@10=%.4f NDCG@10=%.4f", name, m["HR@10"], m["NDCG@10"])
    print(args.out)


if __name__ == "__main__":
    main()
