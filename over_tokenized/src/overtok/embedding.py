"""Input embeddings: the plain V x D table (baseline) and Over-Encoding (paper Eq. 5, Algorithm 1).

Notation
--------
=========  =============================================================  ==============
symbol     meaning                                                        shape
=========  =============================================================  ==============
x          token ids                                                      (B, T)
wte        1-gram table, tied with the output head                        (V, D)
E          the S n-gram tables, concatenated by rows (``ngram``)          (sum_s m_s, w)
w          slice width D / (k (n - 1))  (Algorithm 1)                     int
W_s        projection of table s, Linear(w -> D) without bias; stacked    (S w, D)
           as ``proj`` (rows [s w, (s+1) w) belong to table s)
scale      1 / (1 + k (n - 1)): the sum of all terms is averaged          float
=========  =============================================================  ==============

OE(x)_t = scale * ( wte[x_t] + sum_s E[row_s(t)] W_s )        (Eq. 5 with the sliced embedder of Eq. 4)

``model.oe.unigram: false`` drops the wte term from the input (Table 3, row 2: worse than the baseline);
the scale then averages the S n-gram terms, and wte stays the output head. The n-gram tables are one
``nn.Embedding(sparse=True)`` by default (``train.sparse_tables``): only the touched rows receive a gradient
and the optimiser state of untouched rows is not read (SparseAdam).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from reprokit.errors import ShapeError

from .config import OECfg
from .kernels import oe_embed
from .ngram import history_lengths, make_hash_spec


def check_token_ids(ids: torch.Tensor, vocab_size: int) -> None:
    """Token ids must lie in [0, V): a clear ShapeError naming the offending id (never a silent hash)."""
    if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ShapeError(f"token ids must be an integer tensor, got {ids.dtype}")
    if ids.numel() == 0 or ids.device.type == "meta":
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab_size:
        bad = hi if hi >= vocab_size else lo
        raise ShapeError(f"token id {bad} is outside the vocabulary [0, {vocab_size}) (model.vocab_size={vocab_size})")


class TokenEmbedding(nn.Module):
    """The baseline's input embedding: wte[x_t] (B, T) -> (B, T, D)."""

    def __init__(self, vocab_size: int, hidden: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.wte = nn.Embedding(vocab_size, hidden)

    @property
    def weight(self) -> torch.Tensor:
        return self.wte.weight

    def forward(self, ids: torch.Tensor, doc_start: torch.Tensor | None = None) -> torch.Tensor:
        check_token_ids(ids, self.vocab_size)
        return self.wte(ids)                                             # (B, T, D)


class OverEncoding(nn.Module):
    """Over-Encoding input embedding (Algorithm 1); ``forward(ids, doc_start=None)`` -> (B, T, D)."""

    def __init__(self, vocab_size: int, hidden: int, oe: OECfg, sparse: bool = True, impl: str = "auto"):
        super().__init__()
        oe.validate(hidden)
        self.spec = make_hash_spec(oe, vocab_size)                       # checks the moduli against V
        S = self.spec.num_tables
        self.vocab_size, self.hidden, self.width = vocab_size, hidden, hidden // S
        self.unigram = oe.unigram
        self.proj_init = oe.proj_init
        self.impl = impl
        self.scale = 1.0 / (S + int(oe.unigram))
        self.wte = nn.Embedding(vocab_size, hidden)                      # (V, D) 1-gram table
        self.ngram = nn.Embedding(self.spec.total_rows, self.width, sparse=sparse)   # (sum m_s, w)
        self.proj = nn.Parameter(torch.empty(S * self.width, hidden))    # (S w, D) stacked W_s
        # a standalone module is usable (never uninitialised memory); model.init_parameters re-draws every
        # weight from its keyed stream (and model.init_std) when the module is part of a model
        nn.init.normal_(self.proj, std=self.proj_std())
        for name, t in self.spec.tensors(self.proj.device).items():
            self.register_buffer(f"hash_{name}", t, persistent=False)

    def proj_std(self, init_std: float = 0.02) -> float:
        """Init std of the stacked projections: 1 / sqrt(w) ("fan_in") or the model's ``init_std``."""
        return self.width ** -0.5 if self.proj_init == "fan_in" else init_std

    @property
    def weight(self) -> torch.Tensor:
        """The 1-gram table (what a library calls the input embedding's weight)."""
        return self.wte.weight

    def spec_tensors(self) -> dict[str, torch.Tensor]:
        return {"orders": self.hash_orders, "moduli": self.hash_moduli, "offsets": self.hash_offsets,
                "powers": self.hash_powers}

    def table_params(self) -> int:
        """Parameters of the n-gram tables (the "OE-m" count: about m x D)."""
        return self.ngram.weight.numel()

    def forward(self, ids: torch.Tensor, doc_start: torch.Tensor | None = None) -> torch.Tensor:
        check_token_ids(ids, self.vocab_size)
        hist = history_lengths(tuple(ids.shape), self.spec.max_order, doc_start, device=ids.device)   # (B, T)
        return oe_embed(ids, hist, self.wte.weight, self.ngram.weight, self.proj, self.spec_tensors(),
                        self.scale, self.unigram, self.ngram.sparse, self.impl)                 # (B, T, D)

    def extra_repr(self) -> str:
        return (f"V={self.vocab_size}, D={self.hidden}, tables={self.spec.num_tables} x width {self.width}, "
                f"orders={self.spec.orders}, moduli={self.spec.moduli}, unigram={self.unigram}, "
                f"scale=1/{round(1 / self.scale)}")


def build_embedding(vocab_size: int, hidden: int, oe: OECfg, sparse: bool = True,
                    impl: str = "auto") -> TokenEmbedding | OverEncoding:
    if oe.enabled:
        return OverEncoding(vocab_size, hidden, oe, sparse=sparse, impl=impl)
    return TokenEmbedding(vocab_size, hidden)
