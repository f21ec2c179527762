"""Build semantic IDs for a catalog: item text (or precomputed embeddings) -> a SID method's codes -> unique SIDs,
in MiniOneRec's layout.

    sidrec-build-sids --data_dir data/mycatalog --category MyShop
    sidrec-build-sids --data_dir ../shared/data/Amazon --category Industrial_and_Scientific \
        --out_dir data/industrial_ours                      # a copy of the dataset with our SIDs
    sidrec-build-sids ... --method rq_vae --codebook_sizes 256 256 256 --option epochs=300 --option lr=0.001
    sidrec-build-sids ... --embeddings Industrial.emb.npy  # precomputed item embeddings, one row per item in order
    sidrec-build-sids ... --encoder Qwen/Qwen3-Embedding-4B --method rq_kmeans

Methods (--method, default rq_kmeans_balanced): rq_kmeans_balanced (balanced residual k-means), rq_kmeans (plain
residual k-means: faiss when installed, else scikit-learn), rq_vae and rq_kmeans_plus (trained residual quantisers;
need the sidmethods extra). A method's options (--option KEY=VALUE) are listed by an unknown --option.

Reads index/<category>.item.json (title, description, ...). Writes, under out_dir (default: data_dir):
index/<category>.index.json, info/<category>.txt, the train/valid/test CSVs with their SID columns rewritten (when
data_dir has them), index/<category>.emb.npy (embedding cache, unless --embeddings), the codebook report
index/<category>.codebook.json + .codebook.png and the diagnostics index/<category>.sid_diagnostics.json (also
printed as a table). An existing index is replaced only with --force. The last line printed is the index path.
"""

from __future__ import annotations

import argparse
import ast
import csv
import glob
import json
import logging
import os
import shutil
import sys

from sidrec.atomic_io import atomic_write_text
from sidrec.codebook import (
    DEFAULT_METHOD,
    SID_METHODS,
    CodebookConfig,
    build_sids,
    codebook_report,
    format_diagnostics,
    write_index,
)
from sidrec.data.minionerec import CSV_COLUMNS, DataValidationError
from sidrec.errors import UserError
from sidrec.run.recipe import run_main

logger = logging.getLogger("sidrec.build_sids")


def read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file (expected MiniOneRec's index/<category>.item.json)")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def remap_split(src: str, sids: dict[str, list[str]]) -> str:
    """A split CSV with history_item_sid / item_sid rewritten from item ids (errors name file, row and field)."""
    out_rows = []
    with open(src, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataValidationError(src, f"missing column(s) {missing}")
        for row_no, rec in enumerate(reader, start=1):
            try:
                history = ast.literal_eval(rec["history_item_id"])
            except (ValueError, SyntaxError):
                raise DataValidationError(src, "not a list literal", row_no, "history_item_id") from None
            for field, ids in (("history_item_id", history), ("item_id", [rec["item_id"]])):
                unknown = [i for i in ids if str(i) not in sids]
                if unknown:
                    raise DataValidationError(src, f"item id {unknown[0]!r} is not in item.json", row_no, field)
            rec["history_item_sid"] = repr(["".join(sids[str(i)]) for i in history])
            rec["item_sid"] = "".join(sids[str(rec["item_id"])])
            out_rows.append(rec)
    lines = []
    writer = csv.writer(_Collect(lines))
    writer.writerow(CSV_COLUMNS)
    for rec in out_rows:
        writer.writerow([rec[c] for c in CSV_COLUMNS])
    return "".join(lines)


class _Collect:
    def __init__(self, lines):
        self.lines = lines

    def write(self, text):
        self.lines.append(text)


def parse_options(pairs: list[str]) -> dict:
    """``["epochs=300", "hidden=[256, 128]", "backend=faiss"]`` -> options (Python literals, else strings).

    Example:
    >>> parse_options(["epochs=300", "hidden=[256, 128]", "backend=faiss"])
    {'epochs': 300, 'hidden': [256, 128], 'backend': 'faiss'}
    """
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--option takes KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            options[key.strip()] = value.strip()
    return options


def codebook_config(args: argparse.Namespace) -> CodebookConfig:
    """The build's config from the flags; --codebook_sizes replaces --levels and --codes."""
    if args.codebook_sizes is not None:
        if args.levels is not None or args.codes is not None:
            raise UserError("pass --codebook_sizes, or --levels and --codes, not both")
        levels, codes = len(args.codebook_sizes), args.codebook_sizes
    else:
        levels, codes = args.levels or 3, args.codes or [256]
        codes = codes[0] if len(codes) == 1 else codes
    return CodebookConfig(
        levels=levels, codes=codes, balanced=args.balanced, seed=args.seed, collisions=args.collisions,
        method=args.method or "", options=parse_options(args.option),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--out_dir", default=None, help="where to write (default: data_dir, in place)")
    parser.add_argument(
        "--encoder", default=None, help="sentence-transformers path or Hub id (default: MiniLM, offline)"
    )
    parser.add_argument("--fields", nargs="+", default=["title", "description"], help="item.json fields to embed")
    parser.add_argument(
        "--embeddings",
        default=None,
        help="precomputed item embeddings (.npy, [items, dim], rows in index order) instead of encoding the text",
    )
    parser.add_argument(
        "--method", choices=sorted(SID_METHODS), default=None, help=f"the SID method (default: {DEFAULT_METHOD})"
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the method (repeatable), e.g. epochs=300, hidden=[256,128], backend=sklearn",
    )
    parser.add_argument(
        "--codebook_sizes",
        type=int,
        nargs="+",
        default=None,
        help="the codebook size of each level, e.g. 256 256 256 or 128 256 512 (instead of --levels/--codes)",
    )
    parser.add_argument("--levels", type=int, default=None, help="levels (default 3)")
    parser.add_argument(
        "--codes",
        type=int,
        nargs="+",
        default=None,
        help="codes per level: one number, or one per level (256 256 64) (default 256)",
    )
    parser.add_argument(
        "--balanced",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="balanced residual k-means (the default method); --no-balanced is --method rq_kmeans",
    )
    parser.add_argument(
        "--collisions",
        choices=["move", "extra_level"],
        default="move",
        help="items sharing every code: move to a free last-level code (default) or, as TIGER, add a level that "
        "numbers them (SIDs get levels + 1 tokens)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    parser.add_argument("--force", action="store_true", help="replace an existing index in out_dir")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    cfg = codebook_config(args)
    if args.embeddings and args.encoder:
        raise UserError("pass --embeddings or --encoder, not both")
    cat, src, out = args.category, args.data_dir, args.out_dir or args.data_dir
    items = read_json(os.path.join(src, "index", f"{cat}.item.json"))
    index_path = os.path.join(out, "index", f"{cat}.index.json")
    if os.path.exists(index_path) and not args.force:
        raise UserError(f"{index_path} exists; pass --force to replace it (or choose another --out_dir)")
    splits = {s: sorted(glob.glob(os.path.join(src, s, f"{cat}*.csv"))) for s in ("train", "valid", "test")}
    reference = os.path.join(src, "index", f"{cat}.index.json")
    reference = read_json(reference) if os.path.isfile(reference) else None

    os.makedirs(os.path.join(out, "index"), exist_ok=True)
    sids, report = build_sids(
        items, cfg, tuple(args.fields), args.encoder, args.batch_size, args.device,
        cache="" if args.embeddings else os.path.join(out, "index", f"{cat}.emb.npy"), embeddings=args.embeddings,
    )  # fmt: skip
    if reference:
        report["reference_index"] = codebook_report([reference[i] for i in sorted(reference)], cfg.codes_per_level)

    # CSVs first (they validate item ids), then the index: a failure leaves the old index in place.
    for split, paths in splits.items():
        for path in paths:
            text = remap_split(path, sids)
            atomic_write_text(os.path.join(out, split, os.path.basename(path)), text)
    if os.path.abspath(out) != os.path.abspath(src):
        shutil.copyfile(os.path.join(src, "index", f"{cat}.item.json"), os.path.join(out, "index", f"{cat}.item.json"))
    info = "".join(f"{''.join(sids[i])}\t{items[i].get('title', '')}\t{i}\n" for i in sids)
    existing = sorted(glob.glob(os.path.join(out, "info", f"{cat}*.txt")))  # rewrite in place, never leave a stale one
    atomic_write_text(existing[0] if len(existing) == 1 else os.path.join(out, "info", f"{cat}.txt"), info)
    write_index(os.path.join(out, "index"), cat, sids, report)
    after = report["after_resolution"]
    logger.info(
        "%s: %d items, %d distinct SIDs of %d tokens; before resolution %d items (%.2f%%) shared a SID: %d collisions "
        "(items past the first of each shared SID) %s; %.1f s",
        cfg.method, after["items"], after["distinct_sids"], cfg.sid_length,
        report["before_resolution"]["items_sharing_a_sid"], 100 * report["before_resolution"]["collision_rate"],
        report["moved_to_resolve_collisions"],
        "moved" if cfg.collisions == "move" else "numbered 1 or more at the extra level", report["time_s"]["total"],
    )  # fmt: skip
    print(format_diagnostics(report["diagnostics"]))
    print(index_path)


def cli() -> None:
    """The console script: input errors as one line (exit 2), other failures with their traceback."""
    run_main(main)


if __name__ == "__main__":
    cli()
