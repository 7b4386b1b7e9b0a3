"""Routing as one mechanism: reshape the B x L x E scores to D_A x D_B, keep the top-K along D_B.

Each strategy of the paper's Table 6 is the set of axes that form D_B (the rest form D_A):

========  =========  ===========  ================
strategy  D_A        D_B          K
========  =========  ===========  ================
tc        B, L       E            k
ec        B, E       L            k * L / E
bl        E          B, L         k * B * L / E
be        L          B, E         k * B
le        B          L, E         k * L
race      (one row)  B, L, E      k * B * L
========  =========  ===========  ================

i.e. K = k * |D_B| / E in every case. When the batch axis is in D_B the selection spans the whole
(global, under torchrun) batch: the scores are all-gathered over ranks, the top-K is taken on the
concatenation, and each rank keeps its slice of the mask.

At inference those batch-spanning strategies compare each score with a per-row threshold tau (an
EMA of the training K-th score of that D_A row; a scalar for race), so a sample's routing does not
depend on the other samples of the batch. Per-sample strategies (tc, ec, le) need no threshold.
"""

from __future__ import annotations

import math

import torch

from reprokit import dist as rdist

from .config import GATINGS, ROUTINGS

AXES = "ble"
D_B_AXES = {"tc": "e", "ec": "l", "bl": "bl", "be": "be", "le": "le", "race": "ble"}


def check_names(routing: str, gating: str) -> None:
    if routing not in ROUTINGS:
        raise ValueError(f"unknown routing {routing!r}; valid: {', '.join(ROUTINGS)}")
    if gating not in GATINGS:
        raise ValueError(f"unknown gating {gating!r}; valid: {', '.join(GATINGS)}")


def spans_batch(routing: str) -> bool:
    return "b" in D_B_AXES[routing]


def layout(routing: str) -> tuple[str, str]:
    """(D_A axes, D_B axes) as strings over 'b', 'l', 'e'."""
    db = D_B_AXES[routing]
    da = "".join(a for a in AXES if a not in db)
    return da, db


def capacity(routing: str, k: int, B: int, L: int, E: int) -> int:
    """K = k * |D_B| / E; an error (naming the strategy and sizes) when it is not an integer."""
    sizes = {"b": B, "l": L, "e": E}
    db = math.prod(sizes[a] for a in D_B_AXES[routing])
    if (k * db) % E:
        raise ValueError(f"routing {routing!r}: K = k*|D_B|/E = {k}*{db}/{E} is not an integer "
                         f"(B={B}, L={L}, E={E}); change the batch, the token count or k")
    return k * db // E


def apply_gating(logits: torch.Tensor, gating: str) -> torch.Tensor:
    """G(s) element-wise (softmax is over the experts of each token)."""
    if gating == "softmax":
        return logits.softmax(dim=-1)
    if gating == "sigmoid":
        return torch.sigmoid(logits)
    if gating == "identity":
        return logits
    raise ValueError(f"unknown gating {gating!r}; valid: {', '.join(GATINGS)}")


def _to_rows(s: torch.Tensor, routing: str) -> tuple[torch.Tensor, list[int]]:
    """(B, L, E) -> (D_A, D_B) and the permutation used."""
    da, db = layout(routing)
    perm = [AXES.index(a) for a in da + db]
    p = s.permute(*perm)
    na = math.prod(p.shape[: len(da)]) if da else 1
    return p.reshape(na, -1), perm


def _from_rows(rows: torch.Tensor, perm: list[int], shape: torch.Size) -> torch.Tensor:
    permuted_shape = [shape[i] for i in perm]
    inv = [perm.index(i) for i in range(3)]
    return rows.reshape(permuted_shape).permute(*inv)


def topk_mask(scores: torch.Tensor, routing: str, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-K mask over the reshaped scores (no gradient). Returns (mask (B,L,E) bool, K-th value per
    D_A row (D_A,)). ``scores`` must already be the global batch for batch-spanning strategies."""
    B, L, E = scores.shape
    K = capacity(routing, k, B, L, E)
    rows, perm = _to_rows(scores.detach(), routing)
    vals, idx = rows.topk(K, dim=1, sorted=False)
    m = torch.zeros_like(rows, dtype=torch.bool).scatter_(1, idx, True)
    return _from_rows(m, perm, scores.shape), vals.min(dim=1).values


def threshold_shape(routing: str, L: int, E: int) -> tuple[int, ...]:
    """Shape of the EMA threshold: one value per D_A row (D_A holds no batch axis here)."""
    da, _ = layout(routing)
    sizes = {"l": L, "e": E}
    return tuple(sizes[a] for a in da)


def threshold_mask(scores: torch.Tensor, routing: str, tau: torch.Tensor) -> torch.Tensor:
    """Eval mask s >= tau, tau broadcast over the D_A axes (batch independent)."""
    da, _ = layout(routing)
    if da == "":
        return scores >= tau.reshape(())
    if da == "l":
        return scores >= tau.reshape(1, -1, 1)
    if da == "e":
        return scores >= tau.reshape(1, 1, -1)
    raise ValueError(f"routing {routing!r} is per-sample; it has no threshold mode")


def route(gated: torch.Tensor, routing: str, k: int, training: bool, eval_mode: str = "threshold",
          tau: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Selection mask (B, L, E) for the gated scores; also the K-th values when a top-K was taken.

    Batch-spanning strategies take the top-K over the global batch under torchrun (all-gather of the
    detached scores; each rank keeps its slice). In eval with ``eval_mode='threshold'`` they use
    ``tau`` instead.
    """
    if not training and spans_batch(routing) and eval_mode == "threshold":
        if tau is None:
            raise ValueError("threshold eval mode needs the layer's tau")
        return threshold_mask(gated.detach(), routing, tau), None
    if spans_batch(routing) and rdist.get_world_size() > 1:
        g = rdist.all_gather_cat(gated.detach().contiguous(), dim=0)
        sizes = [torch.zeros(1, dtype=torch.long) for _ in range(rdist.get_world_size())]
        torch.distributed.all_gather(sizes, torch.tensor([gated.shape[0]]))
        start = int(sum(int(s) for s in sizes[: rdist.get_rank()]))
        mask, kth = topk_mask(g, routing, k)
        return mask[start: start + gated.shape[0]], kth
    return topk_mask(gated, routing, k)


# ----------------------------------------------------------------------------------------- losses
def _global(t: torch.Tensor) -> torch.Tensor:
    return rdist.all_gather_cat(t.contiguous(), dim=0) if rdist.get_world_size() > 1 else t


def router_similarity_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Router similarity loss over the global batch (equals 1 at the balanced, uniform point).

    P = softmax(logits) (N x E), M = mask (N x E), P' = P^T P, M' = M^T M (no gradient),
    W_ii = E * M'_ii / sum_j M'_jj, W_ij = (E^2 - E) * M'_ij / sum_{a!=b} M'_ab, L = sum(W * P') / N.
    """
    E = logits.shape[-1]
    P = _global(logits.reshape(-1, E).float().softmax(-1))
    M = _global(mask.reshape(-1, E).float().detach())
    N = P.shape[0]
    Pp = P.t() @ P
    Mp = M.t() @ M
    eye = torch.eye(E, dtype=torch.bool, device=P.device)
    diag = Mp.diagonal()
    W = torch.where(eye, E * Mp / diag.sum().clamp_min(1e-12),
                    (E * E - E) * Mp / Mp.masked_fill(eye, 0).sum().clamp_min(1e-12))
    return (W * Pp).sum() / N


def balance_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Switch-style balance loss E * sum_e f_e * pbar_e (1 at balance); f_e = share of the selected
    pairs that go to e, pbar_e = mean softmax probability of e (global batch)."""
    E = logits.shape[-1]
    P = _global(logits.reshape(-1, E).float().softmax(-1))
    M = _global(mask.reshape(-1, E).float().detach())
    f = M.sum(0) / M.sum().clamp_min(1.0)
    return E * (f * P.mean(0)).sum()


# ------------------------------------------------------------------------------------ diagnostics
@torch.no_grad()
def max_violation(mask: torch.Tensor) -> float:
    """MaxVio = (max_e load_e - mean load) / mean load."""
    load = mask.reshape(-1, mask.shape[-1]).float().sum(0)
    mean = load.mean()
    return float((load.max() - mean) / mean) if mean > 0 else 0.0


@torch.no_grad()
def pair_counts(mask: torch.Tensor) -> torch.Tensor:
    """Counts of co-activated expert pairs (i < j) over tokens, (E*(E-1)/2,)."""
    M = mask.reshape(-1, mask.shape[-1]).float()
    C = M.t() @ M
    iu = torch.triu_indices(C.shape[0], C.shape[0], offset=1)
    return C[iu[0], iu[1]]


def combination_usage(counts: torch.Tensor, mass: float = 0.95) -> float:
    """Percentage of expert pairs needed to cover ``mass`` of the co-activation mass (Fig. 13)."""
    c = counts.double().sort(descending=True).values
    tot = c.sum()
    if tot <= 0:
        return 0.0
    cum = (c / tot).cumsum(0)
    need = int((cum < mass - 1e-12).sum()) + 1
    return 100.0 * min(need, c.numel()) / c.numel()


def gate_values(logits: torch.Tensor, gating: str, mask: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """G(s) at the selected pairs (zeros elsewhere), optionally renormalised per token."""
    g = apply_gating(logits, gating) * mask
    if normalize:
        g = g / g.sum(-1, keepdim=True).clamp_min(1e-9)
    return g


__all__ = ["route", "topk_mask", "capacity", "apply_gating", "router_similarity_loss", "balance_loss",
           "max_violation", "combination_usage", "pair_counts", "threshold_mask", "threshold_shape",
           "check_names", "spans_batch", "layout"]
