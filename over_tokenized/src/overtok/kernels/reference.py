"""PyTorch reference of the Over-Encoding embedding: the semantics every kernel must match.

out = scale * ( [unigram] wte[x_t]  +  sum_s table[row_s(t)] @ W_s )            (paper Eq. 5, Algorithm 1)

with W_s the s-th block of rows of the stacked projection ``proj`` (S*w, D), i.e. the per-table
Linear(w -> D) maps stacked, and scale = 1 / (number of summed terms) = 1 / (1 + k(n-1)) with the 1-gram
table. Gradients: the table receives a sparse gradient when ``sparse`` (``F.embedding(sparse=True)``),
``wte`` and ``proj`` dense ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ngram import ngram_rows


def oe_embed_reference(ids: torch.Tensor, hist: torch.Tensor, wte: torch.Tensor, table: torch.Tensor,
                       proj: torch.Tensor, spec_tensors: dict[str, torch.Tensor], scale: float,
                       unigram: bool = True, sparse: bool = True) -> torch.Tensor:
    """ids, hist: (B, T); wte: (V, D); table: (sum m_s, w); proj: (S w, D) -> (B, T, D)."""
    B, T = ids.shape
    S = spec_tensors["moduli"].numel()
    rows = ngram_rows(ids, hist, spec_tensors)                           # (B, T, S)
    gathered = F.embedding(rows, table, sparse=sparse)                   # (B, T, S, w)
    out = gathered.reshape(B, T, S * table.shape[1]) @ proj              # (B, T, D)
    if unigram:
        out = out + F.embedding(ids, wte)                                # (B, T, D)
    return out * scale
