"""What a launch asked for, and what actually ran.

A misconfigured distributed launch often still exits 0 (DeepSpeed quietly becoming DDP, four processes training the
same shard alone), so the recipes check the launch before any work and record, from inside the run, the engine the
Trainer built: its class, ZeRO stage, precision, process count and how the optimizer state is partitioned.
"""

from __future__ import annotations

import logging
import os

import torch
from transformers import TrainerCallback

from sidrec.errors import UserError

logger = logging.getLogger(__name__)


def deepspeed_launch() -> bool:
    """True when ``accelerate launch`` was given a DeepSpeed config (it sets ``ACCELERATE_USE_DEEPSPEED``)."""
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_DEEPSPEED")


def check_launch(use_cpu: bool, bf16: bool = False) -> None:
    """Fail before any work when a DeepSpeed launch cannot run as DeepSpeed on this machine.

    Without CUDA, DeepSpeed runs on its CPU accelerator (gloo between processes) only when the recipe is told to use
    the CPU; the launch is never turned into plain DDP, or into N processes each working alone, behind the user's
    back.
    """
    if not deepspeed_launch() or torch.cuda.is_available():
        return
    if not use_cpu or bf16:
        raise UserError(
            "this is a DeepSpeed launch on a machine without CUDA: add --use_cpu true"
            + (" --bf16 false" if bf16 else "")
            + " to the recipe arguments to run DeepSpeed on the CPU in float32 "
            "(or launch with accelerate_configs/cpu_multi.yaml for plain DDP)"
        )


def check_process_count(state) -> None:
    """The process group must span every process the launcher started (``WORLD_SIZE``), or each would work alone."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if state.num_processes != launched:
        raise RuntimeError(
            f"the launcher started {launched} processes but accelerate joined {state.num_processes} "
            f"({state.distributed_type}); refusing to run them as independent copies"
        )


def use_cpu_when_launched_without_gpus() -> None:
    """Let ``torchrun``-style launches (``accelerate_configs/cpu_multi.yaml``) run on a machine without GPUs.

    Accelerate starts CPU processes only through mpirun; its torchrun launcher sets LOCAL_RANK, and without CUDA each
    process would then train alone. ``ACCELERATE_USE_CPU`` makes accelerate (and the HF Trainer) join the processes
    with the gloo backend instead. A no-op when CUDA is present or the run is not distributed, and never applied to a
    DeepSpeed launch (it would turn DeepSpeed into DDP): there `check_launch` asks for ``use_cpu``.
    """
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

    state = PartialState(cpu=cpu or parse_flag_from_env("ACCELERATE_USE_CPU"))
    check_process_count(state)
    return state


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


def _class_name(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def describe_process_state(state, model=None) -> dict:
    """The process group a run joined and its model's precision; what evaluation (no Trainer, no engine) records."""
    dtype = _dtype_name(next(model.parameters()).dtype) if model is not None else None
    return {
        "distributed_type": str(state.distributed_type).rsplit(".", 1)[-1],
        "num_processes": state.num_processes,
        "device": str(state.device),
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
        "world_size": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
        "engine": None,
        "zero_stage": None,
        "param_dtype": dtype,
        "precision": dtype,
    }


def describe_engine(trainer) -> dict:
    """What the Trainer actually built: read from the live engine, not from the config that asked for it."""
    accelerator = trainer.accelerator
    engine = trainer.model_wrapped
    info = describe_process_state(accelerator.state, accelerator.unwrap_model(engine))
    info.update(engine=_class_name(engine), precision=accelerator.mixed_precision)
    try:
        from deepspeed import DeepSpeedEngine
    except ImportError:
        DeepSpeedEngine = None
    if DeepSpeedEngine is not None and isinstance(engine, DeepSpeedEngine):
        info["zero_stage"] = int(engine.zero_optimization_stage())
        info["precision"] = "bf16" if engine.bfloat16_enabled() else "fp16" if engine.fp16_enabled() else "fp32"
        info["optimizer"] = type(engine.optimizer).__name__
        info["optimizer_partition_fraction"] = _partition_fraction(engine)
    return info


def _partition_fraction(engine) -> list[float] | None:
    """Per rank, the share of trainable parameters whose fp32 optimizer copy this rank holds (ZeRO-1/2 partitions).

    Without partitioning every rank holds 1.0; ZeRO-2 on N ranks gives about 1/N each.
    """
    groups = getattr(engine.optimizer, "single_partition_of_fp32_groups", None)
    if groups is None:
        return None
    local = sum(p.numel() for p in groups)
    total = sum(p.numel() for p in engine.module.parameters() if p.requires_grad)
    fraction = local / total if total else 0.0
    if not torch.distributed.is_initialized():
        return [round(fraction, 4)]
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, round(fraction, 4))
    return gathered


def _probe_parameter(model) -> torch.Tensor | None:
    """A copy of one weight matrix deep in the model (cheap even at 1.5B), to tell whether a model moved."""
    params = [p for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n and "lm_head" not in n]
    return params[-1].detach().float().cpu().clone() if params else None


class LaunchReport(TrainerCallback):
    """Writes `describe_engine` into the run summary when training starts (all ranks take part: the gather is a
    collective) and, for GRPO, whether the reference model moved by the end (``sync_ref_model``).

    Args:
        trainer: The trainer whose engine to describe.
        summary (`RunSummary`): Where to record it (``summary.data["launch"]``).
    """

    def __init__(self, trainer, summary):
        self.trainer = trainer
        self.summary = summary
        self._ref_start = None

    def _ref_model(self):
        ref = getattr(self.trainer, "ref_model", None)
        return None if ref is None else self.trainer.accelerator.unwrap_model(ref)

    def on_train_begin(self, args, state, control, **kwargs):
        info = describe_engine(self.trainer)
        ref = getattr(self.trainer, "ref_model", None)
        if ref is not None:
            info["ref_model_engine"] = _class_name(ref)
            self._ref_start = _probe_parameter(self._ref_model())
        self.summary.data["launch"] = info
        self.summary.write()
        logger.info("launch: %s", info)

    def on_train_end(self, args, state, control, **kwargs):
        if self._ref_start is None:
            return
        now = _probe_parameter(self._ref_model())
        change = float((now - self._ref_start).abs().max())
        self.summary.data["launch"]["ref_model_max_abs_change"] = change
        self.summary.write()
