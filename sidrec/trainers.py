"""Thin trainer subclasses."""

from __future__ import annotations

import os

from safetensors.torch import load_model, save_model
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer
from trl.models import unwrap_model_for_generation

from sidrec.decoding import rank_items, sample_items
from sidrec.sid import SidTrie
from sidrec.utils import UserError

REF_MODEL_CHECKPOINT = "ref_model.safetensors"


class SidGRPOTrainer(GRPOTrainer):
    """Only change from GRPOTrainer: rollouts come from SID-constrained decoding instead of free sampling.

    With ``beam_search=True`` (MiniOneRec's setting) the G completions of a prompt are the top-G beams of a
    constrained beam search, best first, all distinct catalog SIDs; with ``beam_search=False`` they are G constrained
    samples at the trainer's temperature. TRL repeats each prompt G times in a row; one search runs per unique prompt
    and its completions are returned in that layout. Each completion's rank in its group reaches the reward functions
    as the ``beam_rank`` column. The hook is TRL's ``rollout_func`` (TRL passes its extra fields to the rewards).

    Checkpoints also hold the reference model when ``sync_ref_model`` moves it (TRL reloads it from the starting
    checkpoint, which would make a resumed run differ from an uninterrupted one).

    Args:
        sid_trie (`SidTrie`): The catalog trie, compiled for the trainer's tokenizer.
        beam_search (`bool`): Beam-search rollouts (True) or constrained sampling (False).
        rollout_batch_size (`int`): Unique prompts per generate call.
    """

    def __init__(self, *args, sid_trie: SidTrie, beam_search: bool = True, rollout_batch_size: int = 8, **kwargs):
        if kwargs.get("rollout_func") is not None:
            raise ValueError("SidGRPOTrainer supplies its own rollout_func")
        self.sid_trie = sid_trie
        self.beam_search = beam_search
        self.rollout_batch_size = rollout_batch_size
        super().__init__(*args, rollout_func=self._sid_rollout, **kwargs)
        check_group_layout(self.args, sid_trie.num_sids)

    def _sid_rollout(self, prompts: list[str], trainer: GRPOTrainer) -> dict:
        group = self.num_generations if self.model.training else self.num_generations_eval
        unique = prompts[::group]
        if len(unique) * group != len(prompts) or any(p != unique[i // group] for i, p in enumerate(prompts)):
            raise RuntimeError(f"expected each prompt repeated {group} times in a row")
        tokenizer = self.processing_class
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as model:
            if self.beam_search:
                ranked = rank_items(
                    model, tokenizer, unique, self.sid_trie, group, self.rollout_batch_size, show_progress=False
                )
                indices = ranked.indices
                if any(len(row) != group for row in indices):
                    raise RuntimeError(f"beam search returned fewer than {group} distinct SIDs for some prompt")
            else:
                indices = sample_items(
                    model, tokenizer, unique, self.sid_trie, group, self.args.temperature, self.rollout_batch_size
                )
        sid_ids = self.sid_trie.sid_token_ids
        eos = self.sid_trie.eos_token_id
        completion_ids = [sid_ids[i].tolist() + [eos] for row in indices for i in row]
        prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": completion_ids,
            "logprobs": None,
            "beam_rank": [rank for _ in unique for rank in range(group)],
        }

    def _synced_ref_model(self):
        if self.ref_model is None or not self.args.sync_ref_model:
            return None
        return self.accelerator.unwrap_model(self.ref_model)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        ref = self._synced_ref_model()
        if ref is not None and self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            save_model(ref, os.path.join(folder, REF_MODEL_CHECKPOINT))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        ref = self._synced_ref_model()
        path = os.path.join(checkpoint, REF_MODEL_CHECKPOINT) if checkpoint else ""
        if ref is not None and os.path.isfile(path):
            load_model(ref, path, device=str(next(ref.parameters()).device))


def check_group_layout(args, num_sids: int) -> None:
    """GRPO groups must fit the catalog and each process's batch (so a group never spans two processes)."""
    group = args.num_generations
    if group > num_sids:
        raise UserError(f"num_generations={group} is larger than the catalog's {num_sids} distinct SIDs")
    per_process = args.per_device_train_batch_size * args.steps_per_generation
    if per_process % group:
        raise UserError(
            f"num_generations={group} must divide the per-process generation batch "
            f"(per_device_train_batch_size x steps_per_generation = {per_process})"
        )
