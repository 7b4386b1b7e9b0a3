"""The small OLMo-style decoder with Over-Encoding input and the optional MTP-DS head (Over-Decoding / OT).

Notation
--------
=========  ==============================================================  =============
symbol     meaning                                                         shape
=========  ==============================================================  =============
x          input token ids                                                 (B, T)
e          input embeddings: wte[x] (baseline) or OE(x) (embedding.py)     (B, T, D)
h          trunk state after the last block (before the final norm)        (B, T, D)
L          ``model.depth`` pre-norm blocks: RMSNorm -> causal attention    int
           with RoPE -> residual; RMSNorm -> SwiGLU -> residual
logits     next-token logits, lm_head(norm_f(h)); lm_head = wte (tied)     (B, T, V)
mtp        MTP-DS head (Sec. 3.2, following DeepSeek-V3): for position t   (B, T-1, V)
           h'_t = Block(M [RMSNorm(h_t); RMSNorm(e_{t+1})]), logits of
           token t+2 = lm_head(norm_f(h'_t)); M: Linear(2D -> D)
=========  ==============================================================  =============

Loss (Sec. 4.3, Table 5): CE(logits, x_{t+1}) + lambda CE(mtp, x_{t+2}); OT = OE + this head, lambda = 0.1.
The MTP head reuses the same (over-encoded) embedding of token t+1 and the shared output head. Attention is
not masked at document boundaries (packed sequences, as OLMo); only the n-gram window stops there.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from reprokit.rng import step_generator

from .config import ModelCfg
from .embedding import OverEncoding, build_embedding
from .layers import Block, MTPHead, RMSNorm, rope_tables


class OverTokenizedLM(nn.Module):
    """Decoder LM; ``forward(ids, doc_start=None, return_mtp=False)`` -> logits (B, T, V) [, mtp (B, T-1, V)]."""

    def __init__(self, cfg: ModelCfg, sparse_tables: bool = True):
        super().__init__()
        cfg.check_complete()
        self.cfg = cfg
        self.embed = build_embedding(cfg.vocab_size, cfg.hidden, cfg.oe, sparse=sparse_tables, impl=cfg.impl)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm_f = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.wte.weight
        self.mtp = nn.ModuleList(MTPHead(cfg) for _ in range(cfg.mtp.heads))

    def forward(self, ids: torch.Tensor, doc_start: torch.Tensor | None = None, return_mtp: bool = False):
        B, T = ids.shape
        e = self.embed(ids, doc_start)                                   # (B, T, D)
        cos, sin = rope_tables(T, self.cfg.hidden // self.cfg.heads, self.cfg.rope_theta, ids.device)
        h = e
        for blk in self.blocks:
            h = blk(h, cos, sin)                                         # (B, T, D)
        logits = self.lm_head(self.norm_f(h))                            # (B, T, V)
        if not return_mtp:
            return logits
        if not self.mtp or T < 2:
            return logits, None
        z = self.mtp[0](h[:, :-1], e[:, 1:], cos[: T - 1], sin[: T - 1])   # (B, T-1, D)
        return logits, self.lm_head(self.norm_f(z))                      # (B, T-1, V)

    def table_parameters(self) -> list[nn.Parameter]:
        return [self.embed.ngram.weight] if isinstance(self.embed, OverEncoding) else []

    def param_counts(self) -> dict[str, int]:
        """Parameter groups: n-gram tables, embedding (1-gram + projections), non-embedding (trunk + heads)."""
        tables = sum(p.numel() for p in self.table_parameters())
        emb = sum(p.numel() for p in self.embed.parameters()) - tables
        total = sum(p.numel() for p in self.parameters())
        return {"total": total, "ngram_tables": tables, "embedding": emb, "non_embedding": total - tables - emb}


def lm_losses(logits: torch.Tensor, targets: torch.Tensor, mtp_logits: torch.Tensor | None = None,
              mtp_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(total, next-token CE, t+2 CE or None). targets (B, T) = x shifted by one; the t+2 targets are targets[:, 1:]."""
    V = logits.shape[-1]
    ce = F.cross_entropy(logits.reshape(-1, V).float(), targets.reshape(-1))
    if mtp_logits is None:
        return ce, ce, None
    ce2 = F.cross_entropy(mtp_logits.reshape(-1, V).float(), targets[:, 1:].reshape(-1))
    return ce + mtp_weight * ce2, ce, ce2


@torch.no_grad()
def init_parameters(model: nn.Module, seed: int, prefixes: tuple[str, ...] | None = None) -> None:
    """Every parameter from its own keyed stream ``(seed, "init", name)``, so the weights two arms share
    (trunk, wte) start identical whatever else an arm adds. N(0, init_std); block output projections
    N(0, init_std / sqrt(2 depth)); norms 1; OE projections N(0, 1/w) ("fan_in") or N(0, init_std)."""
    cfg = model.cfg
    for name, p in model.named_parameters():
        if p.device.type == "meta" or (prefixes is not None and not name.startswith(prefixes)):
            continue
        if name.endswith("norm.weight") or ".norm" in name or name.startswith("norm"):
            p.fill_(1.0)
            continue
        std = cfg.init_std
        if name.endswith(("embed.ngram.weight", "embed_tokens.ngram.weight")) and cfg.oe.table_init == "zero":
            p.zero_()
            continue
        if name.endswith(("attn.out.weight", "mlp.down.weight")):
            std = cfg.init_std / math.sqrt(2 * cfg.depth)
        elif name.endswith(("embed.proj", "embed_tokens.proj")):
            std = model.embed.proj_std(cfg.init_std)
        g = step_generator(seed, "init", name)
        p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * std)


def build_model(cfg: ModelCfg, seed: int = 0, sparse_tables: bool = True) -> nn.Module:
    """Our decoder (``model.backbone: ours``) or a transformers backbone with our embedding (paper.py)."""
    if cfg.backbone != "ours":
        from .paper import build_paper_model

        model = build_paper_model(cfg, sparse_tables=sparse_tables)
        init_parameters(model, seed, prefixes=("hf.model.embed_tokens.", "mtp."))   # the backbone inits itself
        return model
    model = OverTokenizedLM(cfg, sparse_tables=sparse_tables)
    init_parameters(model, seed)
    return model
