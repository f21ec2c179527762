"""On a CUDA device: bf16 SFT steps with SidSFTTrainer, and the tree decoder equal to HF generate in bf16.

CI has no GPU; these run where one is present (`pytest -m gpu`), e.g. on a lent H100.
"""

import pytest
import torch

from sidrec.data.prompts import fit_to_length, to_hf_dataset
from sidrec.data.tasks import build_sid_seq, build_tasks
from sidrec.decoding import rank_items, rankings_match
from sidrec.models.tiny import build_tiny_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]


def test_bf16_sft_steps_on_cuda_lower_the_loss(small_data, small_tokenizer, tmp_path):
    from sidrec.configs import SidrecSFTConfig
    from sidrec.trainers import SidSFTTrainer

    model = build_tiny_model(small_tokenizer, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2)
    examples = build_tasks(["sid_seq", "item_alignment"], small_data.splits["train"], small_data.catalog)
    ds = to_hf_dataset(fit_to_length(examples, small_tokenizer, 256))
    args = SidrecSFTConfig(
        output_dir=str(tmp_path), max_steps=8, per_device_train_batch_size=16, learning_rate=1e-2, bf16=True,
        report_to=[], save_strategy="no", eval_strategy="no", early_stopping_patience=None, max_length=256,
    )  # fmt: skip
    trainer = SidSFTTrainer(model=model, args=args, train_dataset=ds, processing_class=small_tokenizer)
    probe = ds.select(range(64))
    first = trainer.evaluate(eval_dataset=probe)["eval_loss"]
    trainer.train()
    assert next(trainer.model.parameters()).device.type == "cuda"
    assert trainer.accelerator.mixed_precision == "bf16"
    assert trainer.evaluate(eval_dataset=probe)["eval_loss"] < first - 0.5


def test_tree_decoder_equals_generate_in_bf16_on_cuda(small_data, small_tokenizer):
    model = build_tiny_model(small_tokenizer, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2)
    model = model.to("cuda", torch.bfloat16).eval()
    trie = small_data.catalog.vocab.compile(small_tokenizer)
    prompts = [r["prompt"] for r in fit_to_length(build_sid_seq(small_data.splits["test"][:8]), small_tokenizer, 256)]
    tree = rank_items(model, small_tokenizer, prompts, trie, 10, 4, show_progress=False, decoder="tree")
    gen = rank_items(model, small_tokenizer, prompts, trie, 10, 4, show_progress=False, decoder="generate")
    assert tree.invalid == 0 and all(len(set(s)) == 10 for s in tree.sids)
    assert rankings_match(gen, tree, tol=5e-2)  # bf16 sums differ in the last bits; the lists must agree
