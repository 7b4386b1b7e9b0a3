"""The MoE block that replaces every DiT MLP (paper Fig. 2, Fig. 12; notes §2.2).

Router: trunk h = GELU(W_r x + b_r) (d -> d), a gating head d -> E (the scores) and a training-only
target head d -> p^2*C for the per-layer regularisation (PLR, Fig. 5 / Fig. 12; dropped at inference).
E fine-grained experts of hidden 4d/k ("k-in-E", Table 5), so the *average* activated FFN compute
equals the dense MLP's; no shared experts. Routing by one of the six strategies of
:mod:`racedit.routing` (Table 6); for the batch-spanning ones an EMA threshold tau is tracked during
training and used at inference (Table 3 "+ Learnable threshold").

Notation

=========  ==========================================================  ==================
symbol     meaning                                                     shape
=========  ==========================================================  ==================
x          tokens entering the block (after adaLN modulation)          (B, L, d)
h          router trunk GELU(W_r x + b_r)                              (B, L, d)
logits     gating head W_g h + b_g (the scores s before G)             (B, L, E)
M          selection mask of :func:`racedit.routing.route`             (B, L, E) bool
G(s)       gate value of a selected pair (identity: the raw logit)     (B, L, E)
tau        EMA of the training K-th score (batch-spanning routings)    () race, (E,) bl, (L,) be
N, P       tokens B*L; selected (token, expert) pairs                  ints
W1, b1     expert up-projections                                       (E, d, h_e), (E, h_e)
W2, b2     expert down-projections                                     (E, h_e, d), (E, d)
h_e        expert hidden 4d/k                                          int
y          sum over selected e of G(s_te) * FFN_e(x_t)                 (B, L, d)
=========  ==========================================================  ==================
"""

from __future__ import annotations

import math

import torch
from torch import nn

from reprokit.config import ConfigError

from . import routing as R
from .config import MoECfg
from .kernels import moe_ffn


def expert_hidden(d: int, k: int) -> int:
    """h_e = 4d/k: the fine-grained split of Table 5 (activated FFN = the dense 4d MLP)."""
    if (4 * d) % k:
        raise ConfigError(f"expert hidden 4d/k = 4*{d}/{k} is not an integer (model.hidden, model.moe.top_k)")
    return 4 * d // k


def validate_moe(cfg: MoECfg) -> None:
    R.check_names(cfg.routing, cfg.gating)
    if cfg.num_experts < 1 or cfg.top_k < 1:
        raise ConfigError(f"need num_experts >= 1 and top_k >= 1, got E={cfg.num_experts}, k={cfg.top_k}")
    if cfg.top_k > cfg.num_experts:
        raise ConfigError(f"model.moe.top_k k={cfg.top_k} > num_experts E={cfg.num_experts}: k must be <= E")
    if cfg.eval_mode not in ("threshold", "topk"):
        raise ConfigError(f"unknown eval_mode {cfg.eval_mode!r}; valid: threshold, topk")


class DenseMLP(nn.Module):
    """DiT's MLP Linear(d, 4d) + GELU-tanh + Linear(4d, d): (..., d) -> (..., d)."""

    def __init__(self, d: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or 4 * d
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x), approximate="tanh"))


class MoEFFN(nn.Module):
    """y = sum over selected experts e of G(s_e) * FFN_e(x); (B, L, d) -> (B, L, d).

    After each forward the layer keeps ``last`` = dict(logits, mask, plr) for the losses and the
    diagnostics of the model. ``impl`` picks the expert kernel (auto | triton | torch).
    """

    def __init__(self, d: int, cfg: MoECfg, target_dim: int = 0, num_tokens: int = 0, impl: str = "auto"):
        super().__init__()
        validate_moe(cfg)
        self.cfg = cfg
        E, k = cfg.num_experts, cfg.top_k
        self.E, self.k, self.h = E, k, expert_hidden(d, k)
        # router (Fig. 12): trunk d -> d, gating head d -> E, training-only target head d -> p^2*C
        self.router_fc = nn.Linear(d, d) if cfg.router_mlp else None
        self.gate = nn.Linear(d, E)
        self.target_head = nn.Linear(d, target_dim) if (cfg.target_head and target_dim > 0) else None
        self.W1 = nn.Parameter(torch.empty(E, d, self.h))
        self.b1 = nn.Parameter(torch.empty(E, self.h))
        self.W2 = nn.Parameter(torch.empty(E, self.h, d))
        self.b2 = nn.Parameter(torch.empty(E, d))
        self.reset_experts()
        self.spans_batch = R.spans_batch(cfg.routing)
        # tau: one value per D_A row (scalar for race, (E,) for bl, (L,) for be); a fixed-shape buffer
        # so DDP can broadcast it and checkpoints hold it (exact resume)
        self.num_tokens = num_tokens
        shape = R.threshold_shape(cfg.routing, num_tokens, E) if self.spans_batch else (0,)
        self.register_buffer("tau", torch.zeros(shape), persistent=True)
        self.register_buffer("tau_ready", torch.zeros((), dtype=torch.bool), persistent=True)
        self.last: dict = {}
        self.impl = impl

    def reset_experts(self) -> None:
        if self.W1.is_meta:
            return
        b1 = 1 / math.sqrt(self.W1.shape[1])
        b2 = 1 / math.sqrt(self.W2.shape[1])
        with torch.no_grad():
            self.W1.uniform_(-b1, b1)
            self.b1.uniform_(-b1, b1)
            self.W2.uniform_(-b2, b2)
            self.b2.uniform_(-b2, b2)

    def router(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h (B, L, d), logits (B, L, E)) of Fig. 12's router."""
        h = nn.functional.gelu(self.router_fc(x)) if self.router_fc is not None else x
        return h, self.gate(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        cfg = self.cfg
        h, logits = self.router(x)                             # (B, L, d), (B, L, E)
        gated = R.apply_gating(logits, cfg.gating)             # G(s) (B, L, E), Table 1
        if self.spans_batch and self.num_tokens != L:
            raise ValueError(f"MoE layer built for {self.num_tokens} tokens got {L}")
        # M (B, L, E); s_(K) (|D_A|,) in training (top-K over the global batch for bl/be/race)
        mask, kth = R.route(gated, cfg.routing, self.k, self.training, cfg.eval_mode, self.tau)
        if self.training and self.spans_batch and kth is not None:
            # tau <- beta * tau + (1 - beta) * s_(K) (Table 3 "+ Learnable threshold"; EMA form and
            # beta are ours, notes §2.3); initialised from the first batch
            with torch.no_grad():
                kth = kth.reshape(self.tau.shape).to(self.tau.dtype)
                if cfg.threshold_init == "first_batch" and not bool(self.tau_ready):
                    self.tau.copy_(kth)
                else:
                    self.tau.mul_(cfg.threshold_decay).add_((1 - cfg.threshold_decay) * kth)
                self.tau_ready.fill_(True)
        gates = R.gate_values(logits, cfg.gating, mask, cfg.normalize_topk)   # (B, L, E), 0 where M = 0
        N = B * L
        flat_mask = mask.reshape(N, self.E)                    # (N, E)
        # the selected pairs sorted by expert: a variable number of experts per token (0..E)
        e_idx, t_idx = flat_mask.t().nonzero(as_tuple=True)    # (P,), (P,)
        counts = flat_mask.sum(0)                              # (E,) pairs per expert
        g = gates.reshape(N, self.E)[t_idx, e_idx]             # (P,)
        y = moe_ffn(x.reshape(N, d), t_idx, counts, g.to(x.dtype), self.W1, self.b1, self.W2, self.b2,
                    impl=self.impl)                            # (N, d)
        # PLR target head H_l(h_l) (Fig. 5 / Fig. 12), training only: (B, L, p^2*C)
        plr = self.target_head(h) if (self.target_head is not None and self.training) else None
        self.last = {"logits": logits, "mask": mask, "plr": plr}
        return y.reshape(B, L, d)                              # (B, L, d)
