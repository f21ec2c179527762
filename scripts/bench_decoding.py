"""Benchmark SID-constrained beam search: MiniOneRec-style decoding vs ours, same model, prompts and machine.

    python scripts/bench_decoding.py --quick            # make bench-quick: < 2 minutes on 2 CPU cores
    python scripts/bench_decoding.py                    # make bench: more users, beam widths 10, 20, 50
    python scripts/bench_decoding.py --shape qwen2.5-1.5b --dtype bfloat16 --fast_users 0   # GPU, whole test set

Methods, each timed on the same prompts (s/user = wall time / users):
  (a) naive:    HF generate + a per-beam Python dict processor written the way MiniOneRec's works
                (a dict keyed by the joined token ids of each prefix, a loop over every beam per step);
  (b) generate: HF generate + sidrec's tensor processor (`rank_items(decoder="generate")`);
  (c) tree:     sidrec's constrained beam search, one prefill per prompt (`rank_items(decoder="tree")`);
  (d) floor:    the model forwards alone that any shared-prompt decode needs (one prefill + one step per SID token
                and EOS for all beams), no constraint and no search;
  (e) vllm:     with --vllm (in .venv-vllm), the same constrained beam search driven over a vLLM engine holding the
                same weights (`sidrec.vllm_backend.VllmRanker`), on the users of (a) and (b); its lists are compared
                with (c)'s. Engine start-up is reported apart (vllm_init_s), not in s/user.
Prompts come from ../shared/data/Amazon's test split when present, else from a generated synthetic catalog. The model
is random-init (timings and equality do not depend on training). The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from sidrec.data import load_rec_dataset
from sidrec.data.prompts import build_sid_seq, build_tasks, fit_to_length
from sidrec.data.synthetic import make_synthetic_dataset
from sidrec.decoding import RankedItems, left_pad, rank_items, rankings_match
from sidrec.modeling import build_local_tokenizer, build_shaped_model, build_tiny_model, tokenizer_corpus

REAL_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "Amazon")


class DictPrefixProcessor(LogitsProcessor):
    """Baseline only: MiniOneRec-style constraint, a dict of joined prefix ids and a Python loop over every beam."""

    def __init__(self, sid_token_ids: list[list[int]], eos_token_id: int, prompt_length: int, num_beams: int):
        self.allowed: dict[str, list[int]] = {}
        for sid in sid_token_ids:
            full = sid + [eos_token_id]
            for t in range(len(full)):
                self.allowed.setdefault("-".join(map(str, full[:t])), [])
                if full[t] not in self.allowed["-".join(map(str, full[:t]))]:
                    self.allowed["-".join(map(str, full[:t]))].append(full[t])
        self.prompt_length = prompt_length
        self.num_beams = num_beams

    def __call__(self, input_ids, scores):
        mask = torch.full_like(scores, float("-inf"))
        for batch_id, beams in enumerate(input_ids.view(-1, self.num_beams, input_ids.shape[-1])):
            for beam_id, sent in enumerate(beams):
                key = "-".join(map(str, sent[self.prompt_length :].tolist()))
                mask[batch_id * self.num_beams + beam_id, self.allowed.get(key, [])] = 0
        return scores + mask


@torch.no_grad()
def naive_search(model, encoded, trie, num_beams, batch_size, pad_id):
    sid_ids = trie.sid_token_ids.tolist()
    device = next(model.parameters()).device
    for start in range(0, len(encoded), batch_size):
        input_ids, attention_mask = left_pad(encoded[start : start + batch_size], pad_id)
        processor = DictPrefixProcessor(sid_ids, trie.eos_token_id, input_ids.shape[1], num_beams)
        model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            logits_processor=LogitsProcessorList([processor]),
            num_beams=num_beams,
            num_return_sequences=num_beams,
            max_new_tokens=trie.sid_length + 1,
            do_sample=False,
            length_penalty=0.0,
            early_stopping=True,
            eos_token_id=trie.eos_token_id,
            pad_token_id=pad_id,
        )


@torch.no_grad()
def floor_forwards(model, encoded, trie, num_beams, batch_size, pad_id):
    """Prefill, then ``sid_length + 1`` forwards of ``num_beams`` tokens per prompt with each beam seeing only its
    own chain: the model work of a shared-prompt decode, without any search."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    tokens = trie.level_token_ids[0][:1].to(device)
    for start in range(0, len(encoded), batch_size):
        input_ids, attention_mask = (t.to(device) for t in left_pad(encoded[start : start + batch_size], pad_id))
        batch, width = input_ids.shape
        cache = DynamicCache(config=model.config)
        model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0),
            past_key_values=cache,
            logits_to_keep=1,
        )
        beams = torch.arange(num_beams, device=device)
        for step in range(trie.sid_length):
            total = width + num_beams * (step + 1)
            seen = torch.zeros(batch, 1, num_beams, total, dtype=torch.bool, device=device)
            seen[:, 0, :, :width] = attention_mask.bool()[:, None, :]
            for s in range(step + 1):
                seen[:, 0, beams, width + num_beams * s + beams] = True
            mask = torch.zeros(seen.shape, dtype=dtype, device=device).masked_fill(~seen, torch.finfo(dtype).min)
            model(
                input_ids=tokens.expand(batch, num_beams),
                attention_mask=mask,
                position_ids=(attention_mask.sum(-1, keepdim=True) + step).expand(batch, num_beams),
                past_key_values=cache,
            )


def timed(fn, *args, device="cpu"):
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn(*args)
    if device == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def setup(args):
    if os.path.isdir(REAL_DATA) and not args.synthetic:
        data = load_rec_dataset(REAL_DATA, "Industrial_and_Scientific", ("train", "test"))
        source = "Industrial_and_Scientific"
    else:
        from sidrec.data.synthetic import SyntheticConfig

        data_dir = make_synthetic_dataset(os.path.join(tempfile.mkdtemp(), "synthetic"), SyntheticConfig())
        data = load_rec_dataset(data_dir, "Synthetic", ("train", "test"))
        source = "synthetic"
    examples = build_tasks(["sid_seq", "item_alignment"], data.splits["train"][:2000], data.catalog)
    tokenizer = build_local_tokenizer(tokenizer_corpus(data.catalog, examples), 2000, data.catalog.vocab)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    with torch.device(device):
        if args.shape == "tiny":
            model = build_tiny_model(
                tokenizer, hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=1024
            )
        else:
            model = build_shaped_model(tokenizer, args.shape)
    model = model.to(dtype).eval()
    rows = data.splits["test"]
    prompts = [r["prompt"] for r in fit_to_length(build_sid_seq(rows), tokenizer, 512)]
    return data, tokenizer, model, prompts, source, device


def vllm_setup(model, tokenizer, trie, args):
    """(e): the benchmark's model saved and loaded into a vLLM engine; returns the ranker and the start-up time."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from sidrec.vllm_backend import VllmRanker, make_llm

    path = os.path.join(tempfile.mkdtemp(), "model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    start = time.perf_counter()
    llm = make_llm(path, dtype=args.dtype, enforce_eager=True)
    return VllmRanker(llm, tokenizer, trie), time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few users, 50 beams only (make bench-quick)")
    parser.add_argument("--shape", default="tiny", help="tiny (4 layers, 256 hidden) or qwen2.5-0.5b/qwen2.5-1.5b")
    parser.add_argument("--dtype", default="float32", help="model dtype, e.g. bfloat16 on GPU")
    parser.add_argument("--beams", type=int, nargs="+", default=None, help="beam widths (default 50, or 10 20 50)")
    parser.add_argument("--slow_users", type=int, default=None, help="users for (a) and (b)")
    parser.add_argument("--fast_users", type=int, default=None, help="users for (c) and (d); 0 = the whole split")
    parser.add_argument("--slow_batch", type=int, default=8, help="prompts per generate call for (a) and (b)")
    parser.add_argument("--fast_batch", type=int, default=32, help="prompts per batch for (c) and (d)")
    parser.add_argument("--synthetic", action="store_true", help="use synthetic prompts even if real data exists")
    parser.add_argument("--vllm", action="store_true", help="add (e): the vLLM backend (needs `make install-vllm`)")
    args = parser.parse_args(argv)
    beams = args.beams or ([50] if args.quick else [10, 20, 50])
    slow_users = args.slow_users or (12 if args.quick else 48)
    fast_users = args.fast_users if args.fast_users is not None else (96 if args.quick else 512)

    data, tokenizer, model, prompts, source, device = setup(args)
    fast_prompts = prompts if fast_users == 0 else prompts[: max(fast_users, slow_users)]
    slow_prompts = fast_prompts[:slow_users]
    trie = data.catalog.vocab.compile(tokenizer).to(device)
    pad_id = tokenizer.pad_token_id
    encoded = tokenizer(slow_prompts, add_special_tokens=False)["input_ids"]
    # Length-sorted like rank_items' batches, so the floor pays no more padding than the search does.
    encoded_fast = sorted(tokenizer(fast_prompts, add_special_tokens=False)["input_ids"], key=len)
    print(
        f"data={source} users slow={len(slow_prompts)} fast={len(fast_prompts)} shape={args.shape} "
        f"dtype={args.dtype} device={device} threads={torch.get_num_threads()} vocab={model.config.vocab_size} "
        f"sids={trie.num_sids}",
        file=sys.stderr,
    )
    rank = lambda p, n, b, d: rank_items(model, tokenizer, p, trie, n, b, show_progress=False, decoder=d)  # noqa: E731
    rank(fast_prompts[:2], 4, 2, "tree")  # warm-up
    vllm_ranker, vllm_init = vllm_setup(model, tokenizer, trie, args) if args.vllm else (None, None)
    if vllm_ranker is not None:
        vllm_ranker.rank(fast_prompts[:2], 4, 2, False)  # warm-up
    results = []
    for n in beams:
        _, t_naive = timed(naive_search, model, encoded, trie, n, args.slow_batch, pad_id, device=device)
        gen, t_gen = timed(rank, slow_prompts, n, args.slow_batch, "generate", device=device)
        tree, t_tree = timed(rank, fast_prompts, n, args.fast_batch, "tree", device=device)
        _, t_floor = timed(floor_forwards, model, encoded_fast, trie, n, args.fast_batch, pad_id, device=device)
        subset = RankedItems(tree.sids[:slow_users], tree.scores[:slow_users], tree.invalid)
        per = {
            "naive": t_naive / len(slow_prompts),
            "generate": t_gen / len(slow_prompts),
            "tree": t_tree / len(fast_prompts),
            "floor": t_floor / len(fast_prompts),
        }
        vllm_row = {}
        if vllm_ranker is not None:
            ranked, t_vllm = timed(vllm_ranker.rank, slow_prompts, n, args.fast_batch, False, device=device)
            per["vllm"] = t_vllm / len(slow_prompts)
            vllm_row = {
                "vllm_vs_tree": round(per["vllm"] / per["tree"], 2),
                "vllm_identical_topk": rankings_match(subset, ranked),
                "vllm_exact_topk": subset.sids == ranked.sids,
                "vllm_invalid": ranked.invalid,
            }
        results.append(
            {
                "num_beams": n,
                "s_per_user": {k: round(v, 5) for k, v in per.items()},
                "tree_wall_s": round(t_tree, 2),
                "speedup_vs_naive": round(per["naive"] / per["tree"], 2),
                "speedup_vs_generate": round(per["generate"] / per["tree"], 2),
                "ratio_to_floor": round(per["tree"] / per["floor"], 3),
                "identical_topk": rankings_match(gen, subset),
                "exact_topk": gen.sids == subset.sids,
                "invalid": tree.invalid + gen.invalid,
                **vllm_row,
            }
        )
    print(
        f"{'beams':>5} {'(a) naive':>10} {'(b) generate':>12} {'(c) tree':>9} {'(d) floor':>9} {'(e) vllm':>9}  s/user"
    )
    for r in results:
        s = r["s_per_user"]
        e = f"{s['vllm']:>9.4f}" if "vllm" in s else f"{'-':>9}"
        print(
            f"{r['num_beams']:>5} {s['naive']:>10.4f} {s['generate']:>12.4f} {s['tree']:>9.4f} {s['floor']:>9.4f} {e}"
        )
    print(f"{'beams':>5} {'c vs a':>8} {'c vs b':>8} {'c / d':>7} {'identical':>9}")
    for r in results:
        print(
            f"{r['num_beams']:>5} {r['speedup_vs_naive']:>7.1f}x {r['speedup_vs_generate']:>7.1f}x "
            f"{r['ratio_to_floor']:>7.3f} {str(r['identical_topk']):>9}"
        )
    last = results[-1]
    summary = {
        "data": source,
        "shape": args.shape,
        "dtype": args.dtype,
        "device": device,
        "threads": torch.get_num_threads(),
        "users_slow": len(slow_prompts),
        "users_fast": len(fast_prompts),
        **{k: last[k] for k in ("num_beams", "speedup_vs_naive", "speedup_vs_generate", "ratio_to_floor")},
        "identical_topk": all(r["identical_topk"] for r in results),
        "invalid": sum(r["invalid"] for r in results),
        "tree_wall_s": last["tree_wall_s"],
        "s_per_user": last["s_per_user"],
        "by_beams": results,
    }
    if vllm_ranker is not None:
        import vllm

        summary["vllm"] = {
            "version": vllm.__version__,
            "init_s": round(vllm_init, 2),
            **{k: last[k] for k in ("vllm_vs_tree", "vllm_identical_topk", "vllm_invalid")},
            "users": len(slow_prompts),
        }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
