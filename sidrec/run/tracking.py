"""Experiment tracking with Weights & Biases: online, offline (sync later with ``wandb sync``) or disabled.

The API key is read from ``WANDB_API_KEY`` in the environment or from a git-ignored ``.env`` file (see
``.env.example``); it is never passed through configs, so it never reaches logs or ``run_summary.json``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

from sidrec.errors import UserError

logger = logging.getLogger(__name__)

WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class TrackingArguments:
    """W&B settings shared by every recipe."""

    wandb_mode: str = field(
        default="disabled",
        metadata={"help": "online (needs WANDB_API_KEY), offline (a local run folder for `wandb sync`), disabled."},
    )
    wandb_project: str = field(default="sidrec", metadata={"help": "W&B project."})
    wandb_entity: str | None = field(default=None, metadata={"help": "W&B entity (team or user); default: yours."})
    wandb_run_name: str | None = field(default=None, metadata={"help": "W&B run name; default: the output_dir name."})
    wandb_tags: list[str] = field(default_factory=list, metadata={"help": "W&B tags, e.g. [industrial, tiny]."})

    def __post_init__(self):
        if self.wandb_mode not in WANDB_MODES:
            raise UserError(f"wandb_mode must be one of {', '.join(WANDB_MODES)}, got {self.wandb_mode!r}")

    @property
    def tracking(self) -> bool:
        return self.wandb_mode != "disabled"


def load_env_file(path: str = ".env") -> bool:
    """Load ``KEY=value`` lines of a ``.env`` file into the environment (existing variables win)."""
    if not os.path.isfile(path):
        return False
    from dotenv import load_dotenv

    return load_dotenv(path, override=False)


def setup_tracking(args: TrackingArguments, output_dir: str, training_args=None) -> None:
    """Check the tracking settings and export them for wandb and the HF Trainer; call before any data or model work.

    Raises:
        UserError: ``online`` without an API key, or ``report_to`` naming wandb while ``wandb_mode`` is disabled.
    """
    load_env_file()
    report_to = list(getattr(training_args, "report_to", None) or [])
    if "wandb" in report_to and not args.tracking:
        raise UserError("report_to includes wandb but wandb_mode is disabled; set wandb_mode to online or offline")
    if args.wandb_mode == "online" and not os.environ.get("WANDB_API_KEY"):
        raise UserError(
            "wandb_mode=online needs WANDB_API_KEY: export it, or put WANDB_API_KEY=... in a git-ignored .env "
            "(see .env.example); or use wandb_mode=offline and `wandb sync` later"
        )
    if not args.tracking:
        return
    os.environ["WANDB_MODE"] = args.wandb_mode
    os.environ["WANDB_PROJECT"] = args.wandb_project
    os.environ["WANDB_DIR"] = os.path.abspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    if args.wandb_entity:
        os.environ["WANDB_ENTITY"] = args.wandb_entity
    if args.wandb_tags:
        os.environ["WANDB_TAGS"] = ",".join(args.wandb_tags)
    if training_args is not None:
        training_args.report_to = [r for r in report_to if r != "none"] + (
            ["wandb"] if "wandb" not in report_to else []
        )
        training_args.run_name = args.wandb_run_name or os.path.basename(os.path.normpath(output_dir))


def active_run_info() -> dict:
    """The current wandb run (id, project, mode, local folder), or {} when none is active."""
    import wandb

    if wandb.run is None:
        return {}
    return {
        "run_id": wandb.run.id,
        "project": wandb.run.project,
        "mode": os.environ.get("WANDB_MODE", ""),
        "dir": os.path.dirname(wandb.run.dir),
    }


def checkpoint_run_id(model_path: str) -> str | None:
    """The wandb run id recorded in a checkpoint's run_summary.json (so its eval logs into the same run)."""
    path = os.path.join(model_path, "run_summary.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get("wandb", {}).get("run_id")


def log_eval_metrics(args: TrackingArguments, output_dir: str, model_path: str, metrics: dict, config: dict) -> dict:
    """Log eval metrics (HR/NDCG@K, invalid, per-level tables) as W&B tables.

    They go into the run that trained the checkpoint when its run_summary.json names one, else into a new run.
    """
    import wandb

    from sidrec.metrics import per_level_rows

    run_id = checkpoint_run_id(model_path)
    run = wandb.init(
        project=args.wandb_project,
        entity=args.wandb_entity,
        name=args.wandb_run_name or os.path.basename(os.path.normpath(output_dir)),
        tags=args.wandb_tags or None,
        dir=os.path.abspath(output_dir),
        mode=args.wandb_mode,
        id=run_id,
        resume="allow" if run_id else None,
        config={"eval": config},
    )
    ks = sorted({int(k.split("@")[1]) for k in metrics if k.startswith("HR@")})
    columns = ["metric"] + [f"@{k}" for k in ks]
    main = wandb.Table(columns=columns, data=[[m] + [metrics[f"{m}@{k}"] for k in ks] for m in ("HR", "NDCG")])
    tables = {"eval/metrics": main}
    for name, (header, rows) in per_level_rows(metrics["per_level"]).items():
        tables[f"eval/per_level/{name}"] = wandb.Table(columns=header, data=rows)
    run.log(tables)
    run.summary.update({f"eval/{k}": v for k, v in metrics.items() if isinstance(v, int | float)})
    info = {"run_id": run.id, "project": run.project, "mode": args.wandb_mode, "dir": os.path.dirname(run.dir)}
    run.finish()
    return info
