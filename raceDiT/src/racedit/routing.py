"""Routing as one mechanism (paper Fig. 3, Table 6; notes §2.3) and the router losses (RSL, notes §2.4).

Notation (shapes are per rank; under torchrun B is the local batch and B_g = world * B the global one)

=========  ======================================================  ===========================
symbol     meaning                                                 shape
=========  ======================================================  ===========================
B, L, E    samples, tokens per sample, experts                     ints
k          average experts per token ("k-in-E")                    int
s          gated router scores G(logits)                           (B, L, E)
D_A, D_B   the row axes and the competing axes of the reshape      subsets of {b, l, e}
K          winners per D_A row, K = k * |D_B| / E                  int
M          selection mask (1 = the pair (token, expert) is kept)   (B, L, E) bool
s_(K)      K-th largest score of each D_A row (training)           (|D_A|,)
tau        EMA of s_(K), the inference threshold                   (|D_A|,), () for race
N          tokens of the global batch, B_g * L                     int
P          router probabilities softmax_e(logits)                  (N, E)
P', M'     P^T P (differentiable), M^T M (co-selection counts)     (E, E)
W          RSL weights from M' (diagonal / off-diagonal apart)     (E, E)
=========  ======================================================  ===========================

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

i.e. K = k * |D_B| / E in every case (Fig. 3). At inference the batch-spanning strategies (bl, be,
race) compare each score with a per-row threshold tau, an EMA of the training K-th score of that D_A
row (Table 3 "+ Learnable threshold"; EMA form and decay are ours, notes §2.3), so a sample's routing
does not depend on the other samples of the batch. Per-sample strategies (tc, ec, le) need no
threshold.

**The one distributed exception to single-device model code.** Every other module of the model is a
plain single-device ``nn.Module``; parallelism lives in ``train.py``. Routing cannot be: the paper's
race (and bl, be) is a top-K over the *global* batch. Under torchrun (``reprokit.dist`` initialised,
world size > 1) :func:`route` all-gathers the detached scores of every rank (``all_gather_cat``),
takes the top-K of the concatenation (so every rank finds the same K-th score s_(K) and the same
tau update) and keeps its own slice of the mask; :func:`router_similarity_loss` and
:func:`balance_loss` all-gather P and M the same way (autograd-aware: the gradient flows back to the
local slice, and DDP's mean over ranks makes it the exact gradient of the global loss). A 2-rank gloo
test (tests/test_dist.py) checks both against one process on the concatenated batch. Threshold-mode
inference needs no collective. With one process every collective is a no-op.
"""

from __future__ import annotations

import math

import torch

from reprokit import dist as rdist
from reprokit.config import ConfigError
from reprokit.errors import ShapeError

from .config import GATINGS, ROUTINGS

AXES = "ble"
D_B_AXES = {"tc": "e", "ec": "l", "bl": "bl", "be": "be", "le": "le", "race": "ble"}


def check_names(routing: str, gating: str) -> None:
    if routing not in ROUTINGS:
        raise ConfigError(f"unknown routing {routing!r}; valid: {', '.join(ROUTINGS)}")
    if gating not in GATINGS:
        raise ConfigError(f"unknown gating {gating!r}; valid: {', '.join(GATINGS)}")


def spans_batch(routing: str) -> bool:
    return "b" in D_B_AXES[routing]


def layout(routing: str) -> tuple[str, str]:
    """(D_A axes, D_B axes) as strings over 'b', 'l', 'e'."""
    db = D_B_AXES[routing]
    da = "".join(a for a in AXES if a not in db)
    return da, db


def capacity(routing: str, k: int, B: int, L: int, E: int) -> int:
    """K = k * |D_B| / E (Fig. 3); a ShapeError (naming the strategy and sizes) when it is not an integer."""
    sizes = {"b": B, "l": L, "e": E}
    db = math.prod(sizes[a] for a in D_B_AXES[routing])
    if (k * db) % E:
        raise ShapeError(f"routing {routing!r}: K = k*|D_B|/E = {k}*{db}/{E} is not an integer "
                         f"(B={B}, L={L}, E={E}); change the batch, the token count or k")
    return k * db // E


def apply_gating(logits: torch.Tensor, gating: str) -> torch.Tensor:
    """G(s) element-wise (Table 1; softmax is over the experts of each token, so its scores are not
    comparable across tokens; sigmoid and identity keep the global order the race needs). (B, L, E)."""
    if gating == "softmax":
        return logits.softmax(dim=-1)
    if gating == "sigmoid":
        return torch.sigmoid(logits)
    if gating == "identity":
        return logits
    raise ValueError(f"unknown gating {gating!r}; valid: {', '.join(GATINGS)}")


def _to_rows(s: torch.Tensor, routing: str) -> tuple[torch.Tensor, list[int]]:
    """(B, L, E) -> (|D_A|, |D_B|) and the permutation used (Fig. 3's reshape)."""
    da, db = layout(routing)
    perm = [AXES.index(a) for a in da + db]
    p = s.permute(*perm)                                   # (*D_A axes, *D_B axes)
    na = math.prod(p.shape[: len(da)]) if da else 1
    return p.reshape(na, -1), perm                         # (|D_A|, |D_B|)


def _from_rows(rows: torch.Tensor, perm: list[int], shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`_to_rows`: (|D_A|, |D_B|) -> (B, L, E)."""
    permuted_shape = [shape[i] for i in perm]
    inv = [perm.index(i) for i in range(3)]
    return rows.reshape(permuted_shape).permute(*inv)     # (B, L, E)


def topk_mask(scores: torch.Tensor, routing: str, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-K along D_B of every D_A row (Fig. 3, Table 6; no gradient). Returns (M (B, L, E) bool,
    s_(K) per D_A row (|D_A|,)). ``scores`` must already be the global batch for batch-spanning
    strategies (see :func:`route`)."""
    B, L, E = scores.shape
    K = capacity(routing, k, B, L, E)
    rows, perm = _to_rows(scores.detach(), routing)       # (|D_A|, |D_B|)
    vals, idx = rows.topk(K, dim=1, sorted=False)          # (|D_A|, K)
    m = torch.zeros_like(rows, dtype=torch.bool).scatter_(1, idx, True)
    return _from_rows(m, perm, scores.shape), vals.min(dim=1).values   # (B, L, E), (|D_A|,)


def threshold_shape(routing: str, L: int, E: int) -> tuple[int, ...]:
    """Shape of tau: one value per D_A row (D_A holds no batch axis for bl/be/race): () race, (E,) bl,
    (L,) be."""
    da, _ = layout(routing)
    sizes = {"l": L, "e": E}
    return tuple(sizes[a] for a in da)


def threshold_mask(scores: torch.Tensor, routing: str, tau: torch.Tensor) -> torch.Tensor:
    """Inference mask M = [s >= tau] (Table 3 "+ Learnable threshold"), tau broadcast over the D_A
    axes; (B, L, E), independent of the rest of the batch."""
    da, _ = layout(routing)
    if da == "":
        return scores >= tau.reshape(())                   # race: one scalar for every pair
    if da == "l":
        return scores >= tau.reshape(1, -1, 1)             # be: one per position
    if da == "e":
        return scores >= tau.reshape(1, 1, -1)             # bl: one per expert
    raise ValueError(f"routing {routing!r} is per-sample; it has no threshold mode")


def route(gated: torch.Tensor, routing: str, k: int, training: bool, eval_mode: str = "threshold",
          tau: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Selection mask M (B, L, E) for the gated scores s; also s_(K) (|D_A|,) when a top-K was taken.

    Batch-spanning strategies (bl, be, race) take the top-K over the **global** batch under torchrun:
    the collectives below are the documented exception to single-device model code (module
    docstring). In eval with ``eval_mode='threshold'`` they use ``tau`` instead (no collective).
    """
    if not training and spans_batch(routing) and eval_mode == "threshold":
        if tau is None:
            raise ValueError("threshold eval mode needs the layer's tau")
        return threshold_mask(gated.detach(), routing, tau), None
    if spans_batch(routing) and rdist.get_world_size() > 1:
        # collective 1: every rank's detached scores -> (B_g, L, E), identical on all ranks
        g = rdist.all_gather_cat(gated.detach().contiguous(), dim=0)
        # collective 2: the local batch sizes, to find this rank's slice of the global mask
        sizes = [torch.zeros(1, dtype=torch.long) for _ in range(rdist.get_world_size())]
        torch.distributed.all_gather(sizes, torch.tensor([gated.shape[0]]))
        start = int(sum(int(s) for s in sizes[: rdist.get_rank()]))
        mask, kth = topk_mask(g, routing, k)               # (B_g, L, E), same s_(K) on every rank
        return mask[start: start + gated.shape[0]], kth    # (B, L, E) this rank's slice
    return topk_mask(gated, routing, k)


# ----------------------------------------------------------------------------------------- losses
def _global(t: torch.Tensor) -> torch.Tensor:
    """(n, E) on this rank -> (N, E) over all ranks (autograd-aware all-gather; identity with one process)."""
    return rdist.all_gather_cat(t.contiguous(), dim=0) if rdist.get_world_size() > 1 else t


def router_similarity_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Router similarity loss (RSL) over the global batch; equals 1 at the balanced, uniform point.

    Paper Fig. 4 / Fig. 13 / Table 2; the formula is "Eqs. 9-11" as cited by a third-party
    implementation (notes §1, §2.4), not read from the paper's text:
    P = softmax(logits) (N, E), M = mask (N, E), P' = P^T P, M' = M^T M (no gradient),
    W_ii = E * M'_ii / sum_j M'_jj, W_ij = (E^2 - E) * M'_ij / sum_{a!=b} M'_ab, L = sum(W * P') / N.
    """
    E = logits.shape[-1]
    P = _global(logits.reshape(-1, E).float().softmax(-1))    # (N, E) differentiable
    M = _global(mask.reshape(-1, E).float().detach())         # (N, E) 0/1, no gradient
    N = P.shape[0]
    Pp = P.t() @ P                                             # P' (E, E) co-activation similarity
    Mp = M.t() @ M                                             # M' (E, E) selection / co-selection counts
    eye = torch.eye(E, dtype=torch.bool, device=P.device)
    diag = Mp.diagonal()                                       # (E,)
    # diagonal and off-diagonal normalised separately, so W = 1 everywhere at the balanced point
    W = torch.where(eye, E * Mp / diag.sum().clamp_min(1e-12),
                    (E * E - E) * Mp / Mp.masked_fill(eye, 0).sum().clamp_min(1e-12))   # (E, E)
    return (W * Pp).sum() / N                                  # scalar


def balance_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Switch-style balance loss E * sum_e f_e * pbar_e (1 at balance) of the token-choice baseline (not
    part of the Race recipe; Table 2 "Balance loss"); f_e = share of the selected pairs that go to e,
    pbar_e = mean softmax probability of e (global batch)."""
    E = logits.shape[-1]
    P = _global(logits.reshape(-1, E).float().softmax(-1))    # (N, E)
    M = _global(mask.reshape(-1, E).float().detach())         # (N, E)
    f = M.sum(0) / M.sum().clamp_min(1.0)                      # (E,) f_e
    return E * (f * P.mean(0)).sum()                           # scalar


# ------------------------------------------------------------------------------------ diagnostics
@torch.no_grad()
def max_violation(mask: torch.Tensor) -> float:
    """MaxVio = (max_e load_e - mean load) / mean load (Table 2)."""
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
