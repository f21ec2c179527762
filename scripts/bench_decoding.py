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
                same weights (`sidrec.backends.vllm.VllmRanker`), on the users of (a) and (b); its lists are compared
                with (c)'s. Engine start-up is reported apart (vllm_init_s), not in s/user.
Prompts come from ../shared/data/Amazon's test split when present, else from a generated synthetic catalog. The model
is random-init (timings and equality do not depend on training). The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from sidrec.data import load_rec_dataset
from sidrec.data.prompts import fit_to_length
from sidrec.data.synthetic import make_synthetic_dataset
from sidrec.data.tasks import build_sid_seq, build_tasks
from sidrec.decoding import RankedItems, left_pad, rank_items, rankings_match, sample_items
from sidrec.models.tiny import build_local_tokenizer, build_shaped_model, build_tiny_model, tokenizer_corpus

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


def bench_model(tokenizer, args, device):
    """The random-init model every method runs: ``--shape`` (tiny: 4 layers, 256 wide) in ``--dtype``, eval mode."""
    with torch.device(device):
        if args.shape == "tiny":
            model = build_tiny_model(
                tokenizer, hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=1024
            )
        else:
            model = build_shaped_model(tokenizer, args.shape)
    return model.to(getattr(torch, args.dtype)).eval()


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
    model = bench_model(tokenizer, args, device)
    rows = data.splits["test"]
    prompts = [r["prompt"] for r in fit_to_length(build_sid_seq(rows), tokenizer, 512)]
    return data, tokenizer, model, prompts, source, device


def vllm_setup(model, tokenizer, trie, args):
    """(e): the benchmark's model saved and loaded into a vLLM engine; returns the ranker and the start-up time."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from sidrec.backends.vllm import VllmRanker, make_llm

    path = os.path.join(tempfile.mkdtemp(), "model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    start = time.perf_counter()
    llm = make_llm(path, dtype=args.dtype, enforce_eager=True)
    return VllmRanker(llm, tokenizer, trie), time.perf_counter() - start


def stats(values: list[float]) -> dict:
    """Median, min and max of repeated measurements (rounded for the JSON)."""
    ordered = sorted(values)
    return {"median": round(statistics.median(ordered), 5), "min": round(ordered[0], 5), "max": round(ordered[-1], 5)}


def repeated(methods: dict, repeats: int) -> dict[str, list]:
    """Run every method once per repeat, interleaved (a drift of the machine hits all of them alike); returns each
    method's list of ``(output, seconds)``."""
    runs: dict[str, list] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, (fn, args) in methods.items():
            runs[name].append(timed(fn, *args, device="cuda" if torch.cuda.is_available() else "cpu"))
    return runs


def rollout_row(model, tokenizer, trie, prompts, group: int, batch: int, repeats: int) -> dict:
    """GRPO rollouts of ``group`` completions per prompt: sidrec's beam rollout (`rank_items`, tree) against TRL's
    default rollout, ``generate(do_sample=True)`` with the constraint processor (`sample_items`)."""
    methods = {
        "sidrec_beam_tree": (rank_items, (model, tokenizer, prompts, trie, group, batch, False, "tree")),
        "trl_generate_sample": (sample_items, (model, tokenizer, prompts, trie, group, 1.0, batch)),
    }
    runs = repeated(methods, repeats)
    per = {name: [t for _, t in r] for name, r in runs.items()}
    ratios = [b / a for a, b in zip(per["sidrec_beam_tree"], per["trl_generate_sample"], strict=True)]
    return {
        "prompts": len(prompts),
        "group": group,
        "s_per_rollout_batch": {name: stats(t) for name, t in per.items()},
        "speedup_vs_trl_generate": stats(ratios),
        "invalid": runs["sidrec_beam_tree"][0][0].invalid,
    }


def synthetic_catalog(size: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """``size`` distinct random 3-level SIDs of 256 codes per level (up to 16.7M)."""
    import random

    rng = random.Random(seed)
    seen: set[int] = set()
    while len(seen) < size:
        seen.add(rng.randrange(256**3))
    return [(f"<a_{c >> 16}>", f"<b_{(c >> 8) & 255}>", f"<c_{c & 255}>") for c in sorted(seen)]


def tensor_bytes(trie) -> int:
    tensors = [trie.sid_token_ids, *trie.level_token_ids, *trie.token_to_local, *trie.children]
    return sum(t.numel() * t.element_size() for t in tensors)


def catalog_scaling(args) -> list[dict]:
    """Per catalog size: trie build time and memory, per-user tree decode time against the forward floor (median of
    ``repeats``), and top-K identity against the slow reference decoder (HF generate + processor) on a sample."""
    from sidrec.sid import SidVocab

    sizes = [int(s) for s in args.catalog_sizes.split(",")]
    users, sample, n = args.fast_users or 32, min(args.slow_users or 4, 8), (args.beams or [50])[-1]
    rows = []
    for size in sizes:
        vocab = SidVocab.from_sids(synthetic_catalog(size))
        texts = ["".join(s) for s in vocab.sids[:2000]]
        tokenizer = build_local_tokenizer(texts, 600, vocab)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = bench_model(tokenizer, args, device)
        start = time.perf_counter()
        trie = vocab.compile(tokenizer).to(device)
        build_s = time.perf_counter() - start
        import random

        rng = random.Random(1)
        prompts = ["".join("".join(vocab.sids[rng.randrange(size)]) for _ in range(10)) for _ in range(users)]
        encoded = sorted(tokenizer(prompts, add_special_tokens=False)["input_ids"], key=len)
        rank_items(model, tokenizer, prompts[:2], trie, 4, 2, False, "tree")  # warm-up
        methods = {
            "tree": (rank_items, (model, tokenizer, prompts, trie, n, args.fast_batch, False, "tree")),
            "floor": (floor_forwards, (model, encoded, trie, n, args.fast_batch, tokenizer.pad_token_id)),
        }
        runs = repeated(methods, args.repeats)
        tree_s = [t / users for _, t in runs["tree"]]
        floor_s = [t / users for _, t in runs["floor"]]
        tree = runs["tree"][0][0]
        reference = rank_items(model, tokenizer, prompts[:sample], trie, n, args.slow_batch, False, "generate")
        subset = RankedItems(tree.sids[:sample], tree.scores[:sample], tree.invalid)
        row = {
            "catalog_size": size,
            "trie_sids": trie.num_sids,
            "distinct_prefixes": [int(c.shape[0]) for c in trie.children],
            "trie_build_s": round(build_s, 3),
            "trie_bytes": tensor_bytes(trie),
            "trie_bytes_per_item": round(tensor_bytes(trie) / size, 1),
            "num_beams": n,
            "users": users,
            "s_per_user": {"tree": stats(tree_s), "floor": stats(floor_s)},
            "ratio_to_floor": stats([a / b for a, b in zip(tree_s, floor_s, strict=True)]),
            "identical_topk": rankings_match(reference, subset),
            "reference_users": sample,
            "invalid": tree.invalid + reference.invalid,
        }
        rows.append(row)
        print(
            f"catalog {size:>9,}: trie {build_s:6.2f} s {row['trie_bytes'] / 2**20:7.1f} MiB "
            f"({row['trie_bytes_per_item']:.0f} B/item); tree {row['s_per_user']['tree']['median']:.4f} s/user, "
            f"floor {row['s_per_user']['floor']['median']:.4f}, ratio {row['ratio_to_floor']['median']:.3f}, "
            f"identical {row['identical_topk']}",
            file=sys.stderr,
        )
        del model, trie
    return rows


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
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of every method; median, min, max")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads, pinned for the whole run")
    parser.add_argument("--rollout_prompts", type=int, default=32, help="prompts of the GRPO rollout row (0: skip)")
    parser.add_argument(
        "--catalog-sizes", dest="catalog_sizes", default=None,
        help="e.g. 10000,100000,1000000: synthetic catalogs of these sizes instead of the comparison of methods",
    )  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.catalog_sizes:
        rows = catalog_scaling(args)
        summary = {
            "mode": "catalog_sizes",
            "shape": args.shape,
            "dtype": args.dtype,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "rows": rows,
            "identical_topk": all(r["identical_topk"] for r in rows),
            "max_ratio_to_floor": max(r["ratio_to_floor"]["median"] for r in rows),
        }
        print(json.dumps(summary))
        return summary

    beams = args.beams or ([50] if args.quick else [10, 20, 50])
    slow_users = args.slow_users or (6 if args.quick else 48)
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
        f"sids={trie.num_sids} repeats={args.repeats}",
        file=sys.stderr,
    )
    rank = lambda p, n, b, d: rank_items(model, tokenizer, p, trie, n, b, show_progress=False, decoder=d)  # noqa: E731
    # Warm-up: every method once on a few users (allocator, kernels, first-call costs) before anything is timed.
    rank(fast_prompts[:2], 4, 2, "tree")
    rank(slow_prompts[:2], 4, 2, "generate")
    naive_search(model, encoded[:2], trie, 4, 2, pad_id)
    floor_forwards(model, encoded_fast[:2], trie, 4, 2, pad_id)
    vllm_ranker, vllm_init = vllm_setup(model, tokenizer, trie, args) if args.vllm else (None, None)
    if vllm_ranker is not None:
        vllm_ranker.rank(fast_prompts[:2], 4, 2, False)  # warm-up
    results = []
    for n in beams:
        methods = {
            "naive": (naive_search, (model, encoded, trie, n, args.slow_batch, pad_id)),
            "generate": (rank, (slow_prompts, n, args.slow_batch, "generate")),
            "tree": (rank, (fast_prompts, n, args.fast_batch, "tree")),
            "floor": (floor_forwards, (model, encoded_fast, trie, n, args.fast_batch, pad_id)),
        }
        if vllm_ranker is not None:
            methods["vllm"] = (vllm_ranker.rank, (slow_prompts, n, args.fast_batch, False))
        runs = repeated(methods, args.repeats)
        users = {"naive": len(slow_prompts), "generate": len(slow_prompts), "vllm": len(slow_prompts)}
        per = {name: [t / users.get(name, len(fast_prompts)) for _, t in r] for name, r in runs.items()}
        gen, tree = runs["generate"][0][0], runs["tree"][0][0]
        subset = RankedItems(tree.sids[:slow_users], tree.scores[:slow_users], tree.invalid)

        def ratio(a, b, per=per):
            return stats([x / y for x, y in zip(per[a], per[b], strict=True)])

        row = {
            "num_beams": n,
            "s_per_user": {name: stats(t) for name, t in per.items()},
            "speedup_vs_naive": ratio("naive", "tree"),
            "speedup_vs_generate": ratio("generate", "tree"),
            "ratio_to_floor": ratio("tree", "floor"),
            "identical_topk": rankings_match(gen, subset),
            "exact_topk": gen.sids == subset.sids,
            "invalid": tree.invalid + gen.invalid,
        }
        if vllm_ranker is not None:
            ranked = runs["vllm"][0][0]
            row.update(
                vllm_vs_tree=ratio("vllm", "tree"),
                vllm_identical_topk=rankings_match(subset, ranked),
                vllm_exact_topk=subset.sids == ranked.sids,
                vllm_invalid=ranked.invalid,
            )
        results.append(row)
    rollout = None
    if args.rollout_prompts:
        rollout = rollout_row(model, tokenizer, trie, fast_prompts[: args.rollout_prompts], 16, 8, args.repeats)
    med = lambda r, k: r["s_per_user"][k]["median"] if k in r["s_per_user"] else float("nan")  # noqa: E731
    print(
        f"{'beams':>5} {'(a) naive':>10} {'(b) generate':>12} {'(c) tree':>9} {'(d) floor':>9} {'(e) vllm':>9}  s/user (median)"
    )
    for r in results:
        e = f"{med(r, 'vllm'):>9.4f}" if "vllm" in r["s_per_user"] else f"{'-':>9}"
        print(
            f"{r['num_beams']:>5} {med(r, 'naive'):>10.4f} {med(r, 'generate'):>12.4f} {med(r, 'tree'):>9.4f} "
            f"{med(r, 'floor'):>9.4f} {e}"
        )
    print(f"{'beams':>5} {'c vs a (min-max)':>20} {'c vs b (min-max)':>20} {'c / d (min-max)':>22} {'identical':>9}")
    for r in results:
        a, b, d = r["speedup_vs_naive"], r["speedup_vs_generate"], r["ratio_to_floor"]
        print(
            f"{r['num_beams']:>5} {a['median']:>6.1f}x ({a['min']:.1f}-{a['max']:.1f}) "
            f"{b['median']:>6.1f}x ({b['min']:.1f}-{b['max']:.1f}) {d['median']:>7.3f} ({d['min']:.3f}-{d['max']:.3f}) "
            f"{str(r['identical_topk']):>9}"
        )
    if rollout:
        s = rollout["s_per_rollout_batch"]
        print(
            f"GRPO rollout, {rollout['prompts']} prompts x G={rollout['group']}: sidrec beam (tree) "
            f"{s['sidrec_beam_tree']['median']:.3f} s, TRL generate + processor (sampling) "
            f"{s['trl_generate_sample']['median']:.3f} s, {rollout['speedup_vs_trl_generate']['median']:.1f}x"
        )
    last = results[-1]
    summary = {
        "data": source,
        "shape": args.shape,
        "dtype": args.dtype,
        "device": device,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "users_slow": len(slow_prompts),
        "users_fast": len(fast_prompts),
        "num_beams": last["num_beams"],
        # Medians of the per-repeat ratios (min and max in by_beams).
        **{k: last[k]["median"] for k in ("speedup_vs_naive", "speedup_vs_generate", "ratio_to_floor")},
        "identical_topk": all(r["identical_topk"] for r in results),
        "invalid": sum(r["invalid"] for r in results),
        "s_per_user": {k: v["median"] for k, v in last["s_per_user"].items()},
        "by_beams": results,
        "grpo_rollout": rollout,
    }
    if vllm_ranker is not None:
        import vllm

        summary["vllm"] = {
            "version": vllm.__version__,
            "init_s": round(vllm_init, 2),
            "vllm_vs_tree": last["vllm_vs_tree"],
            **{k: last[k] for k in ("vllm_identical_topk", "vllm_invalid")},
            "users": len(slow_prompts),
        }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
