"""The skeleton every recipe shares: launch checks, process state, output dir, tracking, run summary, failure record.

A recipe reads as "parse, build, train or evaluate, write"::

    def main():
        script_args, args, model_args = parse_config(TrlParser((SidrecScriptArguments, SidrecSFTConfig, SidrecModelConfig)))
        with run_recipe("sft", script_args, args, model_args) as run:
            data = run.load_data(("train", "valid"))
            ...  # build, train
            run.finish(metrics, outputs=[args.output_dir])

In the style of TRL's ``trl/scripts/*.py``: the recipe keeps the parts a reader needs to see (what is loaded, what is
trained, what is written) and this module keeps the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence

from sidrec.errors import UserError, one_line_summary
from sidrec.models.loading import check_model_path
from sidrec.patches import apply_patches
from sidrec.run.launch import check_launch, process_state, use_cpu_when_launched_without_gpus
from sidrec.run.summary import RunSummary
from sidrec.run.tracking import active_run_info, setup_tracking

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclasses.dataclass
class Run:
    """One recipe run: its parsed configs, accelerate's process state and its `RunSummary`."""

    stage: str
    script_args: object
    args: object  # the stage's config (SidrecSFTConfig, SidrecGRPOConfig, EvalConfig)
    model_args: object
    state: object
    summary: RunSummary
    resume: object  # what Trainer.train(resume_from_checkpoint=...) takes; True/False for evaluation

    @property
    def is_main_process(self) -> bool:
        return self.state.is_main_process

    def load_data(self, splits: Sequence[str], max_rows: dict | None = None):
        """The dataset's ``splits`` (see `sidrec.data.load_rec_dataset`), timed and fingerprinted in the summary.

        ``max_rows`` defaults to the script arguments' ``max_train_rows`` / ``max_valid_rows``.
        """
        from sidrec.data import load_rec_dataset

        if max_rows is None:
            max_rows = {"train": self.script_args.max_train_rows, "valid": self.script_args.max_valid_rows}
        with self.summary.timed("load_data"):
            data = load_rec_dataset(self.script_args.data_dir, self.script_args.category, tuple(splits), max_rows)
            self.summary.add_data_files(data.paths.all_files())
        return data

    def timed(self, name: str):
        """Time a block into ``run_summary.json``'s ``wall_time_s[name]``."""
        return self.summary.timed(name)

    def finish(self, metrics: dict, outputs: Sequence[str], **extra) -> None:
        """Write the final ``run_summary.json`` (status ok) from the main process; the others return at once."""
        if not self.is_main_process:
            return
        self.summary.data["metrics"] = metrics
        self.summary.data["outputs"] = list(outputs)
        self.summary.data.update(extra)
        if "wandb" not in extra:
            self.summary.data["wandb"] = active_run_info() if self.script_args.tracking else {}
        self.summary.write("ok")


@contextlib.contextmanager
def run_recipe(stage: str, script_args, args, model_args) -> Iterator[Run]:
    """Check the launch, prepare the output dir and tracking, and record the run in ``run_summary.json``.

    Before any data or model work: the model path must be a folder or a Hub id (`check_model_path`), the launch must
    run as configured (`sidrec.run.launch.check_launch`: a DeepSpeed launch never quietly becomes DDP), the process
    count must give the recipe's global batch, and output_dir must be empty unless the run overwrites or resumes. The
    library patches of `sidrec.patches` are applied here, once, and recorded in the summary. A failure inside the
    block is recorded (status "failed" and the error) and re-raised with its traceback; `run_main` decides how it is
    reported.

    Args:
        stage (`str`): ``sft``, ``grpo`` or ``eval``: the summary's ``stage``.
        script_args (`SidrecScriptArguments`): Data and tracking arguments.
        args: The stage's config; training configs resume with ``resume_from_checkpoint``, `EvalConfig` with
            ``resume``.
        model_args (`sidrec.configs.SidrecModelConfig`): The model to load.
    """
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    check_model_path(model_args.model_name_or_path)
    training = hasattr(args, "resume_from_checkpoint")
    check_launch(args.use_cpu, getattr(args, "bf16", False))
    state = process_state(cpu=args.use_cpu)
    if training:
        args.check_global_batch(state.num_processes)
    resume = resume_arg(args.resume_from_checkpoint) if training else args.resume
    check_output_dir(args.output_dir, args.overwrite_output_dir, resume=bool(resume))
    setup_tracking(script_args, args.output_dir, args if training else None)
    summary = RunSummary(args.output_dir, stage, (script_args, args, model_args), args.seed, state)
    summary.data["patches"] = apply_patches()
    try:
        yield Run(stage, script_args, args, model_args, state, summary, resume)
    except BaseException as e:
        summary.write("failed", error=f"{type(e).__name__}: {e}")
        raise


# The parser's own messages for keys no config class knows (typos in YAML or on the command line).
_UNKNOWN_ARG_MESSAGES = (
    "Unknown arguments from config file",
    "Some specified arguments are not used",
    "Some keys are",
)


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
        traceback.print_exc()
        print(f"error: {one_line_summary(e)} (traceback above)", file=sys.stderr, flush=True)
        sys.exit(1)


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
