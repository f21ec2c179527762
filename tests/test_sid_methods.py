"""SID methods behind one interface: every registered method on a catalog with known clusters, collision handling,
determinism, RQ-VAE training and dead-code reset, the index each writes, and each diagnostic on hand-made codes."""

import csv
import importlib.util
import json
import math
import os

import numpy as np
import pytest

from sidrec.codebook import (
    SID_METHODS,
    CodebookConfig,
    MethodInfo,
    build_codes,
    build_sids,
    format_diagnostics,
    register_sid_method,
    sid_diagnostics,
    write_index,
)
from sidrec.codebook.diagnostics import (
    codes_used,
    collisions,
    dead_codes,
    largest_prefix_group,
    perplexity,
    prefix_perplexity,
    reconstruction_mse,
)
from sidrec.data import load_rec_dataset
from sidrec.data.minionerec import CSV_COLUMNS
from sidrec.errors import UserError

pytest.importorskip("sklearn")
HAS_VQ = importlib.util.find_spec("vector_quantize_pytorch") is not None
HAS_FAISS = importlib.util.find_spec("faiss") is not None
needs_vq = pytest.mark.skipif(not HAS_VQ, reason="the sidmethods extra (vector-quantize-pytorch) is not installed")

# Few epochs: the blobs need no more, and the file stays within seconds.
FAST = {"rq_vae": {"epochs": 100, "hidden": [64]}, "rq_kmeans_plus": {"epochs": 10, "hidden": [32]}}
SIZES = [4, 16, 32]  # a different size per level
# (method, options): every registered method, and rq_kmeans on each k-means backend.
CASES = [(m, FAST.get(m, {})) for m in SID_METHODS] + [("rq_kmeans", {"backend": "sklearn"})]
if HAS_FAISS:
    CASES.append(("rq_kmeans", {"backend": "faiss"}))


def blobs(per_blob=30, n_blobs=4, dim=16, seed=0):
    """``n_blobs`` Gaussian blobs (sd 0.025 per dimension) whose centres have norm about 1 and are about 1.4 apart (the
    scale of normalised sentence embeddings), and each point's blob."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_blobs, dim)) / 4
    labels = np.repeat(np.arange(n_blobs), per_blob)
    return (centres[labels] + 0.025 * rng.normal(size=(len(labels), dim))).astype(np.float32), labels


def available(method):
    if not all(importlib.util.find_spec(m) for m in SID_METHODS[method].requires):
        pytest.skip(f"{method} needs {SID_METHODS[method].requires} (the sidmethods extra)")


def config(method, options, collisions="move", seed=0):
    return CodebookConfig(
        levels=3, codes=SIZES, method=method, options=dict(options), seed=seed, collisions=collisions
    )


@pytest.mark.parametrize(("method", "options"), CASES, ids=[f"{m}-{o.get('backend', '')}" for m, o in CASES])
def test_every_method_puts_each_blob_under_its_own_first_code_and_resolves_collisions(method, options):
    available(method)
    emb, labels = blobs()
    codes, report = build_codes(emb, config(method, options))
    first = codes[:, 0]
    assert all(len(set(first[labels == b])) == 1 for b in range(4))  # one code per blob ...
    assert len(set(first)) == 4  # ... and a different one for each
    assert (codes.max(0) < SIZES).all() and codes.min() >= 0  # each level within its own codebook size
    assert len({tuple(r) for r in codes.tolist()}) == len(codes)  # move: 0 collisions left
    assert report["diagnostics"]["collisions_after_resolution"] == 0
    again, _ = build_codes(emb, config(method, options))
    assert np.array_equal(codes, again)  # same seed, same codes
    extra, report = build_codes(emb, config(method, options, collisions="extra_level"))
    assert extra.shape == (120, 4) and len({tuple(r) for r in extra.tolist()}) == 120
    assert report["diagnostics"]["collisions_after_resolution"] == 0
    if "backend" in options:
        assert report["diagnostics"]["method_info"]["backend"] == options["backend"]


def test_rq_kmeans_says_which_backend_ran_and_falls_back_to_scikit_learn(monkeypatch):
    emb, _ = blobs()
    _, report = build_codes(emb, config("rq_kmeans", {}))
    assert report["diagnostics"]["method_info"]["backend"] == ("faiss" if HAS_FAISS else "sklearn")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faiss" else real(name, *a))
    _, report = build_codes(emb, config("rq_kmeans", {}))
    assert report["diagnostics"]["method_info"]["backend"] == "sklearn"
    with pytest.raises(UserError, match=r"needs faiss-cpu: pip install -e '\.\[sidmethods\]'"):
        build_codes(emb, config("rq_kmeans", {"backend": "faiss"}))


def test_a_method_whose_library_is_missing_fails_in_one_line_naming_the_extra(monkeypatch):
    real = importlib.util.find_spec
    missing = {"vector_quantize_pytorch"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a))
    emb, _ = blobs()
    for method in ("rq_vae", "rq_kmeans_plus"):
        with pytest.raises(UserError, match=r"^the SID method \w+ needs vector-quantize-pytorch: pip install -e "):
            build_codes(emb, config(method, {}))
    codes, _ = build_codes(emb, config("rq_kmeans_balanced", {}))  # needs none of them
    assert codes.shape == (120, 3)


@needs_vq
def test_rq_vae_loss_falls_and_a_code_without_items_is_reseeded():
    # Each blob collapsed to one point: 4 distinct items for 8 level-1 codes, so k-means fills 4 codes and the other
    # 4 start with no item: dead at once, and the library re-seeds them from the batch.
    emb, labels = blobs()
    collapsed = np.stack([emb[labels == b].mean(0) for b in range(4)])[labels]
    codes, info = SID_METHODS["rq_vae"].build(collapsed, [8, 2], 0, epochs=5, hidden=[32])
    assert info.details["dead_codes_reseeded"]["per_level"][0] >= 4
    codes, info = SID_METHODS["rq_vae"].build(emb, [4, 8], 0, epochs=100, hidden=[64])
    loss = info.details["loss_curve"]["loss"]
    assert len(loss) == 100 and loss[-1] < 0.5 * loss[0]
    assert isinstance(info, MethodInfo) and info.reconstruction.shape == emb.shape
    assert info.last_dist.shape == (120, 8) and np.array_equal(info.last_dist.argmin(1), codes[:, -1])


@needs_vq
def test_rq_kmeans_plus_starts_from_the_rq_kmeans_codes():
    # Zero epochs: the residual encoder is the identity and the codebooks are rq_kmeans's centroids, written into
    # ResidualVQ's EMA state; this fails if the library renames that state.
    emb, _ = blobs(seed=1)
    plain, plain_info = SID_METHODS["rq_kmeans"].build(emb, SIZES, 3)
    plus, plus_info = SID_METHODS["rq_kmeans_plus"].build(emb, SIZES, 3, epochs=0)
    assert np.array_equal(plain, plus)
    assert reconstruction_mse(emb, plus_info.reconstruction) == pytest.approx(
        reconstruction_mse(emb, plain_info.reconstruction), rel=1e-4
    )


def test_the_registry_takes_a_new_method_and_checks_names_and_options(monkeypatch):
    monkeypatch.setitem(SID_METHODS, "enumerate", None)  # removed again after the test

    @register_sid_method("enumerate")
    def enumerate_items(emb, codebook_sizes, seed, *, offset=0):
        """Item i gets the codes (i // k2, i % k2): a toy."""
        i = np.arange(len(emb)) + offset
        codes = np.stack([i // codebook_sizes[1], i % codebook_sizes[1]], axis=1)
        return codes, MethodInfo(last_dist=np.zeros((len(emb), codebook_sizes[1])), reconstruction=np.zeros_like(emb))

    emb, _ = blobs()
    codes, report = build_codes(emb, CodebookConfig(levels=2, codes=[15, 8], method="enumerate"))
    assert codes[:, 0].tolist() == np.repeat(np.arange(15), 8).tolist() and codes[:, 1].max() == 7
    assert report["diagnostics"]["options"] == {"offset": 0} and report["diagnostics"]["reconstruction_mse"] > 0
    with pytest.raises(UserError, match=r"has no option 'epochs' \(its options: offset\)"):
        CodebookConfig(method="enumerate", options={"epochs": 3})
    with pytest.raises(UserError, match="unknown SID method 'nope'; known: rq_kmeans, "):
        CodebookConfig(method="nope")
    with pytest.raises(UserError, match="contradicts method rq_vae"):
        CodebookConfig(method="rq_vae", balanced=True)
    assert CodebookConfig(balanced=False).method == "rq_kmeans" and CodebookConfig().method == "rq_kmeans_balanced"


def write_layout(root, emb) -> str:
    """The item.json of a tiny MiniOneRec layout, one item per row of ``emb`` (the CSVs: ``write_splits``)."""
    os.makedirs(os.path.join(root, "index"), exist_ok=True)
    items = {str(i): {"title": f"item {i}", "description": ""} for i in range(len(emb))}
    with open(os.path.join(root, "index", "Blobs.item.json"), "w") as f:
        json.dump(items, f)
    return str(root)


def write_splits(root, sids):
    ids = list(sids)
    for split in ("train", "valid", "test"):
        os.makedirs(os.path.join(root, split), exist_ok=True)
        with open(os.path.join(root, split, "Blobs_x.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(CSV_COLUMNS)
            for u in range(3):
                hist, target = ids[u : u + 2], ids[u + 2]
                w.writerow([f"U{u}", repr([f"item {i}" for i in hist]), f"item {target}", repr([int(i) for i in hist]),
                            target, repr(["".join(sids[i]) for i in hist]), "".join(sids[target])])  # fmt: skip


@pytest.mark.parametrize(("method", "options"), CASES[: len(SID_METHODS)], ids=list(SID_METHODS))
def test_every_method_writes_an_index_load_rec_dataset_reads(method, options, tmp_path):
    available(method)
    emb, _ = blobs()
    root = write_layout(tmp_path / method, emb)
    with open(os.path.join(root, "index", "Blobs.item.json")) as f:
        items = json.load(f)
    sids, report = build_sids(items, config(method, options), embeddings=emb)
    write_splits(root, sids)
    index = write_index(os.path.join(root, "index"), "Blobs", sids, report)
    data = load_rec_dataset(root, "Blobs")
    assert len(data.catalog.items) == 120 and all(
        row.item_sid == "".join(sids[str(row.item_id)]) for row in data.splits["test"]
    )
    with open(index) as f:
        assert json.load(f) == sids
    with open(os.path.join(root, "index", "Blobs.sid_diagnostics.json")) as f:
        diag = json.load(f)
    assert diag["method"] == method and diag["collisions_after_resolution"] == 0 and diag["items"] == 120
    assert set(diag["wall_time_s"]) >= {"embed", "method"} and len(diag["levels"]) == 3


def test_cli_method_codebook_sizes_and_embeddings(tmp_path, capsys):
    from sidrec.cli.build_sids import main

    emb, _ = blobs()
    root = write_layout(tmp_path / "src", emb)
    write_splits(root, {str(i): ["<a_0>", "<b_0>", f"<c_{i}>"] for i in range(120)})  # SIDs the CLI rewrites
    path = str(tmp_path / "emb.npy")
    np.save(path, emb)
    out = str(tmp_path / "out")
    main(["--data_dir", root, "--category", "Blobs", "--out_dir", out, "--method", "rq_kmeans",
          "--codebook_sizes", "4", "8", "8", "--embeddings", path, "--option", "backend=sklearn"])  # fmt: skip
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == os.path.join(out, "index", "Blobs.index.json")
    assert printed[0].startswith("rq_kmeans: 120 items; collisions") and "largest_prefix_group" in printed[1]
    data = load_rec_dataset(out, "Blobs")
    assert len({row.item_sid for row in data.splits["test"]}) == 3
    with open(os.path.join(out, "index", "Blobs.codebook.json")) as f:
        report = json.load(f)
    assert report["embeddings"] == path and report["config"]["codes"] == [4, 8, 8]
    assert not os.path.exists(os.path.join(out, "index", "Blobs.emb.npy"))  # no cache of given embeddings
    np.save(path, emb[:100])
    with pytest.raises(UserError, match=r"emb\.npy: 100 rows, but the catalog has 120 items"):
        main(["--data_dir", root, "--category", "Blobs", "--out_dir", out, "--force", "--embeddings", path])
    with pytest.raises(UserError, match="--codebook_sizes, or --levels and --codes, not both"):
        main(["--data_dir", root, "--category", "Blobs", "--codebook_sizes", "4", "4", "--levels", "2"])


# The hand-made case: 4 items, 2 levels. Level 1 uses codes 0, 0, 1, 1; level 2 uses 0, 1, 0, 0; items 3 and 4 share
# the full code (1, 0).
HAND = np.array([[0, 0], [0, 1], [1, 0], [1, 0]])


def test_each_diagnostic_on_a_hand_made_case():
    assert collisions(HAND) == 1
    assert codes_used(HAND) == [2, 2]
    assert dead_codes(HAND, [4, 2]) == [2, 0]
    level2 = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))  # code usage 3/4, 1/4
    assert perplexity(HAND) == pytest.approx([2.0, level2]) and level2 == pytest.approx(1.7548, abs=1e-4)
    # prefixes at depth 2: (0, 0), (0, 1), (1, 0) with shares 1/4, 1/4, 1/2: exp(H) = 2 ** 1.5
    assert prefix_perplexity(HAND) == pytest.approx([2.0, 2 * math.sqrt(2)])
    assert largest_prefix_group(HAND) == [2, 2]
    assert reconstruction_mse(np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[0.0, 2.0], [1.0, 1.0]])) == 2.0
    after = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])  # item 4 moved to the free code (1, 1)
    diag = sid_diagnostics(HAND, after, [2, 2], np.zeros((4, 3)), np.ones((4, 3)))
    assert (diag["collisions_before_resolution"], diag["collisions_after_resolution"]) == (1, 0)
    assert diag["reconstruction_mse"] == 3.0
    assert [lv["dead_codes"] for lv in diag["levels"]] == [0, 0]
    assert [lv["largest_prefix_group"] for lv in diag["levels"]] == [2, 1]
    assert diag["levels"][1]["prefix_perplexity"] == 4.0
    table = format_diagnostics(diag).splitlines()
    assert table[0].startswith("SIDs: 4 items; collisions 1 before resolution, 0 after") and len(table) == 4
    extra = sid_diagnostics(HAND, np.column_stack([HAND, [0, 0, 0, 1]]), [2, 2], np.zeros((4, 1)), np.zeros((4, 1)))
    assert [lv["codebook_size"] for lv in extra["levels"]] == [2, 2, 2]  # the extra level counts the last size
