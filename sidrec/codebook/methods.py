"""The SID-method registry: each method turns item embeddings into integer codes, one column per level.

A method is a builder ``build(emb, codebook_sizes, seed, **options) -> (codes, info)`` registered under a name with
:func:`register_sid_method`, the way :mod:`sidrec.rewards` registers rewards. ``codes`` is an ``[n, levels]`` int
array (level ``l`` in ``range(codebook_sizes[l])``), ``info`` a :class:`MethodInfo`. Collision handling, diagnostics
and the index are the same for every method (:mod:`sidrec.codebook.build`). A method's options are its builder's
keyword-only arguments; their defaults are the method's defaults.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sidrec.errors import UserError

#: The pip name of each optional module a method may need; all are in the ``sidmethods`` extra.
PIP_NAMES = {
    "faiss": "faiss-cpu",
    "vector_quantize_pytorch": "vector-quantize-pytorch",
    "k_means_constrained": "k-means-constrained",
    "sklearn": "scikit-learn",
}
EXTRA_OF = {"sklearn": "codebook"}


@dataclass
class MethodInfo:
    """What a method returns beside its codes.

    Args:
        last_dist: ``[n, k_last]`` each item's distance to every last-level code, in the space the method quantises
            (collision handling moves or numbers items by it).
        reconstruction: ``[n, dim]`` each item's embedding as its codes rebuild it (the sum of its codewords, or the
            decoder's output), before collision handling.
        details: JSON-serialisable facts of the run: the backend that ran, a loss curve, dead codes re-seeded, ...
    """

    last_dist: np.ndarray
    reconstruction: np.ndarray
    details: dict = field(default_factory=dict)


def require(module: str, what: str) -> None:
    """A one-line :class:`UserError` naming the extra when ``module`` is not installed."""
    if importlib.util.find_spec(module) is None:
        extra = EXTRA_OF.get(module, "sidmethods")
        raise UserError(f"{what} needs {PIP_NAMES.get(module, module)}: pip install -e '.[{extra}]'")


@dataclass(frozen=True)
class SidMethod:
    """A registered SID method: its builder, the optional modules it cannot run without, and what it is."""

    name: str
    build: Callable[..., tuple[np.ndarray, MethodInfo]]
    requires: tuple[str, ...] = ()
    summary: str = ""

    @property
    def options(self) -> dict:
        """The builder's keyword-only options and their defaults."""
        params = inspect.signature(self.build).parameters.values()
        return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def check_options(self, options: dict) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(self.options) or "none"
            raise UserError(f"SID method {self.name} has no option {unknown[0]!r} (its options: {known})")

    def check_available(self) -> None:
        for module in self.requires:
            require(module, f"the SID method {self.name}")


SID_METHODS: dict[str, SidMethod] = {}


def register_sid_method(name: str, *, requires: tuple[str, ...] = (), summary: str = ""):
    """Register ``build`` under ``name``; ``requires``: modules it cannot run without (checked before it runs)."""

    def wrap(build):
        SID_METHODS[name] = SidMethod(name, build, tuple(requires), summary or (build.__doc__ or "").split("\n")[0])
        return build

    return wrap


def get_sid_method(name: str) -> SidMethod:
    if name not in SID_METHODS:
        raise UserError(f"unknown SID method {name!r}; known: {', '.join(SID_METHODS)}")
    return SID_METHODS[name]
