"""Non-LLM baselines on the same split and metrics: most-popular, last-item transition, SASRec and GRU4Rec.

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

import torch
from torch import nn
from tqdm.auto import tqdm

from sidrec.atomic_io import atomic_dir, atomic_write_json, atomic_write_text
from sidrec.data.minionerec import Catalog, Interaction
from sidrec.metrics import compute_metrics
from sidrec.models.seqrec import NEURAL_MODELS, SeqBaselineConfig, build_seqrec, encode_histories, save_seqrec

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


def train_seq_baseline(
    train: Sequence[Interaction],
    valid: Sequence[Interaction],
    catalog: Catalog,
    cfg: SeqBaselineConfig | None = None,
    show_progress: bool = True,
) -> tuple[nn.Module, dict[str, int], dict]:
    """Train ``cfg.model`` on the train rows, early-stopped on valid ``cfg.select_metric``.

    Returns the best epoch's model, the item -> index map (1-based; 0 is padding), and a log: per-epoch loss and
    valid metric, the best epoch, the epochs run.
    """
    cfg = cfg or SeqBaselineConfig()
    torch.manual_seed(cfg.seed)
    index = {item: i + 1 for i, item in enumerate(sorted(catalog.items))}
    seq, lengths = encode_histories([r.history_item_ids for r in train], index, cfg.max_len)
    targets = torch.tensor([index[r.item_id] for r in train])
    model = build_seqrec(len(index), cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-8, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    best, best_state, bad, log = -1.0, None, 0, {"epochs": [], "select_metric": cfg.select_metric}
    bar = tqdm(range(cfg.max_epochs), desc=cfg.name, disable=not show_progress)
    for epoch in bar:
        model.train()
        total = 0.0
        for batch in torch.randperm(len(seq), generator=gen).split(cfg.batch_size):
            logits = model(seq[batch], lengths[batch])
            target = targets[batch]
            if cfg.loss == "ce":
                loss = nn.functional.cross_entropy(logits, target)
            else:
                # one negative per row, uniform over the other items: draw from 1..n-1 and step over the target
                neg = torch.randint(1, len(index), (len(batch),), generator=gen)
                neg = neg + (neg >= target).long()
                pos_neg = torch.cat([logits.gather(1, target[:, None]), logits.gather(1, neg[:, None])])
                labels = torch.cat([torch.ones(len(batch), 1), torch.zeros(len(batch), 1)])
                loss = nn.functional.binary_cross_entropy_with_logits(pos_neg, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        value = score_rankings(rank_seq_baseline(model, index, valid, cfg.max_len), valid, catalog)[cfg.select_metric]
        log["epochs"].append({"epoch": epoch + 1, "loss": total / len(seq), f"valid_{cfg.select_metric}": value})
        bar.set_postfix({f"valid {cfg.select_metric}": f"{value:.4f}"})
        if value > best:
            best, bad, best_state = value, 0, {k: v.clone() for k, v in model.state_dict().items()}
            log["best_epoch"] = epoch + 1
        else:
            bad += 1
            if bad > cfg.patience:
                break
    model.load_state_dict(best_state)
    return model, index, log


@torch.no_grad()
def rank_seq_baseline(model: nn.Module, index: dict[str, int], rows: Sequence[Interaction], max_len: int, k: int = 60):
    """Top-``k`` items per row (padding excluded), best first."""
    model.eval()
    items = {v: i for i, v in index.items()}
    out = []
    for start in range(0, len(rows), 1024):
        seq, lengths = encode_histories([r.history_item_ids for r in rows[start : start + 1024]], index, max_len)
        logits = model(seq, lengths)
        top = logits.topk(min(k, logits.shape[-1] - 1), dim=-1).indices.tolist()
        out.extend([[items[j] for j in row] for row in top])
    return out


def run_baselines(data_dir: str, category: str, neural: Sequence[SeqBaselineConfig] | None = None) -> dict:
    """Most-popular, last-item transition, and the neural baselines (default: MiniOneRec's SASRec and GRU4Rec
    settings, `SeqBaselineConfig`) on the test split.

    Returns ``{"metrics": {...}, "neural": {name: {"config", "log"}}, "predictions": {...}, "models": {...}}``;
    ``models`` holds each neural baseline's ``(model, index, config)`` for `write_baselines`; ``predictions`` holds
    each baseline's records for `write_baselines`: per test row, in split order, ``user_id``, ``target`` and
    ``predictions`` (the top-50 SIDs, best first, as scored; no ``scores``: a baseline ranks, it does not score).
    """
    from sidrec.data import load_rec_dataset

    data = load_rec_dataset(data_dir, category)
    train, valid, test = data.splits["train"], data.splits["valid"], data.splits["test"]
    rankings = {
        "most-popular": [most_popular(train, data.catalog)] * len(test),
        "last-item transition": last_item_transition(train, test, data.catalog),
    }
    neural = neural if neural is not None else [SeqBaselineConfig(model=m) for m in NEURAL_MODELS]
    records, models = {}, {}
    for cfg in neural:
        model, index, log = train_seq_baseline(train, valid, data.catalog, cfg)
        rankings[cfg.name] = rank_seq_baseline(model, index, test, cfg.max_len)
        records[cfg.name] = {"config": vars(cfg), "log": log}
        models[cfg.name] = (model, index, cfg)
    metrics = {name: score_rankings(r, test, data.catalog) for name, r in rankings.items()}
    predictions = {
        name: [
            {"user_id": row.user_id, "target": row.item_sid, "predictions": _to_sids(items, data.catalog, TOP_K)}
            for row, items in zip(test, r, strict=True)
        ]
        for name, r in rankings.items()
    }
    return {"metrics": metrics, "neural": records, "predictions": predictions, "models": models}


def write_baselines(result: dict, out: str) -> str:
    """Write ``run_baselines``' result: each baseline's predictions into the folder named after ``out`` (``x.json``
    -> ``x/<baseline>.jsonl``, one folder replaced as a whole), then ``out`` (JSON) with ``predictions`` naming those
    files relative to its own folder, and each neural baseline's model as ``<baseline>.pt`` beside them (`models`
    names them; GRPO's ``cf`` reward loads one). ``out`` is written last, so one that exists has its predictions."""
    folder = os.path.splitext(out)[0]
    folder = folder if folder != out else out + "_predictions"
    records = result["predictions"]
    paths = {name: f"{name.replace(' ', '-').lower()}.jsonl" for name in records}
    models = result.get("models", {})
    model_paths = {name: f"{name.lower()}.pt" for name in models}
    with atomic_dir(folder) as tmp:
        for name, rows in records.items():
            atomic_write_text(os.path.join(tmp, paths[name]), "".join(json.dumps(r) + "\n" for r in rows))
        for name, (model, index, cfg) in models.items():
            save_seqrec(os.path.join(tmp, model_paths[name]), model, index, cfg)
    base = os.path.basename(folder)
    atomic_write_json(
        out,
        {
            **{k: v for k, v in result.items() if k != "models"},
            "predictions": {name: f"{base}/{p}" for name, p in paths.items()},
            "models": {name: f"{base}/{p}" for name, p in model_paths.items()},
        },
    )
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Baselines on a MiniOneRec-layout dataset's test split.")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--out", required=True, help="JSON file to write (the predictions go to a folder beside it)")
    parser.add_argument("--seed", type=int, default=1, help="the neural baselines' seed (MiniOneRec's default: 1)")
    parser.add_argument(
        "--loss", choices=("bce", "ce"), default="bce", help="the neural baselines' loss (MiniOneRec's default: bce)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run_baselines(
        args.data_dir,
        args.category,
        [SeqBaselineConfig(model=m, seed=args.seed, loss=args.loss) for m in NEURAL_MODELS],
    )
    write_baselines(result, args.out)
    for name, m in result["metrics"].items():
        logger.info("%s: HR@10=%.4f NDCG@10=%.4f", name, m["HR@10"], m["NDCG@10"])
    print(args.out)


if __name__ == "__main__":
    main()
