"""The transformers backends: sidrec's constrained beam search (`sidrec.decoding.rank_items`) on a loaded model, as
a tree search (one prefill per prompt, beams share its cache) or through HF ``generate`` with the SID processor."""

from __future__ import annotations

from collections.abc import Sequence

from sidrec.decoding import RankedItems, rank_items, resolve_decoder
from sidrec.sid import SidTrie


class HfRanker:
    """Ranks catalog SIDs for prompts on a transformers model.

    Args:
        model: The checkpoint, on its device.
        tokenizer: Its tokenizer.
        trie (`SidTrie`): The catalog trie compiled for that tokenizer.
        num_beams (`int`): Beams, the length of each ranked list.
        batch_size (`int`): Prompts per decoding batch.
        decoder (`str`): ``tree``, ``generate`` or ``auto`` (tree unless the attention cannot take a tree mask);
            resolved here, once, so `describe` says which search ran.
    """

    def __init__(self, model, tokenizer, trie: SidTrie, num_beams: int, batch_size: int, decoder: str = "auto"):
        self.model, self.tokenizer, self.trie = model, tokenizer, trie
        self.num_beams, self.batch_size = num_beams, batch_size
        self.decoder = resolve_decoder(model, decoder)
        self.name = self.decoder

    def rank(self, prompts: Sequence[str]) -> RankedItems:
        return rank_items(
            self.model, self.tokenizer, prompts, self.trie, self.num_beams, self.batch_size, False, self.decoder
        )

    def describe(self) -> dict:
        """For ``run_summary.json``'s ``launch``: which search ranked (``tree`` or ``generate``)."""
        return {"ranker": self.decoder}
