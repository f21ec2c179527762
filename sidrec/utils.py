"""Run plumbing shared by the recipes: atomic outputs, run_summary.json, seeding, and user-error reporting."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

logger = logging.getLogger(__name__)

# Field names whose values never reach disk or logs.
_SECRET_MARKERS = ("token", "api_key", "password", "secret")


class UserError(ValueError):
    """A problem with the user's input or configuration; reported as one line, without a traceback."""


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename, so readers never see half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str) -> Iterator[str]:
    """Yield a temporary sibling folder that replaces ``path`` only if the block finishes."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.")
    try:
        yield tmp
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
        return {
            k: ("<redacted>" if any(m in str(k).lower() for m in _SECRET_MARKERS) and v else redact(v))
            for k, v in obj.items()
        }
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
        secret = word.startswith("--") and any(m in flag.lower() for m in _SECRET_MARKERS)
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


def use_cpu_when_launched_without_gpus() -> None:
    """Let ``torchrun``-style launches (``accelerate_configs/cpu_multi.yaml``) run on a machine without GPUs.

    Accelerate starts CPU processes only through mpirun; its torchrun launcher sets LOCAL_RANK, and without CUDA each
    process would then train alone. ``ACCELERATE_USE_CPU`` makes accelerate (and the HF Trainer) join the processes
    with the gloo backend instead. A no-op when CUDA is present or the run is not distributed, and never applied to a
    DeepSpeed launch (it would turn DeepSpeed into DDP): there `sidrec.launch.check_launch` asks for ``use_cpu``.
    """
    import torch

    from sidrec.launch import deepspeed_launch

    if deepspeed_launch():
        return
    if "LOCAL_RANK" in os.environ and not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


def process_state(cpu: bool = False):
    """Accelerate's process state, on CPU when the launch asked for it (``use_cpu`` configs, or the fallback above).

    Recipes create it before the Trainer does, so it must honour ``ACCELERATE_USE_CPU`` as the Trainer would.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from sidrec.launch import check_process_count

    state = PartialState(cpu=cpu or parse_flag_from_env("ACCELERATE_USE_CPU"))
    check_process_count(state)
    return state


def run_main(main: Callable[[], None], debug_flag: str = "--debug") -> None:
    """Run a recipe's ``main``.

    A `UserError` (bad input or configuration) prints one ``error:`` line and exits 2, unless ``--debug`` is on the
    command line. Any other failure (inside torch, accelerate, DeepSpeed, transformers, or a bug) keeps its full
    traceback, followed by a one-line summary naming where it was raised, and exits 1.
    """
    debug = debug_flag in sys.argv
    use_cpu_when_launched_without_gpus()
    if debug:
        sys.argv.remove(debug_flag)
    try:
        main()
    except UserError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        import traceback

        traceback.print_exc()
        print(f"error: {one_line_summary(e)} (traceback above)", file=sys.stderr, flush=True)
        sys.exit(1)


def one_line_summary(exc: BaseException) -> str:
    r"""``Type: first line of the message [in module]``, where the module is the library frame that raised it.

    Example:
        >>> one_line_summary(ValueError("bad thing\nmore detail"))
        'ValueError: bad thing'
    """
    import traceback

    first = (str(exc).strip().splitlines() or [""])[0]
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        path = frames[-1].filename
        marker = f"{os.sep}site-packages{os.sep}"
        if marker in path:
            where = f" [in {path.split(marker, 1)[1].split(os.sep, 1)[0]}]"
    return f"{type(exc).__name__}: {first}{where}"


# The parser's own messages for keys no config class knows (typos in YAML or on the command line).
_UNKNOWN_ARG_MESSAGES = (
    "Unknown arguments from config file",
    "Some specified arguments are not used",
    "Some keys are",
)


def parse_config(parser, args: list[str] | None = None):
    """``parser.parse_args_and_config`` with unknown YAML keys failing the launch (reported as a user error).

    Only the parser's unknown-key errors and our own validation (`UserError`) become one-line errors; an error raised
    while a library builds its objects (e.g. accelerate's DeepSpeed plugin inside ``TrainingArguments``) keeps its
    traceback, since it is not a typo in the user's config.
    """
    try:
        return parser.parse_args_and_config(args=args, fail_with_unknown_args=True)
    except UserError:
        raise
    except ValueError as e:
        if str(e).startswith(_UNKNOWN_ARG_MESSAGES):
            raise UserError(str(e)) from None
        raise


def resume_arg(value):
    """``resume_from_checkpoint`` as the Trainer wants it: True (latest checkpoint in output_dir), a path, or None.

    Example:
        >>> resume_arg("true"), resume_arg("False"), resume_arg("ckpt/checkpoint-10"), resume_arg(None)
        (True, None, 'ckpt/checkpoint-10', None)
    """
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return True if value.lower() == "true" else None
    return value or None


def check_output_dir(output_dir: str, overwrite: bool, resume: bool = False) -> None:
    """Refuse to write into a non-empty output_dir of an earlier run unless asked to overwrite or resume."""
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not (overwrite or resume):
        raise UserError(
            f"output_dir {output_dir} is not empty; pass --overwrite_output_dir true to replace it "
            "(or resume_from_checkpoint to continue that run)"
        )
