"""The residual k-means methods: ``rq_kmeans`` (plain) and ``rq_kmeans_balanced`` (sidrec's original method).

Each level clusters the residual left by the levels before it. The balanced variant assigns items to the level's
centroids under a capacity of ``ceil(n / k)`` per code (nearest centroid with room left, most decided items first),
keeping clusters even as MiniOneRec's constrained RQ-KMeans does; ``solver="exact"`` solves that capacity problem
exactly instead (k-means-constrained, a min-cost flow in every iteration: slower). The k-means itself runs on
scikit-learn (``KMeans``, k-means++ seeding) or faiss (``faiss.Kmeans``, k-means++ seeding, much faster on large
catalogs); ``backend="auto"`` takes faiss when it is installed and says which ran.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from typing import TYPE_CHECKING

import numpy as np

from sidrec.codebook.methods import MethodInfo, get_sid_method, register_sid_method, require
from sidrec.errors import UserError

if TYPE_CHECKING:
    from sidrec.codebook.config import CodebookConfig

logger = logging.getLogger("sidrec.codebook")

BACKENDS = ("auto", "sklearn", "faiss")


def balanced_assign(dist: np.ndarray, capacity: int) -> np.ndarray:
    """Assign each row to a column, at most ``capacity`` rows per column, preferring near columns.

    Rows are placed in order of how much they lose if pushed from their best column to their second best (most
    decided first), each to its nearest column with room left.

    Example:
    >>> balanced_assign(np.array([[0.0, 1.0], [0.1, 1.0], [0.2, 0.3]]), capacity=2).tolist()
    [0, 0, 1]
    """
    n, k = dist.shape
    if capacity * k < n:
        raise ValueError(f"capacity {capacity} x {k} columns cannot hold {n} rows")
    order_cols = np.argsort(dist, axis=1, kind="stable")
    best = np.take_along_axis(dist, order_cols[:, :2], axis=1) if k > 1 else np.zeros((n, 2))
    regret = best[:, 1] - best[:, 0] if k > 1 else np.zeros(n)
    load = np.zeros(k, dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    for row in np.argsort(-regret, kind="stable"):
        for col in order_cols[row]:
            if load[col] < capacity:
                out[row] = col
                load[col] += 1
                break
    return out


def euclidean(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """``[n, k]`` Euclidean distances, in float64."""
    sq = (x**2).sum(1)[:, None] - 2 * x @ centers.T + (centers**2).sum(1)[None, :]
    return np.sqrt(np.maximum(sq, 0.0))


def pick_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise UserError(f"k-means backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "faiss" if importlib.util.find_spec("faiss") is not None else "sklearn"
    require("faiss" if backend == "faiss" else "sklearn", f"the k-means backend {backend}")
    return backend


def fit_level(x: np.ndarray, k: int, seed: int, n_init: int, backend: str, faiss_iters: int):
    """One level's k-means: ``(labels, centers, dist)``, ``dist`` the ``[n, k]`` distances to the centers."""
    if backend == "sklearn":
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
        km.fit(x)
        return km.labels_.astype(np.int64), km.cluster_centers_, km.transform(x)
    import faiss

    km = faiss.Kmeans(
        x.shape[1], k, niter=faiss_iters, nredo=n_init, seed=seed, min_points_per_centroid=1,
        max_points_per_centroid=max(256, len(x)), init_method=faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
    )  # fmt: skip
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    centers = km.centroids.astype(np.float64)
    dist = euclidean(x, centers)
    return dist.argmin(1).astype(np.int64), centers, dist


def exact_balanced_level(x: np.ndarray, k: int, seed: int, n_init: int):
    """One level's k-means under an exact capacity of ``ceil(n / k)`` per cluster (k-means-constrained)."""
    require("k_means_constrained", "solver=exact")
    from k_means_constrained import KMeansConstrained

    km = KMeansConstrained(n_clusters=k, size_max=math.ceil(len(x) / k), n_init=n_init, random_state=seed)
    labels = km.fit_predict(x).astype(np.int64)
    return labels, km.cluster_centers_, euclidean(x, km.cluster_centers_)


def residual_levels(
    emb: np.ndarray,
    sizes: list[int],
    seed: int,
    *,
    balanced: bool,
    n_init: int = 3,
    backend: str = "sklearn",
    faiss_iters: int = 50,
    solver: str = "greedy",
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Residual k-means: codes ``[n, levels]``, per level the ``[n, k]`` distances and the ``[k, dim]`` centroids.

    A level gets ``min(size, distinct residuals)`` codes. Level ``l`` is seeded with ``seed + l``.
    """
    if solver not in ("greedy", "exact"):
        raise UserError(f"solver must be greedy or exact, got {solver!r}")
    residual = emb.astype(np.float64)
    codes, dists, books = [], [], []
    for level, size in enumerate(sizes):
        k = min(size, len(np.unique(residual.round(8), axis=0)))
        if balanced and solver == "exact":
            labels, centers, dist = exact_balanced_level(residual, k, seed + level, n_init)
        else:
            labels, centers, dist = fit_level(residual, k, seed + level, n_init, backend, faiss_iters)
        if balanced and solver == "greedy":
            labels = balanced_assign(dist, math.ceil(len(residual) / k))
            centers = np.stack(
                [residual[labels == c].mean(0) if (labels == c).any() else centers[c] for c in range(k)]
            )
        codes.append(labels)
        dists.append(dist)
        books.append(centers)
        residual = residual - centers[labels]
        logger.info("level %d: %d codes used of %d", level + 1, len(np.unique(labels)), k)
    return np.stack(codes, axis=1), dists, books


def residual_kmeans(emb: np.ndarray, cfg: CodebookConfig) -> tuple[np.ndarray, list[np.ndarray]]:
    """Residual k-means codes `[n, levels]` and, per level, each item's distances to that level's centroids."""
    if cfg.method not in ("rq_kmeans", "rq_kmeans_balanced"):
        raise UserError(f"residual_kmeans runs the k-means methods, not {cfg.method}")
    opts = {**get_sid_method(cfg.method).options, **cfg.options}
    opts["backend"] = pick_backend(opts["backend"])
    codes, dists, _ = residual_levels(emb, cfg.codes_per_level, cfg.seed, balanced=cfg.balanced, **opts)
    return codes, dists


def _run(emb, sizes, seed, balanced: bool, **opts) -> tuple[np.ndarray, MethodInfo]:
    opts["backend"] = pick_backend(opts["backend"])
    codes, dists, books = residual_levels(emb, sizes, seed, balanced=balanced, **opts)
    recon = sum(book[codes[:, level]] for level, book in enumerate(books))
    exact = balanced and opts.get("solver") == "exact"
    details = {"backend": "k-means-constrained" if exact else opts["backend"], "levels_k": [len(b) for b in books]}
    return codes, MethodInfo(last_dist=dists[-1], reconstruction=recon, details=details)


@register_sid_method("rq_kmeans")
def rq_kmeans(
    emb: np.ndarray, codebook_sizes: list[int], seed: int, *, n_init: int = 3, backend: str = "auto",
    faiss_iters: int = 50,
) -> tuple[np.ndarray, MethodInfo]:  # fmt: skip
    """Plain residual k-means (faiss when installed, else scikit-learn), as MiniOneRec's RQ-KMeans."""
    return _run(emb, codebook_sizes, seed, False, n_init=n_init, backend=backend, faiss_iters=faiss_iters)


@register_sid_method("rq_kmeans_balanced")
def rq_kmeans_balanced(
    emb: np.ndarray, codebook_sizes: list[int], seed: int, *, n_init: int = 3, backend: str = "sklearn",
    faiss_iters: int = 50, solver: str = "greedy",
) -> tuple[np.ndarray, MethodInfo]:  # fmt: skip
    """Residual k-means with at most ceil(n / k) items per code at every level (sidrec's original method)."""
    return _run(
        emb, codebook_sizes, seed, True, n_init=n_init, backend=backend, faiss_iters=faiss_iters, solver=solver
    )
