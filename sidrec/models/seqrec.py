"""Neural sequential recommenders over item ids (SASRec, GRU4Rec) in MiniOneRec's baseline form: the non-LLM
baselines (`sidrec.analysis.baselines` trains them) and the collaborative-filtering reward of GRPO (`CFReward`), which
scores each rollout's item with a trained one, as MiniOneRec's ``cf_reward`` does."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from sidrec.atomic_io import atomic_write_bytes
from sidrec.errors import UserError
from sidrec.sid import SID_TOKEN_RE

NEURAL_MODELS = ("sasrec", "gru4rec")


@dataclass
class SeqBaselineConfig:
    """A neural sequential baseline, trained the way MiniOneRec's ``sasrec.py`` trains its SASRec and GRU baselines
    (its defaults): 32-wide item embeddings (normal, sd 0.01), history cut to the last 10 items, dropout 0.3, Adam lr
    1e-3 with L2 1e-5, batches of 1,024 rows, binary cross-entropy on the target against one item drawn uniformly
    (never the target), one (history -> next) example per train row, valid NDCG@20 after every epoch and the best
    epoch kept, stopped once more than ``patience`` (20) epochs in a row did not beat it, at most 500 epochs.

    ``model``: ``sasrec`` (one causal self-attention block with one head, layer norms, a position-wise feed-forward
    layer, the state at the last history item through a linear layer to item scores) or ``gru4rec`` (one GRU layer,
    its last hidden state through a linear layer). ``loss``: ``bce`` (as above) or ``ce`` (softmax over every item).
    """

    model: str = "sasrec"
    hidden: int = 32
    dropout: float = 0.3
    max_len: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 1024
    loss: str = "bce"
    max_epochs: int = 500
    patience: int = 20
    select_metric: str = "NDCG@20"
    seed: int = 1

    def __post_init__(self):
        if self.model not in NEURAL_MODELS:
            raise ValueError(f"model {self.model!r}: expected one of {NEURAL_MODELS}")
        if self.loss not in ("bce", "ce"):
            raise ValueError(f"loss {self.loss!r}: expected bce or ce")

    @property
    def name(self) -> str:
        return {"sasrec": "SASRec", "gru4rec": "GRU4Rec"}[self.model]


def item_scores(head: nn.Linear, state: torch.Tensor) -> torch.Tensor:
    """Next-item scores `[B, n + 1]` from the states `[B, hidden]`; the padding item's column is -inf, so a softmax,
    a top-k or a cross-entropy over the row never picks it."""
    return head(state).index_fill(1, torch.tensor([0], device=state.device), float("-inf"))


class SASRec(nn.Module):
    """Self-attentive sequential recommendation (Kang & McAuley, 2018) in MiniOneRec's baseline form: one causal
    attention block with one head over right-padded histories; item 0 is padding, scores cover items 1..n."""

    def __init__(self, num_items: int, cfg: SeqBaselineConfig):
        super().__init__()
        self.items = nn.Embedding(num_items + 1, cfg.hidden, padding_idx=0)
        nn.init.normal_(self.items.weight, 0, 0.01)
        self.positions = nn.Embedding(cfg.max_len, cfg.hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        self.ln_attn, self.ln_ff, self.ln_out = (nn.LayerNorm(cfg.hidden) for _ in range(3))
        self.attn = nn.MultiheadAttention(cfg.hidden, 1, dropout=cfg.dropout, batch_first=True)
        self.ff = nn.Sequential(
            nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.hidden)
        )
        self.ff_dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden, num_items + 1)

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``seq`` `[B, T]` right-padded item indices, ``lengths`` `[B]` (>= 1) -> next-item scores `[B, n + 1]`
        (`item_scores`: the padding item at -inf)."""
        mask = (seq != 0).unsqueeze(-1).float()
        x = self.dropout(self.items(seq) + self.positions(torch.arange(seq.shape[1], device=seq.device))) * mask
        q = self.ln_attn(x)
        causal = nn.Transformer.generate_square_subsequent_mask(seq.shape[1], device=seq.device)
        h = q + self.attn(q, x, x, attn_mask=causal, need_weights=False)[0]
        h = self.ln_ff(h)
        h = self.ln_out((h + self.ff_dropout(self.ff(h))) * mask)
        last = h[torch.arange(len(seq), device=seq.device), lengths - 1]
        return item_scores(self.head, last)


class GRU4Rec(nn.Module):
    """GRU4Rec (Hidasi et al., 2016) in MiniOneRec's baseline form: one GRU layer over the history, its last hidden
    state through a linear layer to item scores."""

    def __init__(self, num_items: int, cfg: SeqBaselineConfig):
        super().__init__()
        self.items = nn.Embedding(num_items + 1, cfg.hidden, padding_idx=0)
        nn.init.normal_(self.items.weight, 0, 0.01)
        self.gru = nn.GRU(cfg.hidden, cfg.hidden, batch_first=True)
        self.head = nn.Linear(cfg.hidden, num_items + 1)

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(
            self.items(seq), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, hidden = self.gru(packed)
        return item_scores(self.head, hidden[-1])


def pad_right(seqs: list[list[int]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The last ``length`` items of each sequence, right-padded with 0, and their lengths (at least 1: an empty
    history becomes one padding item)."""
    out = torch.zeros(len(seqs), length, dtype=torch.long)
    lengths = torch.ones(len(seqs), dtype=torch.long)
    for i, s in enumerate(seqs):
        s = s[-length:]
        if s:
            out[i, : len(s)] = torch.tensor(s)
            lengths[i] = len(s)
    return out, lengths


def encode_histories(
    histories: Sequence[Sequence[str]], index: dict[str, int], max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Item-id histories (oldest first) as `pad_right` tensors of item indices."""
    return pad_right([[index[i] for i in h] for h in histories], max_len)


def build_seqrec(num_items: int, cfg: SeqBaselineConfig) -> nn.Module:
    return (SASRec if cfg.model == "sasrec" else GRU4Rec)(num_items, cfg)


def save_seqrec(path: str, model: nn.Module, index: dict[str, int], cfg: SeqBaselineConfig) -> None:
    """One file with the weights, the config and the item order (atomically)."""
    import io

    buf = io.BytesIO()
    items = sorted(index, key=index.get)
    torch.save({"config": asdict(cfg), "items": items, "state_dict": model.state_dict()}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_seqrec(path: str) -> tuple[nn.Module, dict[str, int], SeqBaselineConfig]:
    """What `save_seqrec` wrote: the model (eval mode), the item -> index map (1-based), the config."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file (a model saved by sidrec-baselines, e.g. <run>/baselines/sasrec.pt)")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    cfg = SeqBaselineConfig(**saved["config"])
    index = {item: i + 1 for i, item in enumerate(saved["items"])}
    model = build_seqrec(len(index), cfg)
    model.load_state_dict(saved["state_dict"])
    return model.eval(), index, cfg


class CFReward:
    """GRPO reward from a trained sequential recommender (MiniOneRec's ``cf_reward``): the recommender's probability
    (softmax over the catalog) of the completion's item after the row's history, so a rollout the collaborative
    model finds likely earns more even when it is not the target. MiniOneRec uses the raw score; a probability keeps
    the reward in [0, 1], on the scale of ``rule``.

    ``histories[i]`` is the item-id history (oldest first) of GRPO's prompt row ``i + 1``; TRL passes each
    completion's ``row`` column (0: a prompt with no row, which gets 0). ``sid_to_item`` maps a SID to its item.
    """

    __name__ = "cf"

    def __init__(self, path: str, histories: Sequence[Sequence[str]], sid_to_item: dict[str, str]):
        self.model, self.index, self.cfg = load_seqrec(path)
        missing = sorted(set(sid_to_item.values()) - set(self.index))[:3]
        if missing:
            raise UserError(f"{path}: trained on another catalog (items such as {missing} are not in it)")
        self.histories, self.sid_to_item = list(histories), sid_to_item

    @torch.no_grad()
    def __call__(self, completions: Sequence[str], row: Sequence[int], **kwargs) -> list[float]:
        out = [0.0] * len(completions)
        todo = [i for i, r in enumerate(row) if r > 0 and self.histories[r - 1]]
        if not todo:
            return out
        seq, lengths = encode_histories([self.histories[row[i] - 1] for i in todo], self.index, self.cfg.max_len)
        probs = self.model(seq, lengths).softmax(-1)
        for j, i in enumerate(todo):
            item = self.sid_to_item.get("".join(SID_TOKEN_RE.findall(completions[i])))
            if item is not None:
                out[i] = float(probs[j, self.index[item]])
        return out
