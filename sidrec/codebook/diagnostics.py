"""How healthy a set of SIDs is: pure functions of the codes, the diagnostics table, the codebook report and plot.

``codes`` is an ``[n, levels]`` integer array, one row per item. The per-level functions return one value per level.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping

import numpy as np


def collisions(codes: np.ndarray) -> int:
    """Items that share their full code with an earlier item (``n`` minus the distinct codes).

    Example:
    >>> collisions(np.array([[0, 0], [0, 1], [1, 0], [1, 0]]))
    1
    """
    return int(len(codes) - len({tuple(r) for r in codes.tolist()}))


def codes_used(codes: np.ndarray) -> list[int]:
    """Distinct codes at each level.

    Example:
    >>> codes_used(np.array([[0, 0], [0, 1], [1, 0], [1, 0]]))
    [2, 2]
    """
    return [len(np.unique(codes[:, lv])) for lv in range(codes.shape[1])]


def dead_codes(codes: np.ndarray, sizes: list[int]) -> list[int]:
    """Codes of each level's codebook that no item uses.

    Example:
    >>> dead_codes(np.array([[0, 0], [0, 1], [1, 0], [1, 0]]), [4, 2])
    [2, 0]
    """
    return [int(k) - used for k, used in zip(sizes, codes_used(codes), strict=True)]


def _perplexity(counts) -> float:
    p = np.asarray(list(counts), dtype=np.float64)
    p = p / p.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def perplexity(codes: np.ndarray) -> list[float]:
    """exp of the entropy (nats) of each level's code usage: the number of equally used codes it is worth.

    Example:
    >>> [round(v, 4) for v in perplexity(np.array([[0, 0], [0, 1], [1, 0], [1, 0]]))]  # level 2: H(3/4, 1/4)
    [2.0, 1.7548]
    """
    return [_perplexity(Counter(codes[:, lv].tolist()).values()) for lv in range(codes.shape[1])]


def prefix_perplexity(codes: np.ndarray) -> list[float]:
    """exp of the entropy of how items spread over the prefixes (trie nodes) of each depth.

    Example:
    >>> [round(v, 4) for v in prefix_perplexity(np.array([[0, 0], [0, 1], [1, 0], [1, 0]]))]  # 2 * sqrt(2)
    [2.0, 2.8284]
    """
    rows = codes.tolist()
    return [_perplexity(Counter(tuple(r[: lv + 1]) for r in rows).values()) for lv in range(codes.shape[1])]


def largest_prefix_group(codes: np.ndarray) -> list[int]:
    """The most items that share a prefix, at each depth (the last: the largest group sharing a full code).

    Example:
    >>> largest_prefix_group(np.array([[0, 0], [0, 1], [1, 0], [1, 0]]))
    [2, 2]
    """
    rows = codes.tolist()
    return [max(Counter(tuple(r[: lv + 1]) for r in rows).values()) for lv in range(codes.shape[1])]


def reconstruction_mse(emb: np.ndarray, reconstruction: np.ndarray) -> float:
    """Mean over items of the squared Euclidean distance between an embedding and its reconstruction.

    Example:
    >>> reconstruction_mse(np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[0.0, 2.0], [1.0, 1.0]]))
    2.0
    """
    diff = np.asarray(emb, dtype=np.float64) - np.asarray(reconstruction, dtype=np.float64)
    return float((diff**2).sum(1).mean())


def sid_diagnostics(
    codes_before: np.ndarray, codes_after: np.ndarray, sizes: list[int], emb: np.ndarray, reconstruction: np.ndarray
) -> dict:
    """The diagnostics of one build: collisions before and after resolution, then per level of the final SIDs the
    codebook size, codes used, dead codes, perplexity, prefix perplexity and largest prefix group; and the
    reconstruction error of the method's own codes (before resolution), in embedding space.

    ``sizes``: the codebook size of each level of ``codes_before``; an extra collision level is measured against the
    last size."""
    levels = codes_after.shape[1]
    full = [*sizes, *[sizes[-1]] * (levels - len(sizes))]
    used, dead = codes_used(codes_after), dead_codes(codes_after, full)
    ppl, pppl, group = perplexity(codes_after), prefix_perplexity(codes_after), largest_prefix_group(codes_after)
    return {
        "items": len(codes_after),
        "collisions_before_resolution": collisions(codes_before),
        "collisions_after_resolution": collisions(codes_after),
        "reconstruction_mse": round(reconstruction_mse(emb, reconstruction), 6),
        "levels": [
            {
                "level": lv + 1,
                "codebook_size": int(full[lv]),
                "codes_used": used[lv],
                "dead_codes": dead[lv],
                "perplexity": round(ppl[lv], 3),
                "prefix_perplexity": round(pppl[lv], 3),
                "largest_prefix_group": group[lv],
            }
            for lv in range(levels)
        ],
    }


def format_diagnostics(diag: dict) -> str:
    """The diagnostics as a text table (one row per level, the build's totals above it)."""
    head = (
        f"{diag.get('method', 'SIDs')}: {diag['items']} items; collisions {diag['collisions_before_resolution']} before "
        f"resolution, {diag['collisions_after_resolution']} after; reconstruction MSE {diag['reconstruction_mse']:.5f}"
    )
    if "wall_time_s" in diag:
        head += f"; {diag['wall_time_s']['method']:.1f} s"
    cols = ["level", "codebook_size", "codes_used", "dead_codes", "perplexity", "prefix_perplexity"]
    cols.append("largest_prefix_group")
    rows = [[str(lv[c]) for c in cols] for lv in diag["levels"]]
    width = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = [head, "  ".join(c.rjust(w) for c, w in zip(cols, width, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, width, strict=True)) for r in rows]
    return "\n".join(lines)


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


def plot_code_usage(sids: list[list[str]] | Mapping[str, list[list[str]]], path: str, title: str = "") -> None:
    """A PNG of how many items use each code, one panel per level (codes sorted by use). Given ``{label: sids}``
    (several indexes of one catalog, e.g. one per SID method), each index is a line in every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    indexes = dict(sids) if isinstance(sids, Mapping) else {"": sids}
    levels = max(len(next(iter(v))) for v in indexes.values())
    fig, axes = plt.subplots(1, levels, figsize=(4 * levels, 3), squeeze=False)
    for lv in range(levels):
        ax = axes[0][lv]
        for label, index in indexes.items():
            counts = sorted(Counter(s[lv] for s in index if len(s) > lv).values(), reverse=True)
            if len(indexes) == 1:
                ax.bar(range(len(counts)), counts, width=1.0)
                ax.set_title(f"level {lv + 1}: {len(counts)} codes used")
            else:
                ax.step(range(len(counts)), counts, where="mid", label=f"{label} ({len(counts)} codes)")
        if len(indexes) > 1:
            ax.set_yscale("log")
            ax.set_title(f"level {lv + 1}")
            ax.legend(fontsize=7)
        ax.set_xlabel("code (sorted by use)")
        ax.set_ylabel("items")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
