"""The trained residual quantisers: ``rq_vae`` and ``rq_kmeans_plus``, on vector-quantize-pytorch's ``ResidualVQ``.

Both train an encoder, a ``ResidualVQ`` and a decoder on reconstruction (squared distance in embedding space) plus
the quantiser's loss. The ``ResidualVQ`` keeps EMA codebooks (``ema_decay``), adds the commitment loss (``beta``),
re-seeds a code from the batch when its EMA usage falls below ``dead_code_threshold`` items of the catalog per epoch,
and, with ``balance_weight`` > 0, adds a balance term (its codebook-diversity loss: minus the entropy of the batch's
mean soft assignment).

- ``rq_vae``: an MLP encoder to a small latent and an MLP decoder back (MiniOneRec's RQ-VAE, smaller by default).
- ``rq_kmeans_plus``: RQ-KMeans+: the encoder and decoder are residual (``x + mlp(x)``, the MLP's last layer zero),
  so training starts from exactly the ``rq_kmeans`` codes, and the codebooks start as ``rq_kmeans``'s centroids.

The codebooks of both start as residual k-means (k-means++ seeded, :mod:`sidrec.codebook.kmeans`) of the whole
catalog's initial latents, not the library's k-means of the first batch: every item counts, and the same code serves
both methods. Training runs on CPU by default (``device``), seeded (same seed, same codes on CPU). The defaults were
chosen on the 3,686-item Industrial catalog (one thread, under a minute each): ``ema_decay=0.8`` for ``rq_vae``
(0.99 left 57 of 256 first-level codes in use after 50 epochs; 0.8 uses all 256), and ``dead_code_threshold=1``:
re-seeding the rarely used codes of plain k-means' second and third levels took ``rq_kmeans_plus`` from 829
collisions before resolution (half that threshold: 839) to 529.
"""

from __future__ import annotations

import logging

import numpy as np

from sidrec.codebook.kmeans import pick_backend, residual_levels
from sidrec.codebook.methods import MethodInfo, register_sid_method, require

logger = logging.getLogger("sidrec.codebook")


def _mlp(dims: list[int], zero_last: bool = False):
    from torch import nn

    layers = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.SiLU())
    if zero_last:  # a residual branch that starts as zero: the identity map
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


def _set_codebooks(rvq, books: list[np.ndarray], counts: list[np.ndarray]) -> None:
    """Start each level's EMA codebook at ``books`` with usage ``counts`` (a zero count is a dead code at once).

    ``ResidualVQ`` has no public setter: this writes the EMA state of each layer's ``_codebook`` (``embed``,
    ``embed_avg``, ``cluster_size``, ``initted``); tests/test_sid_methods.py fails if those names change."""
    import torch

    for layer, book, count in zip(rvq.layers, books, counts, strict=True):
        cb = layer._codebook
        embed = torch.as_tensor(book, dtype=cb.embed.dtype)[None]
        size = torch.as_tensor(count, dtype=cb.cluster_size.dtype)[None]
        cb.embed.data.copy_(embed)
        cb.cluster_size.data.copy_(size)
        cb.embed_avg.data.copy_(embed * size[..., None])
        cb.initted.data.copy_(torch.tensor(True))


def _pad(book: np.ndarray, k: int) -> np.ndarray:
    """A level with fewer distinct residuals than codes: the missing codes start as copies (dead, re-seeded)."""
    return book if len(book) == k else np.concatenate([book, book[np.arange(k - len(book)) % len(book)]])


def train_residual_quantizer(
    emb: np.ndarray,
    codebook_sizes: list[int],
    seed: int,
    *,
    residual: bool,
    hidden: list[int],
    latent_dim: int | None = None,
    codebooks: list[np.ndarray] | None = None,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 1024,
    beta: float = 0.25,
    balance_weight: float = 0.0,
    dead_code_threshold: float = 1.0,
    ema_decay: float = 0.99,
    n_init: int = 3,
    backend: str = "auto",
    device: str = "cpu",
) -> tuple[np.ndarray, MethodInfo]:
    """Train encoder, ``ResidualVQ`` and decoder on ``emb``; return the codes and a :class:`MethodInfo`.

    ``residual``: residual encoder/decoder at the input width (RQ-KMeans+), else MLPs to ``latent_dim``.
    ``codebooks``: the starting codebooks (one ``[k, latent]`` array per level, each code's usage taken as even);
    default: residual k-means of the initial latents. ``details`` records the loss per epoch and the dead codes
    re-seeded per level.
    """
    require("vector_quantize_pytorch", "rq_vae and rq_kmeans_plus")
    import importlib.metadata

    import torch
    from vector_quantize_pytorch import ResidualVQ

    n, dim = emb.shape
    latent = dim if residual else int(latent_dim or 32)
    sizes = [int(k) for k in codebook_sizes]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        x = torch.as_tensor(emb, dtype=torch.float32, device=device)
        enc = _mlp([dim, *hidden, latent], zero_last=residual).to(device)
        dec = _mlp([latent, *reversed(hidden), dim], zero_last=residual).to(device)

        def encode(v):
            return v + enc(v) if residual else enc(v)

        def decode(q):
            return q + dec(q) if residual else dec(q)

        batch = min(batch_size, n)
        # The library's threshold is on the EMA of a code's items per batch; ours is in items of the whole catalog.
        rvq = ResidualVQ(
            dim=latent, codebook_size=tuple(sizes), kmeans_init=False, commitment_weight=beta, decay=ema_decay,
            threshold_ema_dead_code=dead_code_threshold * batch / n, codebook_diversity_loss_weight=balance_weight,
        ).to(device)  # fmt: skip
        used_backend = ""
        if codebooks is None:
            used_backend = pick_backend(backend)
            with torch.no_grad():
                z0 = encode(x).double().cpu().numpy()
            codes0, _, books = residual_levels(z0, sizes, seed, balanced=False, n_init=n_init, backend=used_backend)
            codebooks = [_pad(b, k) for b, k in zip(books, sizes, strict=True)]
            counts = [np.bincount(codes0[:, lv], minlength=k) * batch / n for lv, k in enumerate(sizes)]
        else:
            counts = [np.full(k, batch / k) for k in sizes]
        _set_codebooks(rvq, codebooks, counts)

        reseeded = [0] * len(sizes)
        for level, layer in enumerate(rvq.layers):  # count the library's dead-code re-seeding, level by level
            cb = layer._codebook
            replace = cb.replace

            def counting(samples, batch_mask, seq_mask=None, _replace=replace, _level=level):
                reseeded[_level] += min(int(batch_mask.sum()), samples.shape[-2])
                return _replace(samples, batch_mask, seq_mask)

            cb.replace = counting

        params = [*enc.parameters(), *dec.parameters()]
        opt = torch.optim.Adam(params, lr=lr) if params and epochs else None
        gen = torch.Generator().manual_seed(seed)
        curve = {"loss": [], "reconstruction": [], "quantiser": []}  # quantiser: commitment (+ balance term)
        rvq.train()
        for _ in range(epochs):
            sums = np.zeros(3)
            for idx in torch.randperm(n, generator=gen).split(batch):
                xb = x[idx.to(device)]
                q, _, vq_loss = rvq(encode(xb))
                recon = (decode(q) - xb).pow(2).sum(-1).mean()  # squared distance, as the diagnostics measure it
                loss = recon + vq_loss.sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sums += len(idx) * np.array([loss.item(), recon.item(), vq_loss.sum().item()])
            for key, value in zip(curve, sums / n, strict=True):
                curve[key].append(round(float(value), 6))

        rvq.eval()
        with torch.no_grad():
            z = encode(x)
            q, codes, _ = rvq(z)
            books = list(rvq.codebooks)  # a tuple of [k, d] (sizes differ) or one [levels, k, d] tensor
            rest = z - sum(books[lv][codes[:, lv]] for lv in range(len(sizes) - 1)) if len(sizes) > 1 else z
            last_dist = torch.cdist(rest, books[-1]).double().cpu().numpy()
            recon = decode(q).double().cpu().numpy()
        codes = codes.cpu().numpy().astype(np.int64)
    details = {
        "backend": f"vector-quantize-pytorch {importlib.metadata.version('vector-quantize-pytorch')} ResidualVQ",
        "codebook_init": f"residual k-means ({used_backend})" if used_backend else "given",
        "device": device,
        "epochs": epochs,
        "loss_curve": curve,
        "dead_codes_reseeded": {"total": sum(reseeded), "per_level": reseeded},
    }
    if epochs:
        logger.info(
            "loss %.5f -> %.5f over %d epochs; %d dead codes re-seeded", curve["loss"][0], curve["loss"][-1], epochs,
            sum(reseeded),
        )  # fmt: skip
    return codes, MethodInfo(last_dist=last_dist, reconstruction=recon, details=details)


@register_sid_method("rq_vae", requires=("vector_quantize_pytorch",))
def rq_vae(
    emb: np.ndarray, codebook_sizes: list[int], seed: int, *, hidden: list[int] = (512, 256, 128), latent_dim: int = 32,
    epochs: int = 100, lr: float = 1e-3, batch_size: int = 1024, beta: float = 0.25, balance_weight: float = 0.0,
    dead_code_threshold: float = 1.0, ema_decay: float = 0.8, backend: str = "auto", device: str = "cpu",
) -> tuple[np.ndarray, MethodInfo]:  # fmt: skip
    """RQ-VAE: MLP encoder, residual quantiser (k-means init, dead-code reset, optional balance term), MLP decoder."""
    return train_residual_quantizer(
        emb, codebook_sizes, seed, residual=False, hidden=list(hidden), latent_dim=latent_dim, epochs=epochs, lr=lr,
        batch_size=batch_size, beta=beta, balance_weight=balance_weight, dead_code_threshold=dead_code_threshold,
        ema_decay=ema_decay, backend=backend, device=device,
    )  # fmt: skip


@register_sid_method("rq_kmeans_plus", requires=("vector_quantize_pytorch",))
def rq_kmeans_plus(
    emb: np.ndarray, codebook_sizes: list[int], seed: int, *, hidden: list[int] = (512,), epochs: int = 50,
    lr: float = 1e-4, batch_size: int = 1024, beta: float = 0.25, balance_weight: float = 0.0,
    dead_code_threshold: float = 1.0, ema_decay: float = 0.99, n_init: int = 3, backend: str = "auto",
    device: str = "cpu",
) -> tuple[np.ndarray, MethodInfo]:  # fmt: skip
    """RQ-KMeans+: rq_kmeans codebooks, then residual encoder, quantiser and decoder trained end to end."""
    return train_residual_quantizer(
        emb, codebook_sizes, seed, residual=True, hidden=list(hidden), epochs=epochs, lr=lr, batch_size=batch_size,
        beta=beta, balance_weight=balance_weight, dead_code_threshold=dead_code_threshold, ema_decay=ema_decay,
        n_init=n_init, backend=backend, device=device,
    )  # fmt: skip
