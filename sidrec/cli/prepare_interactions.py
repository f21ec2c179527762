"""Turn a plain interactions file into MiniOneRec's train/valid/test CSVs, next to a catalog with SIDs.

    sidrec-build-sids --data_dir data/mycatalog --category MyShop          # item.json -> index.json
    sidrec-prepare-interactions --interactions interactions.csv --data_dir data/mycatalog --category MyShop

interactions.csv has the columns user_id, item_id, timestamp. Steps: k-core filter (default 5), every
(history -> next item) pair per user in time order with the history cut to the last 10 items, rows split 8:1:1 by
time. Reads index/<category>.item.json and index/<category>.index.json from data_dir; writes
<split>/<category>.csv there. The last line printed is data_dir.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from sidrec.data.interactions import k_core, read_interactions, sequence_rows, write_split_csvs
from sidrec.data.minionerec import DataValidationError
from sidrec.errors import UserError
from sidrec.run.recipe import run_main

logger = logging.getLogger("sidrec.prepare_interactions")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", required=True, help="CSV with user_id, item_id, timestamp")
    parser.add_argument("--data_dir", required=True, help="folder with index/<category>.item.json and .index.json")
    parser.add_argument("--category", required=True)
    parser.add_argument("--k_core", type=int, default=5)
    parser.add_argument("--max_history", type=int, default=10)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    loaded = {}
    for name in ("item", "index"):
        path = os.path.join(args.data_dir, "index", f"{args.category}.{name}.json")
        if not os.path.isfile(path):
            hint = " (run sidrec-build-sids first)" if name == "index" else ""
            raise UserError(f"{path}: no such file{hint}")
        with open(path) as f:
            loaded[name] = json.load(f)
    items, sids = loaded["item"], loaded["index"]
    events = read_interactions(args.interactions)
    for row, (_, item, _) in enumerate(events, start=1):
        if item not in items or item not in sids:
            where = "item.json" if item not in items else "the SID index"
            raise DataValidationError(args.interactions, f"item id {item!r} is not in {where}", row, "item_id")
    kept = k_core(events, args.k_core)
    if not kept:
        raise UserError(f"no interactions left after the {args.k_core}-core filter; lower --k_core")
    splits = sequence_rows(kept, args.max_history)
    paths = write_split_csvs(args.data_dir, args.category, splits, items, sids)
    logger.info(
        "%d of %d interactions kept by the %d-core filter; rows %s; wrote %s",
        len(kept), len(events), args.k_core, {s: len(r) for s, r in splits.items()}, sorted(paths.values()),
    )  # fmt: skip
    print(args.data_dir)


def cli() -> None:
    """The console script: input errors as one line (exit 2), other failures with their traceback."""
    run_main(main)


if __name__ == "__main__":
    cli()
