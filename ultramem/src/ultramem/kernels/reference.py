"""PyTorch reference of the weighted gather with IVE group pooling: the semantics every kernel must match.

out[b, :] = sum_{k : bags[k] = b} weights[k] * table[rows[k], :]                 (notes Sec. 4.2 item 3)

table (R, D); rows, weights, bags: (K,) flat lists of the selected slots (row of the physical table, its
score, its bag = (token, IVE group, MCS core)). Gradients: d weights[k] = <dout[bags[k]], table[rows[k]]>,
d table[r] = sum_{k : rows[k] = r} weights[k] dout[bags[k]] (dense, by autograd).
"""

from __future__ import annotations

import torch


def weighted_bag_reference(table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor, bags: torch.Tensor,
                           n_bags: int) -> torch.Tensor:
    contrib = table[rows] * weights[:, None].to(table.dtype)                     # (K, D)
    out = table.new_zeros(n_bags, table.shape[1])
    return out.index_add(0, bags, contrib)                                      # (n_bags, D)


def key_topm_reference(q: torch.Tensor, keys: torch.Tensor, w: torch.Tensor, m: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel (a)'s semantics. q (N, H, D), keys (H, r, n, D), w (H, r) -> (indices (N, H, m) of the top-m
    of the coarse scores c = sum_r w_r <q, K_r>, per-rank scores of the winners (N, H, r, m))."""
    s = torch.einsum("bhd,hrnd->bhrn", q, keys)                                   # (N, H, r, n)
    idx = torch.einsum("bhrn,hr->bhn", s, w.to(s.dtype)).topk(m, dim=-1)[1]       # (N, H, m)
    return idx, s.gather(-1, idx[:, :, None].expand(-1, -1, keys.shape[1], -1))
