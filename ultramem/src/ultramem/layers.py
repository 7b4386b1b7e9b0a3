"""The decoder block of the OLMo-style backbone (its pieces: reprokit.lmlayers, shared with over_tokenized).

Pre-norm blocks: x + Attn(RMSNorm(x)) with RoPE (rotate-half convention), then + FFN(RMSNorm(.)), the
FFN a SwiGLU or (MoE arm) ``memory.MoE``.
"""

from __future__ import annotations

import torch.nn as nn

from reprokit.lmlayers import Attention, RMSNorm, SwiGLU, apply_rope, rope_tables

from .config import ModelCfg

__all__ = ["Attention", "Block", "RMSNorm", "SwiGLU", "apply_rope", "rope_tables"]


class Block(nn.Module):
    """Pre-norm decoder block: x + Attn(RMSNorm(x)), then + FFN(RMSNorm(.)) with FFN a SwiGLU or the MoE.
    ``forward`` also returns u = RMSNorm of the FFN input, which the memory units read (Fig. 3)."""

    def __init__(self, cfg: ModelCfg, layer: int = 0):
        super().__init__()
        from .memory import MoE

        self.norm1 = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.attn = Attention(cfg.hidden, cfg.heads)
        self.norm2 = RMSNorm(cfg.hidden, cfg.norm_eps)
        moe_layers = {i % cfg.depth for i in cfg.moe.layers} if cfg.arch == "moe" else set()
        self.mlp = MoE(cfg) if layer in moe_layers else SwiGLU(cfg.hidden, cfg.ffn_hidden)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.norm1(x), cos, sin)
        u = self.norm2(x)                                                # (B, T, D) the FFN / memory input
        return x + self.mlp(u), u
