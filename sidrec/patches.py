"""Every patch sidrec makes to a library's internals, in one place; each has a test that fails when the library
changes underneath (``tests/test_sft.py`` for TRL's, ``tests/test_vllm.py`` for vLLM's).

- `score_labelled_positions_on_cpu` (TRL 1.16): the fused LM head scores only labelled positions on CPU too. Applied
  by `apply_patches`, which the recipe skeleton (`sidrec.run.recipe.run_recipe`) calls once and records in
  ``run_summary.json`` (``patches``).
- `patch_cpu_weight_sync` (vLLM 0.32, CPU only): linear layers keep their parameters so TRL's weight sync reaches the
  kernels. Applied by the vLLM backend when it builds a colocated engine (`sidrec.backends.vllm.prepare_rollouts`).
"""

from __future__ import annotations

import logging

import torch
import trl.trainer.utils as trl_trainer_utils

logger = logging.getLogger(__name__)


def score_labelled_positions_on_cpu() -> None:
    """Make TRL's fused LM head score only the positions that have a label on CPU too.

    ``trl.trainer.utils.add_fused_lm_head`` (TRL 1.16) scores only the labelled positions where Triton runs, and every
    position elsewhere: a varying number of rows would recompile each batch on compiling backends (Neuron). Eager CPU
    recompiles nothing, and the per-row arithmetic is the same either way, so the loss and gradients are unchanged
    while the LM head skips the prompt tokens: a forward + backward of the tiny-cpu recipe takes half the time
    (``scripts/bench_sft_step.py``, docs/PERFORMANCE.md). The decision is the module-level name ``_use_triton`` that
    the fused head reads; the kernel keeps its own reference, so no Triton kernel runs on CPU. A test in
    ``tests/test_sft.py`` fails if TRL renames it or stops reading it there. Idempotent.
    """
    original = trl_trainer_utils._use_triton
    if getattr(original, "sidrec_compact_cpu", False):
        return

    def use_compact_rows(device: torch.device) -> bool:
        return device.type == "cpu" or original(device)

    use_compact_rows.sidrec_compact_cpu = True
    trl_trainer_utils._use_triton = use_compact_rows


def apply_patches() -> list[str]:
    """Apply the patches every recipe runs with (idempotent); returns their names for the run summary."""
    score_labelled_positions_on_cpu()
    applied = ["trl.trainer.utils._use_triton: score_labelled_positions_on_cpu"]
    logger.info("library patches applied: %s", ", ".join(applied))
    return applied


def patch_cpu_weight_sync() -> bool:
    """On vLLM's CPU platform, keep linear layers on their parameters so weight reloads take effect.

    Returns True when the patch was applied (CPU platform), False elsewhere (nothing to do on GPU).
    """
    from vllm.model_executor.layers import utils as layer_utils
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return False

    def keep_parameters(layer: torch.nn.Module, remove_weight: bool) -> None:
        layer.cpu_linear = torch.nn.functional.linear

    layer_utils.dispatch_cpu_unquantized_gemm = keep_parameters
    return True
