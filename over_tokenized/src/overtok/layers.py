"""The decoder block of the OLMo-style backbone (its pieces: reprokit.lmlayers) and the MTP-DS head.

Pre-norm blocks: x + Attn(RMSNorm(x)) with RoPE (rotate-half convention), then + SwiGLU(RMSNorm(.)).
``MTPHead`` is one DeepSeek-V3 style multi-token-prediction module (paper Sec. 3.2, Table 5):
h'_t = Block(M [RMSNorm(h_t); RMSNorm(e_{t+1})]) with M: Linear(2D -> D), shapes (B, T-1, D).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from reprokit.lmlayers import Attention, RMSNorm, SwiGLU, apply_rope, rope_tables

from .config import ModelCfg

__all__ = ["Attention", "Block", "MTPHead", "RMSNorm", "SwiGLU", "apply_rope", "rope_tables"]


class Block(nn.Module):
    """Pre-norm decoder block: x + Attn(RMSNorm(x)), then + SwiGLU(RMSNorm(.))."""

    def __init__(self, cfg: ModelCfg):
        super().__init__()
        self.norm1 = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.attn = Attention(cfg.hidden, cfg.heads)
        self.norm2 = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.mlp = SwiGLU(cfg.hidden, cfg.ffn_hidden)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class MTPHead(nn.Module):
    """One MTP-DS module (DeepSeek-V3 style): predicts token t+2 from h_t and the embedding of token t+1."""

    def __init__(self, cfg: ModelCfg):
        super().__init__()
        self.norm_h = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.norm_e = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.merge = nn.Linear(2 * cfg.hidden, cfg.hidden, bias=False)
        self.block = Block(cfg)

    def forward(self, h, e_next, cos, sin):
        z = self.merge(torch.cat([self.norm_h(h), self.norm_e(e_next)], dim=-1))   # (B, T-1, D)
        return self.block(z, cos, sin)                                           # (B, T-1, D)
