"""The memory layer: PKM (Lample et al. 2019) and every UltraMem switch of the paper's Table 2.

Notation
--------
=========  ================================================================  ==================
symbol     meaning                                                           shape
=========  ================================================================  ==================
x          normed FFN input of the reading block (token rows flattened)      (N, D)
z          x after the optional causal depthwise query conv ("query conv")   (N, D)
q          per-head query, LayerNorm-ed (PKM's BatchNorm -> LN, causal)      (N, H, D_k)
q1, q2     row / column halves of q                                          (N, H, D_k/2)
K          sub-keys per head, side (row / col), rank: K[h, s, r]             (H, 2, r, n, D_k/2)
S_row      row scores K_row q1 (rank r; r = 1 is plain PKM)                  (N, H, r, n)
C          Tucker cores, one per MCS core c (TDQKR, Sec. 4.2)                (H, h, r, r)
u, t       top left / right singular vectors of sum_c C_c (detached)         (H, r)
G_c        exact grid scores S_row_sel^T C_c S_col_sel on the m x m sub-grid  (N, H, h, m, m)
s          kept scores (summed over cores picks the top-m; each core's own    (N, H, h, m)
           score weights its 1/h slice of the value width: MCS, Sec. 4.4)
v          virtual slot i n + j -> shuffled -> (group p, physical row)       (N, H, m)
V          physical value table (n^2 / E rows, IVE Sec. 4.3)                 (n^2/E, D_v)
o          per-group pooled values, projected by W_p (Linear(E D_v -> D))    (N, D)
=========  ================================================================  ==================

Equations (paper arXiv 2411.12364, Secs. 3-4; PKM base: 1907.05242 Sec. 3):
* PKM: top-m of q1.K_row and of q2.K_col, top-m of the m x m sums, softmax, weighted sum of V rows.
* TDQKR: S_grid = S_row^T C S_col; stage 1 keeps the top-m rows of u^T S_row and columns of t^T S_col
  (C ~ lambda u t^T, rank-1 SVD), stage 2 scores the m x m sub-grid exactly and keeps the top-m.
  L_aux = alpha / (r - 1) sum_{i>=2} max(0, lambda_i - tau)^2 on each core's singular values.
* IVE: V~_p = V W_p; o = sum_p W_p^T (V^T s_p): pool per virtual block p, then project.
* Improved init: Var(V) = E / (2 m H L) (L = model.depth), so each block's output variance is ~ 1 / (2L)
  for unit scores; the projection gets Var(W) = 1 / (E D_v). The scores are brought near 1 by the LayerNorm
  gains: key gain 1 / sqrt(D_k / 2) (a sub-key's width; the notes' "1 / sqrt(D_k)" read per side, our
  choice) and query gain 1 / sqrt(E[Y]), Y the mean of the top-m of n standard normals (a fixed Monte-Carlo
  estimate, ``expected_topm_mean``). Both rest on secondary sources (notes Sec. 3.3).
* Query conv (kernel k, depthwise, causal): initialised as the identity (weight 1 on the current token, 0 on
  the k - 1 earlier ones; our choice, the paper's init of it is unknown), so at init the query reads the
  token itself and the mixing is learnt. A random N(0, 1/k) init scrambles the query input at the start and
  cost 0.75 nats of validation loss after 300 steps in our probe (README "Deviations").
* Before the improved init (PKM and the ladder's early rows), q/k LayerNorm gains are the official v1
  code's fixed 1 / D_k^0.33; with the query LayerNorm alone (PKM's BatchNorm replaced) the gain is 1.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from reprokit.errors import ShapeError
from reprokit.rng import step_generator

from .config import ModelCfg
from .kernels import grid_topm, key_topm, weighted_bag


def top1_singular_vectors(core: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """core (H, r, r) -> (u, t), each (H, r): the top singular vectors of every head's core, sign-fixed so
    that u has a positive sum (our convention: the SVD's sign is arbitrary, and a flipped pair would make
    stage 1 keep the lowest coarse scores)."""
    U, _, Vh = torch.linalg.svd(core.detach().float())
    u, t = U[..., :, 0], Vh[..., 0, :]                                   # (H, r)
    sign = torch.where(u.sum(-1, keepdim=True) < 0, -1.0, 1.0)
    return (u * sign).to(core.dtype), (t * sign).to(core.dtype)


@functools.cache
def expected_topm_mean(n: int, m: int) -> float:
    """E[mean of the top-m of n i.i.d. N(0, 1)] by a fixed-seed Monte-Carlo estimate over 2^20 normals
    (no closed form; the improved init's query LayerNorm gain is 1 / sqrt of it)."""
    draws = max(64, (1 << 20) // n)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(draws, n, generator=g, dtype=torch.float64, device="cpu")   # also under a meta-device context
    return float(z.topk(min(m, n), dim=-1)[0].mean())


def tucker_aux_loss(core: torch.Tensor, alpha: float, tau: float) -> torch.Tensor:
    """alpha / (r - 1) sum_{i >= 2} max(0, lambda_i - tau)^2, averaged over heads and cores (Table 5)."""
    r = core.shape[-1]
    if r < 2 or alpha == 0:
        return core.new_zeros(())
    lam = torch.linalg.svdvals(core.float())                            # (..., r), descending
    return alpha / (r - 1) * F.relu(lam[..., 1:] - tau).pow(2).sum(-1).mean()


class MemoryLayer(nn.Module):
    """One memory unit; ``forward(x (B, T, D)) -> (B, T, D)``; ``self.aux`` holds the TDQKR loss."""

    def __init__(self, cfg: ModelCfg, unit: int = 0, seed: int = 0):
        super().__init__()
        mc = cfg.mem
        self.cfg, self.mc, self.D = cfg, mc, cfg.hidden
        self.H, self.m, self.n, self.dk = mc.heads, mc.topm, mc.n_keys, mc.k_dim
        self.tucker = mc.tucker_rank >= 1
        self.r = max(mc.tucker_rank, 1)
        self.h = mc.cores
        self.E = mc.ive
        self.Dv = mc.value_width(cfg.hidden)
        self.Hq = self.H // 2 if mc.share_query else self.H
        self.n_phys = mc.n_physical()
        self.conv = (nn.Conv1d(self.D, self.D, mc.query_conv, groups=self.D, bias=False)
                     if mc.query_conv else None)
        self.query = nn.Linear(self.D, self.Hq * self.dk, bias=False)
        self.q_norm = nn.LayerNorm(self.dk)
        self.keys = nn.Parameter(torch.empty(self.H, 2, self.r, self.n, self.dk // 2))
        self.k_norm = nn.LayerNorm(self.dk // 2) if mc.key_norm else None
        self.core = nn.Parameter(torch.empty(self.H, self.h, self.r, self.r)) if self.tucker else None
        self.values = nn.Parameter(torch.empty(self.n_phys, self.Dv))
        self.proj = nn.Linear(self.E * self.Dv, self.D, bias=False) if (self.E > 1 or self.Dv != self.D) else None
        if self.E > 1 and mc.ive_shuffle:
            g = step_generator(seed, "ive-shuffle", unit)
            self.register_buffer("perm", torch.randperm(self.n * self.n, generator=g), persistent=True)
        else:
            self.perm = None
        self.aux = torch.zeros(())
        self._standalone_init()

    # ---------------------------------------------------------------- init (called by model.init_parameters)
    @torch.no_grad()
    def _standalone_init(self) -> None:
        """Initialise every parameter by ``init_param`` from the global RNG, so a layer built on its own never
        holds uninitialised memory; ``model.init_parameters`` re-draws each one from its keyed stream when the
        layer is part of a model. Nothing to draw on the meta device."""
        if self.values.is_meta:
            return
        for local, p in self.named_parameters():
            self.init_param(local, p, None)

    @torch.no_grad()
    def init_param(self, local: str, p: torch.Tensor, generator: torch.Generator | None) -> None:
        """The init of one parameter (``local``: its name inside this layer), drawn from ``generator`` (None:
        the global RNG): Tucker cores U(0, 1) (as the official code); the query conv as the identity; q/k
        LayerNorm gains ``norm_gains``, other norm weights 1 and biases 0; the rest N(0, ``param_std``)."""
        if local == "core":
            p.copy_(torch.rand(p.shape, generator=generator, dtype=torch.float32).to(p.dtype))
            return
        if local == "conv.weight":                                          # identity: the current token only
            p.zero_()
            p[..., -1] = 1.0
            return
        std = self.param_std(local)
        if std is None:                                                     # LayerNorm gains / biases
            gq, gk = self.norm_gains()
            gain = {"q_norm.weight": gq, "k_norm.weight": gk}.get(local, 1.0)
            p.fill_(gain if local.endswith("weight") else 0.0)
            return
        p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p.dtype) * std)

    def value_std(self) -> float:
        if self.mc.init == "improved":
            return math.sqrt(self.E / (2 * self.m * self.H * self.cfg.depth))
        return self.Dv ** -0.5

    def norm_gains(self) -> tuple[float, float]:
        """(query LayerNorm gain, key LayerNorm gain) at init; see the module docstring."""
        if self.mc.init == "improved":
            return expected_topm_mean(self.n, self.m) ** -0.5, (self.dk // 2) ** -0.5
        if self.k_norm is not None:
            g = self.dk ** -0.33
            return g, g
        return 1.0, 1.0

    def param_std(self, local: str) -> float | None:
        """std of N(0, std) for a parameter name inside this layer; None: not Gaussian (norms, cores)."""
        if local == "values":
            return self.value_std()
        if local == "keys":
            return (self.dk // 2) ** -0.5
        if local == "query.weight":
            return self.D ** -0.5
        if local == "proj.weight":
            return (1.0 / math.sqrt(self.E * self.Dv) if self.mc.init == "improved"
                    else self.cfg.init_std / math.sqrt(2 * self.cfg.depth))
        return None                                  # norms, cores, the query conv (see init_param)

    # ---------------------------------------------------------------- retrieval
    def queries(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D) -> (per-head query q (N, H, D_k), sub-keys (H, 2, r, n, D_k/2), LayerNorm-ed if set)."""
        B, T, D = x.shape
        z = x
        if self.conv is not None:
            z = self.conv(F.pad(x.transpose(1, 2), (self.mc.query_conv - 1, 0))).transpose(1, 2)   # causal (B, T, D)
        q = self.q_norm(self.query(z).view(B * T, self.Hq, self.dk))           # (N, Hq, D_k)
        if self.Hq != self.H:
            q = q.repeat_interleave(self.H // self.Hq, dim=1)                   # shared query (N, H, D_k)
        keys = self.k_norm(self.keys) if self.k_norm is not None else self.keys
        return q, keys

    def _combiners(self, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head rank weights of the coarse (stage-1) scores: (u, t) of TDQKR, or 1 for plain PKM."""
        if not self.tucker:
            one = torch.ones(self.H, 1, dtype=dtype, device=self.keys.device)
            return one, one
        u, t = top1_singular_vectors(self.core.sum(1))                         # (H, r)
        return u.to(dtype), t.to(dtype)

    def select(self, q: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two-stage top-m from the queries: stage 1 per side by ``kernels.key_topm`` (kernel (a) or its
        reference), then ``select_from_stage1``."""
        half = self.dk // 2
        wu, wt = self._combiners(q.dtype)
        ia, sr = key_topm(q[..., :half].contiguous(), keys[:, 0], wu, self.m, impl=self.cfg.impl)   # (N, H, m), (N, H, r, m)
        ib, scol = key_topm(q[..., half:].contiguous(), keys[:, 1], wt, self.m, impl=self.cfg.impl)
        return self.select_from_stage1(ia, sr, ib, scol)

    def select_from_scores(self, s_row: torch.Tensor, s_col: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same selection from full per-rank scores S (N, H, r, n) (tests; the reference of stage 1)."""
        wu, wt = self._combiners(s_row.dtype)
        m, r = self.m, self.r
        ia = torch.einsum("bhrn,hr->bhn", s_row, wu).topk(m, dim=-1)[1]
        ib = torch.einsum("bhrn,hr->bhn", s_col, wt).topk(m, dim=-1)[1]
        sr = s_row.gather(-1, ia[:, :, None].expand(-1, -1, r, -1))
        scol = s_col.gather(-1, ib[:, :, None].expand(-1, -1, r, -1))
        return self.select_from_stage1(ia, sr, ib, scol)

    def select_from_stage1(self, ia: torch.Tensor, sr: torch.Tensor, ib: torch.Tensor, scol: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 2 on the m x m sub-grid (``kernels.grid_topm``: kernel (b) or its reference) -> (virtual slot
        ids (N, H, m), per-core scores (N, H, h, m)).
        ia / ib (N, H, m): kept rows / columns; sr / scol (N, H, r, m): their per-rank scores."""
        m, n = self.m, self.n
        core = self.core if self.tucker else None                              # None: PKM's additive keys
        flat, sc = grid_topm(sr, scol, core, m, impl=self.cfg.impl)            # kernel (b): (N, H, m), (N, H, h, m)
        rows, cols = ia.gather(-1, flat // m), ib.gather(-1, flat % m)
        return rows * n + cols, sc

    def read(self, slots: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """IVE read: slots (N, H, m) virtual ids, w (N, H, h, m) weights -> o (N, D)."""
        N = slots.shape[0]
        h, E = self.h, self.E
        v = self.perm[slots] if self.perm is not None else slots              # shuffled virtual ids
        group, row = v // self.n_phys, v % self.n_phys                         # (N, H, m)
        core = torch.arange(h, device=slots.device)[None, None, :, None]
        tab_rows = row[:, :, None] * h + core                                  # (N, H, h, m) rows of V as (n_phys h, D_v/h)
        tok = torch.arange(N, device=slots.device)[:, None, None, None]
        bags = (tok * E + group[:, :, None]) * h + core                        # (N, H, h, m)
        table = self.values.view(self.n_phys * h, self.Dv // h)
        pooled = weighted_bag(table, tab_rows.reshape(-1), w.reshape(-1), bags.reshape(-1), N * E * h,
                              impl=self.cfg.impl)                              # (N E h, D_v/h)
        pooled = pooled.view(N, E * self.Dv)                                   # (N, E D_v)
        return self.proj(pooled) if self.proj is not None else pooled         # (N, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.D:
            raise ShapeError(f"memory layer input {tuple(x.shape)}: expected (B, T, model.hidden={self.D})")
        B, T, D = x.shape
        q, keys = self.queries(x)
        slots, sc = self.select(q, keys)
        w = sc.float().softmax(-1).to(sc.dtype) if self.mc.softmax else sc     # (N, H, h, m)
        self.aux = (tucker_aux_loss(self.core, self.mc.aux_alpha, self.mc.aux_tau)
                    if self.tucker and self.training else x.new_zeros(()))
        return self.read(slots, w).view(B, T, D)                               # (B, T, D)


class MoE(nn.Module):
    """Top-k of E SwiGLU experts, softmax gate (weights not renormalised, OLMoE style), Switch balance loss
    ``balance * E * sum_e f_e P_e`` (f_e: share of the assignments, P_e: mean gate probability)."""

    def __init__(self, cfg: ModelCfg):
        super().__init__()
        mc = cfg.moe
        self.mc = mc
        d, f = cfg.hidden, mc.expert_hidden
        self.gate = nn.Linear(d, mc.experts, bias=False)
        self.w_gate = nn.Parameter(torch.empty(mc.experts, d, f))
        self.w_up = nn.Parameter(torch.empty(mc.experts, d, f))
        self.w_down = nn.Parameter(torch.empty(mc.experts, f, d))
        for w in (self.w_gate, self.w_up, self.w_down):     # usable standalone; model.init_parameters re-draws
            nn.init.normal_(w, std=cfg.init_std)
        self.aux = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        xf = x.reshape(-1, D)                                                  # (N, D)
        probs = self.gate(xf).float().softmax(-1)                              # (N, E)
        topv, topi = probs.topk(self.mc.top_k, dim=-1)                         # (N, k)
        out = torch.zeros_like(xf)
        for e in range(self.mc.experts):
            tok, slot = (topi == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            xe = xf[tok]                                                       # (n_e, D)
            he = F.silu(xe @ self.w_gate[e]) * (xe @ self.w_up[e])             # (n_e, f)
            out.index_add_(0, tok, (he @ self.w_down[e]) * topv[tok, slot, None].to(x.dtype))
        if self.training and self.mc.balance > 0:
            E = self.mc.experts
            f_e = torch.zeros(E, device=x.device).index_add_(0, topi.reshape(-1),
                                                             torch.ones(topi.numel(), device=x.device))
            self.aux = self.mc.balance * E * (f_e / topi.numel() * probs.mean(0)).sum()
        else:
            self.aux = x.new_zeros(())
        return out.view(B, T, D)
