"""Run as a script by tests/test_vllm.py (its own process: vLLM's colocated engine sets process-wide state).

Builds SidGRPOTrainer with ``use_vllm`` (colocate) on a tiny checkpoint, changes the trainer's weights, and measures
how far TRL's vLLM engine's log-probs are from the trainer model's before and after TRL's ``sync_weights``. Prints
one JSON line: {"engine": ..., "before": max |diff|, "after": max |diff|}.
"""

import json
import os
import sys

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from vllm import SamplingParams
from vllm.inputs import TokensPrompt

from sidrec.configs import SidrecGRPOConfig
from sidrec.rewards import get_reward_funcs
from sidrec.sid import SidVocab
from sidrec.trainers import SidGRPOTrainer


def engine_logprobs(llm, ids, tokens):
    params = SamplingParams(max_tokens=1, temperature=1.0, logprob_token_ids=tokens)
    out = llm.generate([TokensPrompt(prompt_token_ids=ids)], params, use_tqdm=False)[0]
    return torch.tensor([out.outputs[0].logprobs[0][t].logprob for t in tokens])


def main(checkpoint, sids_file, out_dir):
    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    with open(sids_file) as f:
        vocab = SidVocab.from_sids(json.load(f))
    trie = vocab.compile(tok)
    args = SidrecGRPOConfig(
        output_dir=out_dir, max_steps=1, per_device_train_batch_size=8, num_generations=4, max_completion_length=4,
        beam_search=False, reward_funcs=["rule"], use_vllm=True, vllm_mode="colocate", bf16=False, use_cpu=True,
        report_to=[], save_strategy="no", seed=0,
    )  # fmt: skip
    sids = vocab.strings()
    data = Dataset.from_dict({"prompt": [sids[0]] * 8, "target_sid": [sids[1]] * 8})
    trainer = SidGRPOTrainer(
        model=model, reward_funcs=get_reward_funcs(["rule"]), args=args, train_dataset=data, processing_class=tok,
        sid_trie=trie, beam_search=False,
    )  # fmt: skip
    llm = trainer.vllm_generation.llm
    ids = tok(sids[0] + sids[1], add_special_tokens=False)["input_ids"]
    tokens = trie.level_token_ids[0].tolist()[:32]

    def model_logprobs():
        with torch.no_grad():
            logits = trainer.model(torch.tensor([ids])).logits[0, -1].float()
        return torch.log_softmax(logits, -1)[tokens]

    start = (engine_logprobs(llm, ids, tokens) - model_logprobs()).abs().max().item()
    with torch.no_grad():  # a large, deterministic change to every weight
        for p in trainer.model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.5)
    before = (engine_logprobs(llm, ids, tokens) - model_logprobs()).abs().max().item()
    trainer.vllm_generation.sync_weights()
    after = (engine_logprobs(llm, ids, tokens) - model_logprobs()).abs().max().item()
    stats = trainer.rollout_stats
    print(
        json.dumps(
            {
                "engine": stats["engine"],
                "dtype": stats["engine_dtype"],
                "start": start,
                "before": before,
                "after": after,
            }
        )
    )


if __name__ == "__main__":
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    main(*sys.argv[1:4])
