"""``run_summary.json``: what a run was given (command, config, data, versions, hardware) and what it did."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator

from sidrec.atomic_io import atomic_write_json, sha256_file

# Field names whose values never reach disk or logs: any name containing one of these, ...
_SECRET_MARKERS = ("api_key", "apikey", "password", "secret", "credential")
# ... and access tokens (``token``, ``hub_token``, ``use_auth_token``), but not token counts or special tokens
# (``max_prompt_tokens``, ``pad_token``), which are settings a run record must keep.
_NOT_SECRET_TOKENS = ("pad", "eos", "bos", "unk", "sep", "cls", "mask")


def is_secret_name(name: str) -> bool:
    """Whether a config field or command-line flag holds a secret.

    Example:
        >>> [is_secret_name(n) for n in ("hub_token", "token", "wandb_api_key", "max_prompt_tokens", "pad_token")]
        [True, True, True, False, False]
    """
    words = str(name).lower().lstrip("-").replace("-", "_").split("_")
    if any(m in "_".join(words) for m in _SECRET_MARKERS):
        return True
    return words[-1] == "token" and (len(words) == 1 or words[-2] not in _NOT_SECRET_TOKENS)


def git_state() -> dict:
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args):
        return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10)

    try:
        commit = git("rev-parse", "HEAD")
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
        return {"commit": commit.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def versions() -> dict:
    import accelerate
    import torch
    import transformers
    import trl

    import sidrec

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "accelerate": accelerate.__version__,
        "sidrec": sidrec.__version__,
    }


def hardware() -> dict:
    import torch

    if torch.cuda.is_available():
        return {"device": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    return {"device": "cpu", "count": 1, "threads": torch.get_num_threads()}


def redact(obj):
    """Drop values of secret-looking keys from nested dicts/lists (configs written to disk)."""
    if isinstance(obj, dict):
        return {k: ("<redacted>" if is_secret_name(k) and v else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    return obj


def redact_argv(argv: list[str]) -> list[str]:
    """Command-line words with the values of secret-looking flags replaced.

    Example:
        >>> redact_argv(["sft.py", "--hub_token", "hf_x", "--lr", "1", "--wandb_api_key=abc"])
        ['sft.py', '--hub_token', '<redacted>', '--lr', '1', '--wandb_api_key=<redacted>']
    """
    out: list[str] = []
    hide_next = False
    for word in argv:
        if hide_next:
            out.append("<redacted>")
            hide_next = False
            continue
        flag, eq, _ = word.partition("=")
        secret = word.startswith("--") and is_secret_name(flag)
        if secret and eq:
            out.append(f"{flag}=<redacted>")
        else:
            out.append(word)
            hide_next = secret
    return out


def config_dict(*configs) -> dict:
    out = {}
    for cfg in configs:
        if cfg is None:
            continue
        d = cfg.to_dict() if hasattr(cfg, "to_dict") else dataclasses.asdict(cfg)
        out[type(cfg).__name__] = d
    return redact(json.loads(json.dumps(out, default=str)))


class RunSummary:
    """Collects what a run did and writes ``run_summary.json`` atomically: at the start (status "running", which is
    what a killed run leaves behind), and at the end with status "ok" or "failed" and the error.

    Only the main process of ``state`` (accelerate's process state) writes; on the others ``write`` does nothing.
    """

    def __init__(self, output_dir: str, stage: str, configs: tuple, seed: int | None, state=None):
        self.path = os.path.join(output_dir, "run_summary.json")
        self.is_main_process = state is None or state.is_main_process
        self.start = time.time()
        self.data = {
            "stage": stage,
            "status": "running",
            "seed": seed,
            "command": " ".join(redact_argv(sys.argv)),
            "config": config_dict(*configs),
            "versions": versions(),
            "git": git_state(),
            "hardware": {**hardware(), "processes": state.num_processes if state is not None else 1},
            "data_files": {},
            "wall_time_s": {},
            "metrics": {},
            "outputs": [],
        }
        self.write()

    def add_data_files(self, paths: list[str]) -> None:
        self.data["data_files"] = {p: sha256_file(p) for p in paths}

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        t0 = time.time()
        try:
            yield
        finally:
            self.data["wall_time_s"][name] = round(time.time() - t0, 3)

    def write(self, status: str | None = None, error: str | None = None) -> None:
        if not self.is_main_process:
            return
        if status:
            self.data["status"] = status
        if error:
            self.data["error"] = error
        self.data["wall_time_s"]["total"] = round(time.time() - self.start, 3)
        atomic_write_json(self.path, self.data)


def best_model_record(trainer) -> dict:
    """For run_summary.json: the selection metric, its best value and checkpoint, and every evaluation's metrics."""
    evals = [
        {
            k: v
            for k, v in h.items()
            if k in ("epoch", "step", "eval_loss", "eval_ranked_rows", "eval_invalid") or "@" in k
        }
        for h in trainer.state.log_history
        if any(k.startswith("eval_") for k in h)
    ]
    return {
        "metric_for_best_model": trainer.args.metric_for_best_model,
        "best_metric": trainer.state.best_metric,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "evaluations": evals,
    }
