"""A synthetic catalog and user histories with learnable structure, written in MiniOneRec's layout.

The embedded default for demos, tests and fresh clones. Structure a model can learn:

- hierarchical SIDs: level 1 is the item's category, level 2 its sub-category, level 3 the item, and titles and
  descriptions carry the category and sub-category words (so title -> SID alignment is learnable);
- category affinity: each user prefers one or two categories;
- item-to-item transitions: each item has three likely successors (mostly in its sub-category);
- repeat purchases and a Zipf popularity within each sub-category.

Rows are (last <= 10 items -> next item) pairs, split 8:1:1 by the target's time, as MiniOneRec splits.

Usage::

    python -m sidrec.data.synthetic --out data/synthetic --seed 0
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import random
from dataclasses import dataclass

from sidrec.atomic_io import atomic_dir
from sidrec.data.minionerec import CSV_COLUMNS

logger = logging.getLogger(__name__)

CATEGORY = "Synthetic"
MAX_HISTORY = 10

_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "so",
    "ta",
    "vi",
    "zo",
    "pe",
    "da",
    "fi",
    "gu",
    "ho",
    "ji",
    "be",
    "cor",
    "dex",
    "tan",
    "vel",
]
_ADJECTIVES = [
    "Heavy-Duty",
    "Compact",
    "Premium",
    "Stainless",
    "Industrial",
    "Portable",
    "Precision",
    "Classic",
    "Digital",
    "Reusable",
]
_CATEGORY_NOUNS = [
    "Lab",
    "Tool",
    "Fastener",
    "Adhesive",
    "Safety",
    "Cleaning",
    "Measuring",
    "Electrical",
    "Plumbing",
    "Welding",
    "Optics",
    "Storage",
]
_SUB_NOUNS = [
    "Kit",
    "Set",
    "Clamp",
    "Gauge",
    "Meter",
    "Tape",
    "Glove",
    "Brush",
    "Valve",
    "Wire",
    "Lens",
    "Bin",
    "Drill",
    "Scale",
    "Pump",
    "Filter",
]


@dataclass
class SyntheticConfig:
    num_categories: int = 8
    subcategories_per_category: int = 6
    num_items: int = 600
    num_users: int = 800
    min_events: int = 5
    max_events: int = 16
    p_transition: float = 0.6
    p_repeat: float = 0.08
    p_off_category: float = 0.1
    codebook_size: int = 256
    # 3: <a_category><b_subcategory><c_item>; 4 splits the item code in two, <c_{code // 16}><d_{code % 16}>.
    sid_levels: int = 3
    seed: int = 0

    def __post_init__(self):
        subs = self.num_categories * self.subcategories_per_category
        if self.num_items < subs:
            raise ValueError(f"num_items={self.num_items} must be at least categories x sub-categories = {subs}")
        if max(self.num_categories, self.subcategories_per_category) > self.codebook_size:
            raise ValueError("more categories or sub-categories than codebook_size codes")
        if self.sid_levels not in (3, 4):
            raise ValueError(f"sid_levels must be 3 or 4, got {self.sid_levels}")
        if not 1 <= self.min_events - 1 <= self.max_events:
            raise ValueError("need 2 <= min_events <= max_events")


def _word(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(n)).capitalize()


def generate(cfg: SyntheticConfig) -> tuple[list[dict], list[list[tuple[float, int]]]]:
    """Return ``items`` (dicts with sid tokens, title, description, category ids) and per-user event lists."""
    rng = random.Random(cfg.seed)
    c, s = cfg.num_categories, cfg.subcategories_per_category
    cat_codes = rng.sample(range(cfg.codebook_size), c)
    cat_nouns = [
        _CATEGORY_NOUNS[i % len(_CATEGORY_NOUNS)] + ("" if i < len(_CATEGORY_NOUNS) else str(i)) for i in range(c)
    ]
    brands = [_word(rng, 2) for _ in range(24)]

    # Spread items over sub-categories as evenly as possible.
    subs = [(ci, si) for ci in range(c) for si in range(s)]
    per_sub = [cfg.num_items // len(subs) + (1 if k < cfg.num_items % len(subs) else 0) for k in range(len(subs))]
    items: list[dict] = []
    sub_items: dict[tuple[int, int], list[int]] = {}
    sub_codes = {ci: rng.sample(range(cfg.codebook_size), s) for ci in range(c)}
    for (ci, si), n in zip(subs, per_sub, strict=True):
        sub_noun = f"{_word(rng, 1)}{_SUB_NOUNS[(ci * s + si) % len(_SUB_NOUNS)]}".lower()
        codes = rng.sample(range(cfg.codebook_size), n)
        ids = []
        for code in codes:
            brand, adj = rng.choice(brands), rng.choice(_ADJECTIVES)
            model = f"{rng.choice('ABCDEFGHJKLMNPRSTUVWXZ')}{rng.randint(10, 999)}"
            title = f"{brand} {adj} {cat_nouns[ci]} {sub_noun} {model}"
            desc = (
                f"A {adj.lower()} {sub_noun} from {brand} for {cat_nouns[ci].lower()} work. "
                f"Part of the {cat_nouns[ci]} range, model {model}."
            )
            ids.append(len(items))
            items.append(
                {
                    "sid": [f"<a_{cat_codes[ci]}>", f"<b_{sub_codes[ci][si]}>"]
                    + ([f"<c_{code}>"] if cfg.sid_levels == 3 else [f"<c_{code // 16}>", f"<d_{code % 16}>"]),
                    "title": title,
                    "description": desc,
                    "brand": brand,
                    "categories": f"{cat_nouns[ci]} > {sub_noun}",
                    "cat": ci,
                    "sub": si,
                }
            )
        sub_items[(ci, si)] = ids

    # Zipf-like popularity inside each sub-category, and three successors per item.
    popularity = [0.0] * len(items)
    for ids in sub_items.values():
        for rank, i in enumerate(rng.sample(ids, len(ids))):
            popularity[i] = 1.0 / (rank + 1)
    successors = []
    for i, it in enumerate(items):
        same_sub = [j for j in sub_items[(it["cat"], it["sub"])] if j != i]
        other_sub = [j for (ci, si), ids in sub_items.items() if ci == it["cat"] and si != it["sub"] for j in ids]
        pool = rng.sample(same_sub, min(2, len(same_sub))) + rng.sample(other_sub or same_sub, 1)
        successors.append(pool)
    cat_items = {ci: [i for i, it in enumerate(items) if it["cat"] == ci] for ci in range(c)}
    cat_weight = [1.0 / (k + 1) ** 0.5 for k in range(c)]

    users: list[list[tuple[float, int]]] = []
    horizon = 100.0
    for _ in range(cfg.num_users):
        favourites = rng.choices(range(c), weights=cat_weight, k=2 if rng.random() < 0.4 else 1)
        t = rng.uniform(0, horizon)
        events: list[tuple[float, int]] = []
        for _ in range(rng.randint(cfg.min_events, cfg.max_events)):
            last = events[-1][1] if events else None
            r = rng.random()
            if last is not None and r < cfg.p_repeat:
                nxt = last
            elif last is not None and r < cfg.p_repeat + cfg.p_transition:
                nxt = rng.choices(successors[last], weights=[0.5, 0.3, 0.2][: len(successors[last])])[0]
            else:
                ci = rng.randrange(c) if rng.random() < cfg.p_off_category else rng.choice(favourites)
                pool = cat_items[ci]
                nxt = rng.choices(pool, weights=[popularity[i] for i in pool])[0]
            t += rng.expovariate(1.0)
            events.append((t, nxt))
        users.append(events)
    return items, users


def write_minionerec(
    out_dir: str, items: list[dict], users: list[list[tuple[float, int]]], category: str = CATEGORY
) -> None:
    """Write items and user event lists in MiniOneRec's layout (atomically: the folder appears complete or not at all)."""
    rows = []
    for u, events in enumerate(users):
        for k in range(1, len(events)):
            hist = [i for _, i in events[max(0, k - MAX_HISTORY) : k]]
            rows.append((events[k][0], f"U{u}", hist, events[k][1]))
    rows.sort(key=lambda r: (r[0], r[1]))
    n = len(rows)
    bounds = {"train": (0, int(0.8 * n)), "valid": (int(0.8 * n), int(0.9 * n)), "test": (int(0.9 * n), n)}
    sid = {i: "".join(it["sid"]) for i, it in enumerate(items)}

    with atomic_dir(out_dir) as tmp:
        for sub in ("index", "info", "train", "valid", "test"):
            os.makedirs(os.path.join(tmp, sub))
        with open(os.path.join(tmp, f"index/{category}.index.json"), "w") as f:
            json.dump({str(i): it["sid"] for i, it in enumerate(items)}, f)
        with open(os.path.join(tmp, f"index/{category}.item.json"), "w") as f:
            meta = {
                str(i): {k: it[k] for k in ("title", "description", "brand", "categories")}
                for i, it in enumerate(items)
            }
            json.dump(meta, f, indent=1)
        with open(os.path.join(tmp, f"info/{category}_synthetic.txt"), "w") as f:
            for i, it in enumerate(items):
                f.write(f"{sid[i]}\t{it['title']}\t{i}\n")
        for split, (lo, hi) in bounds.items():
            with open(os.path.join(tmp, f"{split}/{category}_synthetic.csv"), "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(CSV_COLUMNS)
                for _, user, hist, target in rows[lo:hi]:
                    w.writerow(
                        [
                            user,
                            repr([items[i]["title"] for i in hist]),
                            items[target]["title"],
                            repr(hist),
                            target,
                            repr([sid[i] for i in hist]),
                            sid[target],
                        ]
                    )
    logger.info(
        "wrote %d items and %d rows (%s) to %s", len(items), n, {k: b - a for k, (a, b) in bounds.items()}, out_dir
    )


def make_synthetic_dataset(out_dir: str, cfg: SyntheticConfig | None = None) -> str:
    """Generate and write the synthetic dataset; returns ``out_dir``."""
    cfg = cfg or SyntheticConfig()
    items, users = generate(cfg)
    write_minionerec(out_dir, items, users)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output data_dir (MiniOneRec layout, category 'Synthetic')")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    for name, default in vars(SyntheticConfig()).items():
        parser.add_argument(f"--{name}", type=type(default), default=default)
    args = vars(parser.parse_args(argv))
    out, force = args.pop("out"), args.pop("force")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if os.path.exists(out) and not force:
        raise SystemExit(f"{out} exists; pass --force to replace it")
    make_synthetic_dataset(out, SyntheticConfig(**args))
    print(out)


if __name__ == "__main__":
    main()
