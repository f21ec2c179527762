"""SID construction: item embeddings -> a SID method's codes -> unique SIDs, written in MiniOneRec's layout.

The methods are a registry (``SID_METHODS``, :mod:`sidrec.codebook.methods`): ``rq_kmeans_balanced`` (the default:
balanced residual k-means), ``rq_kmeans`` (plain residual k-means, faiss or scikit-learn), ``rq_vae`` and
``rq_kmeans_plus`` (trained residual quantisers on vector-quantize-pytorch). Items that still share every code are
told apart the same way for every method (``move`` or ``extra_level``, :mod:`sidrec.codebook.collisions`), and every
build is measured the same way (:mod:`sidrec.codebook.diagnostics`). The rest of sidrec reads the SID length from the
index, never assumes it.

| module | job |
| --- | --- |
| ``embed`` | item text, the sentence encoder (offline MiniLM), precomputed ``.npy`` embeddings |
| ``methods`` | the registry: ``SidMethod``, ``register_sid_method``, ``MethodInfo`` |
| ``config`` | ``CodebookConfig``: method, options, codebook size per level, seed, collisions |
| ``kmeans`` | ``rq_kmeans``, ``rq_kmeans_balanced`` |
| ``rqvae`` | ``rq_vae``, ``rq_kmeans_plus`` |
| ``collisions`` | ``move`` / ``extra_level`` |
| ``diagnostics`` | pure functions of the codes, the table, the codebook report and plot |
| ``build`` | ``build_codes``, ``build_sids``, ``write_index`` |

Needs the ``codebook`` extra (sentence-transformers, scikit-learn, matplotlib, the offline all-MiniLM-L6-v2
weights); ``rq_vae`` and ``rq_kmeans_plus`` need the ``sidmethods`` extra (faiss-cpu, vector-quantize-pytorch,
k-means-constrained), which ``rq_kmeans`` and ``rq_kmeans_balanced`` use when present and run without.
"""

from sidrec.codebook.build import build_codes, build_sids, sid_tokens, write_index
from sidrec.codebook.collisions import COLLISION_METHODS, append_collision_level, resolve_collisions
from sidrec.codebook.config import DEFAULT_METHOD, LEVEL_NAMES, CodebookConfig
from sidrec.codebook.diagnostics import codebook_report, format_diagnostics, plot_code_usage, sid_diagnostics
from sidrec.codebook.embed import DEFAULT_ENCODER, encode, item_text, load_embeddings, resolve_encoder
from sidrec.codebook.kmeans import balanced_assign, residual_kmeans, rq_kmeans, rq_kmeans_balanced
from sidrec.codebook.methods import SID_METHODS, MethodInfo, SidMethod, get_sid_method, register_sid_method
from sidrec.codebook.rqvae import rq_kmeans_plus, rq_vae, train_residual_quantizer

__all__ = [
    "COLLISION_METHODS",
    "DEFAULT_ENCODER",
    "DEFAULT_METHOD",
    "LEVEL_NAMES",
    "SID_METHODS",
    "CodebookConfig",
    "MethodInfo",
    "SidMethod",
    "append_collision_level",
    "balanced_assign",
    "build_codes",
    "build_sids",
    "codebook_report",
    "encode",
    "format_diagnostics",
    "get_sid_method",
    "item_text",
    "load_embeddings",
    "plot_code_usage",
    "register_sid_method",
    "residual_kmeans",
    "resolve_collisions",
    "resolve_encoder",
    "rq_kmeans",
    "rq_kmeans_balanced",
    "rq_kmeans_plus",
    "rq_vae",
    "sid_diagnostics",
    "sid_tokens",
    "train_residual_quantizer",
    "write_index",
]
