"""The MoE block that replaces the DiT MLP: router (Linear d->d, GELU, gating head d->E, training-only
target head d->p^2*C) and E fine-grained experts of hidden 4d/k ("k-in-E"), routed by one of the six
strategies of :mod:`racedit.routing`."""

from __future__ import annotations

import math

import torch
from torch import nn

from . import routing as R
from .config import MoECfg
from .kernels import moe_ffn


def expert_hidden(d: int, k: int) -> int:
    if (4 * d) % k:
        raise ValueError(f"expert hidden 4d/k = 4*{d}/{k} is not an integer")
    return 4 * d // k


def validate_moe(cfg: MoECfg) -> None:
    R.check_names(cfg.routing, cfg.gating)
    if cfg.num_experts < 1 or cfg.top_k < 1:
        raise ValueError(f"need num_experts >= 1 and top_k >= 1, got E={cfg.num_experts}, k={cfg.top_k}")
    if cfg.top_k > cfg.num_experts:
        raise ValueError(f"top_k k={cfg.top_k} > num_experts E={cfg.num_experts}: k must be <= E")
    if cfg.eval_mode not in ("threshold", "topk"):
        raise ValueError(f"unknown eval_mode {cfg.eval_mode!r}; valid: threshold, topk")


class DenseMLP(nn.Module):
    def __init__(self, d: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or 4 * d
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x), approximate="tanh"))


class MoEFFN(nn.Module):
    """y = sum over selected experts e of G(s_e) * expert_e(x); returns y with the shape of x.

    After each forward the layer keeps ``last`` = dict(logits, mask, plr) for the losses and the
    diagnostics of the model.
    """

    def __init__(self, d: int, cfg: MoECfg, target_dim: int = 0, num_tokens: int = 0):
        super().__init__()
        validate_moe(cfg)
        self.cfg = cfg
        E, k = cfg.num_experts, cfg.top_k
        self.E, self.k, self.h = E, k, expert_hidden(d, k)
        self.router_fc = nn.Linear(d, d) if cfg.router_mlp else None
        self.gate = nn.Linear(d, E)
        self.target_head = nn.Linear(d, target_dim) if (cfg.target_head and target_dim > 0) else None
        self.W1 = nn.Parameter(torch.empty(E, d, self.h))
        self.b1 = nn.Parameter(torch.empty(E, self.h))
        self.W2 = nn.Parameter(torch.empty(E, self.h, d))
        self.b2 = nn.Parameter(torch.empty(E, d))
        self.reset_experts()
        self.spans_batch = R.spans_batch(cfg.routing)
        # per-row EMA threshold (scalar for race, (E,) for bl, (L,) for be); fixed shape so DDP can
        # broadcast it
        self.num_tokens = num_tokens
        shape = R.threshold_shape(cfg.routing, num_tokens, E) if self.spans_batch else (0,)
        self.register_buffer("tau", torch.zeros(shape), persistent=True)
        self.register_buffer("tau_ready", torch.zeros((), dtype=torch.bool), persistent=True)
        self.last: dict = {}
        self.impl = cfg.kernel_impl

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
        h = nn.functional.gelu(self.router_fc(x)) if self.router_fc is not None else x
        return h, self.gate(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        cfg = self.cfg
        h, logits = self.router(x)
        gated = R.apply_gating(logits, cfg.gating)
        if self.spans_batch and self.num_tokens != L:
            raise ValueError(f"MoE layer built for {self.num_tokens} tokens got {L}")
        mask, kth = R.route(gated, cfg.routing, self.k, self.training, cfg.eval_mode, self.tau)
        if self.training and self.spans_batch and kth is not None:
            with torch.no_grad():
                kth = kth.reshape(self.tau.shape).to(self.tau.dtype)
                if cfg.threshold_init == "first_batch" and not bool(self.tau_ready):
                    self.tau.copy_(kth)
                else:
                    self.tau.mul_(cfg.threshold_decay).add_((1 - cfg.threshold_decay) * kth)
                self.tau_ready.fill_(True)
        gates = R.gate_values(logits, cfg.gating, mask, cfg.normalize_topk)
        N = B * L
        flat_mask = mask.reshape(N, self.E)
        e_idx, t_idx = flat_mask.t().nonzero(as_tuple=True)
        counts = flat_mask.sum(0)
        g = gates.reshape(N, self.E)[t_idx, e_idx]
        y = moe_ffn(x.reshape(N, d), t_idx, counts, g.to(x.dtype), self.W1, self.b1, self.W2, self.b2,
                    impl=self.impl)
        plr = self.target_head(h) if (self.target_head is not None and self.training) else None
        self.last = {"logits": logits, "mask": mask, "plr": plr}
        return y.reshape(B, L, d)
