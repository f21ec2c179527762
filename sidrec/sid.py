"""Semantic-ID vocabulary: parsing SID strings and compiling the catalog's SIDs into a prefix trie of integer tensors.

An item's SID is a fixed number of level tokens written back to back, e.g. ``<a_223><b_80><c_165>``. The number of
levels is read from the data (every SID of one catalog has the same length), never assumed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

SID_TOKEN_RE = re.compile(r"<[A-Za-z]+_\d+>")


def parse_sid(sid: str) -> tuple[str, ...]:
    """Split a SID string into its level tokens.

    Args:
        sid (`str`): A SID such as ``"<a_1><b_2><c_3>"``.

    Returns:
        `tuple[str, ...]`: The level tokens, in order.

    Raises:
        ValueError: If the string is not a non-empty concatenation of ``<letters_digits>`` tokens.

    Example:
    >>> parse_sid("<a_1><b_22><c_3>")
    ('<a_1>', '<b_22>', '<c_3>')
    """
    if not isinstance(sid, str):
        raise ValueError(f"SID must be a string, got {type(sid).__name__}: {sid!r}")
    tokens = tuple(SID_TOKEN_RE.findall(sid))
    if not tokens or "".join(tokens) != sid:
        raise ValueError(f"malformed SID {sid!r}: expected tokens like '<a_1><b_2><c_3>'")
    return tokens


@dataclass(frozen=True)
class SidVocab:
    """The distinct SIDs of a catalog, as token tuples of one common length.

    Items may share a SID (MiniOneRec's published Industrial index has 16 such collisions); the SID, not the item, is
    the unit of prediction, so this holds each distinct SID once, sorted.
    """

    sids: tuple[tuple[str, ...], ...]

    @classmethod
    def from_sids(cls, sids: Iterable[Sequence[str] | str]) -> SidVocab:
        parsed = {parse_sid(s) if isinstance(s, str) else tuple(s) for s in sids}
        if not parsed:
            raise ValueError("a SID vocabulary needs at least one SID")
        lengths = {len(s) for s in parsed}
        if len(lengths) != 1:
            raise ValueError(
                f"SIDs of one catalog must all have the same number of levels, found lengths {sorted(lengths)}"
            )
        return cls(sids=tuple(sorted(parsed)))

    @property
    def sid_length(self) -> int:
        return len(self.sids[0])

    def __len__(self) -> int:
        return len(self.sids)

    def strings(self) -> list[str]:
        return ["".join(s) for s in self.sids]

    def level_tokens(self) -> list[str]:
        """Every distinct level token, level by level, in a stable order (the tokens to add to a tokenizer)."""
        out: list[str] = []
        for level in range(self.sid_length):
            out.extend(sorted({s[level] for s in self.sids}, key=_token_sort_key))
        return list(dict.fromkeys(out))

    def compile(self, tokenizer) -> SidTrie:
        """Compile the prefix trie against a tokenizer's ids (each level token must be one token of the tokenizer)."""
        return SidTrie.build(self, tokenizer)


def _token_sort_key(token: str) -> tuple[str, int]:
    name, code = token[1:-1].rsplit("_", 1)
    return name, int(code)


class SidTrie:
    """The catalog's SID prefix tree as integer tensors, built once and shared by every decoding step.

    Nodes at depth ``t`` are the distinct SID prefixes of length ``t`` (depth 0 is the root, node 0). For each level
    ``t`` the tensors are:

    - ``level_token_ids[t]`` (`[K_t]`): vocabulary ids of the tokens that occur at level ``t``;
    - ``token_to_local[t]`` (`[V]`): vocabulary id -> column in ``level_token_ids[t]``, or -1;
    - ``children[t]`` (`[nodes_t, K_t]`): the child node reached by appending that token, or -1. At the last level
      the "child" is the index of the completed SID in ``sid_token_ids``.

    Walking a batch of partial SIDs is ``t`` gathers over the whole batch; there is no per-beam Python code.
    """

    def __init__(
        self,
        sid_token_ids: torch.Tensor,
        level_token_ids: list[torch.Tensor],
        token_to_local: list[torch.Tensor],
        children: list[torch.Tensor],
        eos_token_id: int,
        sid_strings: list[str],
    ):
        self.sid_token_ids = sid_token_ids
        self.level_token_ids = level_token_ids
        self.token_to_local = token_to_local
        self.children = children
        self.eos_token_id = eos_token_id
        self.sid_strings = sid_strings

    @property
    def sid_length(self) -> int:
        return self.sid_token_ids.shape[1]

    @property
    def num_sids(self) -> int:
        return self.sid_token_ids.shape[0]

    @classmethod
    def build(cls, vocab: SidVocab, tokenizer) -> SidTrie:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; SID completions end with EOS")
        token_ids = tokenizer.convert_tokens_to_ids(vocab.level_tokens())
        tok2id = dict(zip(vocab.level_tokens(), token_ids, strict=True))
        missing = [t for t, i in tok2id.items() if i is None or i == tokenizer.unk_token_id]
        if missing:
            raise ValueError(
                f"{len(missing)} SID tokens are not in the tokenizer's vocabulary (first: {missing[:5]}); "
                "the checkpoint was not trained with this catalog's SID tokens"
            )
        vocab_size = max(len(tokenizer), max(token_ids) + 1)
        length = vocab.sid_length
        sid_ids = torch.tensor([[tok2id[t] for t in sid] for sid in vocab.sids], dtype=torch.long)

        level_token_ids, token_to_local, children = [], [], []
        parent_of = {(): 0}  # prefix -> node id at its depth
        for level in range(length):
            tokens = sorted({sid[level] for sid in vocab.sids}, key=_token_sort_key)
            local = {t: j for j, t in enumerate(tokens)}
            ids = torch.tensor([tok2id[t] for t in tokens], dtype=torch.long)
            lookup = torch.full((vocab_size,), -1, dtype=torch.long)
            lookup[ids] = torch.arange(len(tokens))
            table = torch.full((len(parent_of), len(tokens)), -1, dtype=torch.long)
            next_nodes: dict[tuple[str, ...], int] = {}
            for sid_index, sid in enumerate(vocab.sids):
                prefix = sid[: level + 1]
                if level == length - 1:
                    child = sid_index
                else:
                    child = next_nodes.setdefault(prefix, len(next_nodes))
                table[parent_of[sid[:level]], local[sid[level]]] = child
            level_token_ids.append(ids)
            token_to_local.append(lookup)
            children.append(table)
            parent_of = next_nodes
        return cls(sid_ids, level_token_ids, token_to_local, children, tokenizer.eos_token_id, vocab.strings())

    def to(self, device: torch.device | str) -> SidTrie:
        move = lambda ts: [t.to(device) for t in ts]  # noqa: E731
        return SidTrie(
            self.sid_token_ids.to(device),
            move(self.level_token_ids),
            move(self.token_to_local),
            move(self.children),
            self.eos_token_id,
            self.sid_strings,
        )

    def walk(self, suffix: torch.Tensor) -> torch.Tensor:
        """Node reached by each row's partial SID.

        Args:
            suffix (`torch.LongTensor` of shape `[B, t]`): the tokens generated so far, ``t <= sid_length``.

        Returns:
            `torch.LongTensor` of shape `[B]`: the node id at depth ``t`` (the SID index when ``t == sid_length``),
            or -1 where the partial sequence is not a prefix of any catalog SID.
        """
        node = torch.zeros(suffix.shape[0], dtype=torch.long, device=suffix.device)
        for level in range(min(suffix.shape[1], self.sid_length)):
            local = self.token_to_local[level][suffix[:, level]]
            ok = (node >= 0) & (local >= 0)
            nxt = self.children[level][node.clamp(min=0), local.clamp(min=0)]
            node = torch.where(ok, nxt, torch.full_like(nxt, -1))
        return node

    def blocked_mask(self, suffix: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """Boolean `[B, vocab_size]` mask, True where a token may NOT follow the row's partial SID.

        Before the SID is complete only tokens that continue a catalog SID are allowed; once it is complete only EOS
        is. A row whose prefix is invalid gets every token blocked: there is no unconstrained fallback.
        """
        step = suffix.shape[1]
        node = self.walk(suffix)
        blocked = torch.ones(suffix.shape[0], vocab_size, dtype=torch.bool, device=suffix.device)
        if step < self.sid_length:
            allowed = (self.children[step][node.clamp(min=0)] >= 0) & (node >= 0)[:, None]
            blocked[:, self.level_token_ids[step]] = ~allowed
        else:
            blocked[:, self.eos_token_id] = node < 0
        return blocked
