"""What a pipeline run dir was made from, so a re-run never reports another dataset's or config's results as its own.

``scripts/run_pipeline.sh`` skips every stage whose ``run_summary.json`` says "ok". That is only right when the stage
would be made from the same inputs again, so the run dir keeps ``pipeline.json``: the data dir, the category, the
SHA-256 of every data file the stages read, and of each config file, and the seed given to SFT and GRPO (if any).
Before any stage runs, the script calls

    sidrec-pipeline-record --run-dir DIR --config-dir DIR --data_dir DIR --category NAME [--seed N]

which writes that record into a new run dir, passes when it matches, and otherwise stops with one line naming what
changed (exit 2): use another ``--run-dir``, or ``--restart`` to clear this one and start over.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from sidrec.atomic_io import atomic_write_json, sha256_file
from sidrec.data.minionerec import find_files
from sidrec.errors import UserError

RECORD = "pipeline.json"
CONFIG_FILES = ("sft.yaml", "eval.yaml", "grpo.yaml")


def fingerprint(
    config_dir: str, data_dir: str, category: str, accelerate_config: str = "", seed: int | None = None
) -> dict:
    """The inputs that decide every stage's outputs: data (path, category, file hashes), config file hashes, and the
    ``--seed`` given to SFT and GRPO (None: each config's own)."""
    paths = find_files(data_dir, category)
    configs = {name: sha256_file(os.path.join(config_dir, name)) for name in CONFIG_FILES}
    if accelerate_config:
        configs["accelerate_config"] = sha256_file(accelerate_config)
    return {
        "data_dir": os.path.realpath(data_dir),
        "category": category,
        "data_files": {os.path.relpath(p, data_dir): sha256_file(p) for p in paths.all_files()},
        "config_dir": os.path.realpath(config_dir),
        "configs": configs,
        "seed": seed,
    }


def differences(old: dict, new: dict) -> list[str]:
    """Readable names of what differs between two fingerprints (``configs/sft.yaml``, ``category``, ...)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}/{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(key)
    return out


def check_run_dir(run_dir: str, current: dict, restart: bool = False) -> str:
    """Record ``current`` in a new run dir, accept a matching one, refuse (or with ``restart`` clear) another.

    Returns ``"new"``, ``"same"`` or ``"restarted"``.
    """
    path = os.path.join(run_dir, RECORD)
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
        changed = differences(old, current)
        if not changed:
            return "same"
        if not restart:
            raise UserError(
                f"{run_dir} holds results made from other inputs ({', '.join(changed)} changed since "
                f"{RECORD} was written); use another --run-dir, or --restart to delete its results and start over"
            )
        shutil.rmtree(run_dir)
        status = "restarted"
    elif os.path.isdir(run_dir) and os.listdir(run_dir):
        if not restart:
            raise UserError(
                f"{run_dir} is not empty but has no {RECORD}, so what made its results is unknown; use another "
                "--run-dir, or --restart to delete its results and start over"
            )
        shutil.rmtree(run_dir)
        status = "restarted"
    else:
        status = "new"
    os.makedirs(run_dir, exist_ok=True)
    atomic_write_json(path, current)
    return status


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Check (or start) a pipeline run dir's record of its inputs.")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--config-dir", required=True)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--accelerate-config", default="")
    parser.add_argument("--seed", type=int, default=None, help="the --seed the SFT and GRPO stages are given")
    parser.add_argument("--restart", action="store_true", help="clear a run dir made from other inputs")
    args = parser.parse_args(argv)
    try:
        current = fingerprint(args.config_dir, args.data_dir, args.category, args.accelerate_config, args.seed)
        status = check_run_dir(args.run_dir, current, args.restart)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"run dir {args.run_dir}: {status} ({current['category']} from {current['data_dir']})", file=sys.stderr)


if __name__ == "__main__":
    main()
