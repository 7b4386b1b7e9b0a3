"""PyTorch reference of the weighted gather with IVE group pooling: the semantics every kernel must match.

out[b, :] = sum_{k : bags[k] = b} weights[k] * table[rows[k], :]                 (notes Sec. 4.2 item 3)

table (R, D); rows, weights, bags: (K,) flat lists of the selected slots (row of the physical table, its
score, its bag = (token, IVE group, MCS core)). Gradients: d weights[k] = <dout[bags[k]], table[rows[k]]>,
d table[r] = sum_{k : rows[k] = r} weights[k] dout[bags[k]] (dense, by autograd).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_bag_reference(table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor, bags: torch.Tensor,
                           n_bags: int) -> torch.Tensor:
    contrib = table[rows] * weights[:, None].to(table.dtype)                     # (K, D)
    out = table.new_zeros(n_bags, table.shape[1])
    return out.index_add(0, bags, contrib)                                      # (n_bags, D)


def weighted_bag_torch(table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor, bags: torch.Tensor,
                       n_bags: int) -> torch.Tensor:
    """The reference's semantics through ``F.embedding_bag`` (the ``impl=torch`` path): the slots are put in
    bag order (a stable sort; already sorted when each token has one bag) and summed with per-sample
    weights, so the (K, D) gathered rows are never materialised (the reference's ``table[rows] * w`` is
    most of a CPU decode step). Gradients: dense for the table, per slot for the weights (autograd)."""
    order = torch.argsort(bags, stable=True)
    counts = torch.bincount(bags, minlength=n_bags)
    offsets = torch.zeros(n_bags, dtype=torch.int64, device=bags.device)
    offsets[1:] = counts.cumsum(0)[:-1]
    return F.embedding_bag(rows[order], table, offsets, mode="sum",
                           per_sample_weights=weights[order].to(table.dtype))           # (n_bags, D)


def key_topm_reference(q: torch.Tensor, keys: torch.Tensor, w: torch.Tensor, m: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel (a)'s semantics. q (N, H, D), keys (H, r, n, D), w (H, r) -> (indices (N, H, m) of the top-m
    of the coarse scores c = sum_r w_r <q, K_r>, per-rank scores of the winners (N, H, r, m))."""
    s = torch.einsum("bhd,hrnd->bhrn", q, keys)                                   # (N, H, r, n)
    idx = torch.einsum("bhrn,hr->bhn", s, w.to(s.dtype)).topk(m, dim=-1)[1]       # (N, H, m)
    return idx, s.gather(-1, idx[:, :, None].expand(-1, -1, keys.shape[1], -1))


def grid_scores_reference(sr: torch.Tensor, scol: torch.Tensor, core: torch.Tensor | None) -> torch.Tensor:
    """The m x m sub-grid scores per core. sr / scol (N, H, r, m): per-rank scores of the kept rows / columns;
    core (H, h, r, r) Tucker cores (TDQKR + MCS), or None for PKM's additive product keys (r = 1, h = 1).
    -> G (N, H, h, m, m) with G[.., c, i, j] = sum_{a, b} sr[a, i] C_c[a, b] scol[b, j]  (TDQKR, notes Sec. 3.3)
    or sr[0, i] + scol[0, j] (PKM)."""
    if core is None:
        return (sr[:, :, 0, :, None] + scol[:, :, 0, None, :])[:, :, None]          # (N, H, 1, m, m)
    tmp = torch.einsum("bhri,hcrs->bhcis", sr, core)                               # (N, H, h, m, r)
    return torch.einsum("bhcis,bhsj->bhcij", tmp, scol)                             # (N, H, h, m, m)


def grid_topm_reference(sr: torch.Tensor, scol: torch.Tensor, core: torch.Tensor | None, m: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel (b)'s semantics (stage 2 of PKM / TDQKR): score the m x m sub-grid, keep the top-m of the
    score summed over the h cores. -> (flat ids (N, H, m) = i m + j into the sub-grid, in descending score
    order; the winners' per-core scores (N, H, h, m), differentiable w.r.t. sr, scol and core)."""
    if core is None:                      # PKM: select without autograd, then the winners' a_i + b_j (no m x m
        mm = sr.shape[-1]                 # grid is saved for the backward; same values and gradients)
        with torch.no_grad():
            flat = (sr[:, :, 0, :, None] + scol[:, :, 0, None, :]).flatten(-2).topk(m, dim=-1)[1]   # (N, H, m)
        return flat, (sr[:, :, 0].gather(-1, flat // mm) + scol[:, :, 0].gather(-1, flat % mm))[:, :, None]
    grid = grid_scores_reference(sr, scol, core)                                    # (N, H, h, m, m)
    _, flat = grid.sum(2).flatten(-2).topk(m, dim=-1)                              # (N, H, m)
    h = grid.shape[2]
    return flat, grid.flatten(-2).gather(-1, flat[:, :, None].expand(-1, -1, h, -1))
