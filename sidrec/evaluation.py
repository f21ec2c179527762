"""Offline evaluation: rank a split's next items with constrained beam search and score them.

The split is cut into fixed shards of rows. Each process of an ``accelerate launch`` decodes its share of the shards
and writes each finished shard atomically to ``output_dir/shards/``; the main process then merges them in row order
into ``predictions.jsonl`` and ``metrics.json``. A shard is decoded the same way whichever process runs it, so any
number of processes gives the same files as one, and an interrupted run resumes at the first unfinished shard.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Sequence

from tqdm.auto import tqdm

from sidrec.atomic_io import atomic_write_json, atomic_write_text
from sidrec.data.minionerec import Catalog, Interaction
from sidrec.data.prompts import fit_to_length
from sidrec.data.tasks import build_sid_seq
from sidrec.decoding import rank_items
from sidrec.errors import UserError
from sidrec.metrics import compute_metrics

SHARDS_DIR = "shards"


def sample_rows(rows: Sequence[Interaction], n: int | None, seed: int) -> list[Interaction]:
    """``n`` rows drawn at random with ``seed``, kept in split order (all rows when ``n`` is None or too large).

    The training-time ranking eval and ``recipes/evaluate.py --max_samples N --sample_seed S`` draw the same rows.

    >>> [r for r in sample_rows(list("abcdef"), 3, seed=0)]
    ['a', 'd', 'f']
    >>> sample_rows(list("abc"), None, seed=0)
    ['a', 'b', 'c']
    """
    if n is None or n >= len(rows):
        return list(rows)
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


class RankingEval:
    """HR@K / NDCG@K of next-item ranking on fixed rows, decoded and scored exactly as ``recipes/evaluate.py`` does.

    Built once before training (every prompt is checked then); each call ranks one process's contiguous share of the
    rows, and `score` turns all shares (gathered by the trainer) into metrics.

    Args:
        rows (`Sequence[Interaction]`): The rows to rank (e.g. `sample_rows` of the valid split).
        catalog (`Catalog`): Their catalog (the SID trie).
        tokenizer: The model's tokenizer (with the SID tokens).
        style (`str`): The prompt style the model is trained with.
        num_beams (`int`): Beams, the length of each ranked list.
        batch_size (`int`): Prompts per decoding batch.
        max_length (`int`, *optional*): Prompt token budget (oldest history items dropped), as in evaluation.
        ks (`Sequence[int]`): The cut-offs reported.
        source (`str`): The split's file, for error messages.
    """

    def __init__(
        self,
        rows: Sequence[Interaction],
        catalog: Catalog,
        tokenizer,
        style: str,
        num_beams: int,
        batch_size: int,
        max_length: int | None,
        ks: Sequence[int] = (1, 5, 10),
        source: str = "",
    ):
        if not rows:
            raise UserError("the ranking eval needs at least one row")
        if num_beams < max(ks):
            raise UserError(f"ranking eval: num_beams={num_beams} is below the largest cut-off K={max(ks)}")
        self.rows, self.num_beams, self.batch_size, self.ks = list(rows), num_beams, batch_size, tuple(ks)
        self.prompts = eval_prompts(self.rows, tokenizer, max_length, source, style)
        self.trie = catalog.vocab.compile(tokenizer)
        if num_beams > self.trie.num_sids:
            raise UserError(
                f"ranking eval: num_beams={num_beams} is larger than the catalog's {self.trie.num_sids} SIDs"
            )

    def as_dataset(self):
        """The ranked rows as a ``prompt`` / ``target_sid`` dataset (what Trainer asks for as an ``eval_dataset``)."""
        from datasets import Dataset

        return Dataset.from_dict({"prompt": self.prompts, "target_sid": [r.item_sid for r in self.rows]})

    def share(self, process_index: int, num_processes: int) -> range:
        """This process's contiguous block of rows (blocks differ in length by at most one)."""
        n = len(self.rows)
        return range(process_index * n // num_processes, (process_index + 1) * n // num_processes)

    def rank(self, model, tokenizer, process_index: int = 0, num_processes: int = 1) -> dict:
        """Rank this process's share; returns ``{"start", "sids", "invalid"}`` for `score`."""
        mine = self.share(process_index, num_processes)
        prompts = self.prompts[mine.start : mine.stop]
        ranked = rank_items(model, tokenizer, prompts, self.trie, self.num_beams, self.batch_size, False)
        return {"start": mine.start, "sids": ranked.sids, "invalid": ranked.invalid}

    def score(self, shares: Sequence[dict]) -> dict:
        """Metrics over all shares: ``hr@K``, ``ndcg@K`` for each K, ``invalid`` and ``ranked_rows``."""
        shares = sorted(shares, key=lambda s: s["start"])
        sids = [row for s in shares for row in s["sids"]]
        if len(sids) != len(self.rows):
            raise RuntimeError(f"ranking eval: got {len(sids)} ranked rows for {len(self.rows)}")
        invalid = sum(s["invalid"] for s in shares)
        m = compute_metrics(sids, [r.item_sid for r in self.rows], self.num_beams, invalid, self.ks)
        out = {f"{name.lower()}@{k}": m[f"{name}@{k}"] for name in ("HR", "NDCG") for k in self.ks}
        return {**out, "invalid": invalid, "ranked_rows": len(sids)}


def eval_prompts(
    rows: Sequence[Interaction], tokenizer, max_length: int | None, source: str = "", style: str = "minionerec"
) -> list[str]:
    """The sid_seq prompts of ``rows``, trimmed to ``max_length`` (raises before any decoding if one cannot fit)."""
    return [r["prompt"] for r in fit_to_length(build_sid_seq(rows, source, style), tokenizer, max_length)]


def _prediction_records(rows: Sequence[Interaction], sids, scores) -> list[dict]:
    return [
        {"user_id": row.user_id, "target": row.item_sid, "predictions": s, "scores": [round(x, 6) for x in sc]}
        for row, s, sc in zip(rows, sids, scores, strict=True)
    ]


def run_sharded_eval(
    ranker,
    tokenizer,
    rows: Sequence[Interaction],
    output_dir: str,
    fingerprint: dict,
    *,
    style: str,
    num_beams: int,
    max_length: int | None,
    ks: Sequence[int],
    shard_size: int,
    source: str = "",
    process_index: int = 0,
    num_processes: int = 1,
    wait_for_everyone=lambda: None,
) -> tuple[dict, list[dict]] | None:
    """Rank this process's shards (skipping finished ones) with ``ranker``, then merge on the main process.

    Args:
        ranker: A `sidrec.backends.Ranker` (``rank(prompts) -> RankedItems``), built by `sidrec.backends.build_ranker`.
        tokenizer: The checkpoint's tokenizer (prompts are trimmed to ``max_length`` tokens).
        fingerprint (`dict`): Everything that decides the predictions (checkpoint, split, beams, ...); a resumed run
            with a different fingerprint is refused rather than mixing shards of two settings.
        style (`str`): The checkpoint's prompt style.
        num_beams (`int`): The ranker's beams (the length of each list, for the metrics).

    Returns:
        ``(metrics, predictions)`` on the main process, ``None`` on the others.
    """
    shard_dir = os.path.join(output_dir, SHARDS_DIR)
    fingerprint = {**fingerprint, "num_rows": len(rows), "shard_size": shard_size, "prompt_style": style}
    prompts = eval_prompts(rows, tokenizer, max_length, source, style)  # every prompt is checked before any decoding
    if process_index == 0:
        _check_or_write_fingerprint(shard_dir, fingerprint)
    wait_for_everyone()
    starts = list(range(0, len(rows), shard_size))
    mine = [i for i in range(len(starts)) if i % num_processes == process_index]
    todo = [i for i in mine if not os.path.isfile(_shard_path(shard_dir, i))]
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"eval shards (rank {process_index})")
    for i in todo:
        lo, hi = starts[i], starts[i] + shard_size
        ranked = ranker.rank(prompts[lo:hi])
        shard = {
            "invalid": ranked.invalid,
            "predictions": _prediction_records(rows[lo:hi], ranked.sids, ranked.scores),
        }
        atomic_write_json(_shard_path(shard_dir, i), shard)
        bar.update()
    bar.close()
    wait_for_everyone()
    if process_index != 0:
        return None
    predictions, invalid = [], 0
    for i in range(len(starts)):
        with open(_shard_path(shard_dir, i)) as f:
            shard = json.load(f)
        predictions.extend(shard["predictions"])
        invalid += shard["invalid"]
    metrics = compute_metrics(
        [p["predictions"] for p in predictions], [r.item_sid for r in rows], num_beams, invalid, ks
    )
    return metrics, predictions


def _shard_path(shard_dir: str, index: int) -> str:
    return os.path.join(shard_dir, f"shard-{index:05d}.json")


def _check_or_write_fingerprint(shard_dir: str, fingerprint: dict) -> None:
    path = os.path.join(shard_dir, "fingerprint.json")
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
        if old != fingerprint:
            changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
            raise UserError(
                f"{shard_dir} holds shards of an eval with different settings ({', '.join(changed)}); "
                "use another output_dir or --overwrite_output_dir true"
            )
        return
    atomic_write_json(path, fingerprint)


def clear_shards(output_dir: str) -> None:
    """Remove the shard folder (after the merged files are written, or when overwriting an earlier run)."""
    shutil.rmtree(os.path.join(output_dir, SHARDS_DIR), ignore_errors=True)


def write_eval_outputs(output_dir: str, metrics: dict, predictions: list[dict]) -> tuple[str, str]:
    """Write ``predictions.jsonl`` and ``metrics.json`` atomically; returns their paths."""
    pred_path = os.path.join(output_dir, "predictions.jsonl")
    metrics_path = os.path.join(output_dir, "metrics.json")
    atomic_write_text(pred_path, "".join(json.dumps(p) + "\n" for p in predictions))
    atomic_write_json(metrics_path, metrics)
    return metrics_path, pred_path


def ranking_eval_for(
    args, data, tokenizer, style: str, max_length: int | None, split: str = "valid"
) -> RankingEval | None:
    """The `RankingEval` a training config asks for: ``ranking_eval_rows`` of ``data``'s valid split (or, with
    ``split="train"``, ``ranking_eval_train_rows`` of its train rows) drawn with ``ranking_eval_seed``; None when the
    config does not evaluate (or ranks no rows)."""
    n = args.ranking_eval_rows if split == "valid" else getattr(args, "ranking_eval_train_rows", 0)
    if not args.evaluates or n == 0:
        return None
    return RankingEval(
        sample_rows(data.splits[split], n, args.ranking_eval_seed),
        data.catalog,
        tokenizer,
        style,
        num_beams=args.ranking_eval_beams,
        batch_size=args.per_device_eval_batch_size,
        max_length=max_length,
        source=data.paths.splits[split],
    )


#: The `EvalConfig` fields that decide an eval's predictions (with the checkpoint, its history window and the data).
FINGERPRINT_SETTINGS = (
    "split",
    "max_samples",
    "sample_seed",
    "num_beams",
    "batch_size",
    "max_length",
    "decoder",
    "backend",
)


def eval_fingerprint(args, checkpoint, data_files: dict) -> dict:
    """What `run_sharded_eval` compares before resuming: the checkpoint, the data files' hashes and the settings."""
    return {
        "model": checkpoint.path,
        "data": data_files,
        "history_items": checkpoint.metadata.history_items,
        **{k: getattr(args, k) for k in FINGERPRINT_SETTINGS},
    }
