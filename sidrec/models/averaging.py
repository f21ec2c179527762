"""Checkpoint averaging: the uniform average of the best checkpoint's weights and the later ones on disk, kept only
when it ranks higher on valid (``average_checkpoints`` in the SFT config)."""

from __future__ import annotations

import json
import os

import torch
from safetensors import safe_open
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from sidrec.errors import UserError


def checkpoints_from(best_checkpoint: str | None, output_dir: str) -> list[str]:
    """``best_checkpoint`` and every later ``checkpoint-<step>`` folder in ``output_dir``, by step."""
    if not best_checkpoint:
        return []

    def step(path: str) -> int:
        return int(os.path.basename(path).rsplit("-", 1)[1])

    prefix = f"{PREFIX_CHECKPOINT_DIR}-"
    found = [
        os.path.join(output_dir, d)
        for d in os.listdir(output_dir)
        if d.startswith(prefix) and d[len(prefix) :].isdigit()
    ]
    return sorted((p for p in found if step(p) >= step(best_checkpoint)), key=step)


def _safetensors_files(path: str) -> list[str]:
    """The weight files of a saved full model: ``model.safetensors``, or the shards its index lists."""
    single = os.path.join(path, "model.safetensors")
    if os.path.isfile(single):
        return [single]
    index = os.path.join(path, "model.safetensors.index.json")
    if not os.path.isfile(index):
        raise UserError(
            f"average_checkpoints: no model.safetensors(.index.json) in {path} (full models only, not adapters)"
        )
    with open(index) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    return [os.path.join(path, shard) for shard in shards]


@torch.no_grad()
def average_checkpoints_from_best(
    model, output_dir: str, best_checkpoint: str | None, best_metric: float | None, rank, metric: str = "eval_ndcg@10"
) -> dict | None:
    """Uniform average of the weights of ``best_checkpoint`` and the later checkpoints in ``output_dir``.

    ``model`` holds the best checkpoint's weights. The average is loaded into it and ``rank()`` (ranking metrics
    without the ``eval_`` prefix) scores it; it stays only when ``metric`` is above ``best_metric``, otherwise the
    best weights are put back exactly. Returns what was averaged and decided, or None with fewer than two checkpoints.
    """
    paths = checkpoints_from(best_checkpoint, output_dir)
    if len(paths) < 2 or best_metric is None:
        return None
    params = dict(model.named_parameters())  # tied weights once, as the checkpoints store them
    total = {name: torch.zeros(p.shape, dtype=torch.float32) for name, p in params.items()}
    for path in paths:
        seen = set()
        for file in _safetensors_files(path):
            with safe_open(file, "pt") as f:
                for name in params.keys() & set(f.keys()):
                    total[name] += f.get_tensor(name).to(torch.float32)
                    seen.add(name)
        missing = sorted(set(params) - seen)
        if missing:
            raise RuntimeError(f"average_checkpoints: {path} has no {missing[:3]} ({len(missing)} missing)")
    best = {name: p.detach().clone() for name, p in params.items()}
    for name, p in params.items():
        p.copy_(total[name] / len(paths))
    key = metric.removeprefix("eval_")
    scores = rank()
    kept = scores[key] > best_metric
    if not kept:
        for name, p in params.items():
            p.copy_(best[name])
    return {
        "checkpoints": [os.path.basename(p) for p in paths],
        "metrics": {f"eval_{k}": v for k, v in scores.items()},
        "best_metric": best_metric,
        "kept": bool(kept),
    }
