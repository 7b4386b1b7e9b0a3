"""Decoder layers of the OLMo-style backbone (the same block as over_tokenized's; see the README).

Pre-norm blocks: x + Attn(RMSNorm(x)) with RoPE (rotate-half convention), then + FFN(RMSNorm(.)), the
FFN a SwiGLU or (MoE arm) ``memory.MoE``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelCfg


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def rope_tables(T: int, head_dim: int, theta: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    ang = torch.arange(T, device=device, dtype=torch.float32)[:, None] * inv[None]   # (T, hd/2)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, hd): rotate the (even, odd) halves; the rotate-half convention."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelCfg):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden, bias=False)
        self.out = nn.Linear(cfg.hidden, cfg.hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)      # (B, H, T, hd)
        return self.out(y.transpose(1, 2).reshape(B, T, D))              # (B, T, D)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    """Pre-norm decoder block: x + Attn(RMSNorm(x)), then + FFN(RMSNorm(.)) with FFN a SwiGLU or the MoE.
    ``forward`` also returns u = RMSNorm of the FFN input, which the memory units read (Fig. 3)."""

    def __init__(self, cfg: ModelCfg, layer: int = 0):
        super().__init__()
        from .memory import MoE

        self.norm1 = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.norm2 = RMSNorm(cfg.hidden, cfg.norm_eps)
        moe_layers = {i % cfg.depth for i in cfg.moe.layers} if cfg.arch == "moe" else set()
        self.mlp = MoE(cfg) if layer in moe_layers else SwiGLU(cfg.hidden, cfg.ffn_hidden)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.norm1(x), cos, sin)
        u = self.norm2(x)                                                # (B, T, D) the FFN / memory input
        return x + self.mlp(u), u
