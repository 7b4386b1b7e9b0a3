"""The small OLMo-style decoder with the sparse module of the arm: dense FFN, MoE FFN, or memory units.

Notation
--------
=========  ==============================================================  =============
symbol     meaning                                                         shape
=========  ==============================================================  =============
x          input token ids                                                 (B, T)
h_i        residual stream after block i                                   (B, T, D)
u_i        RMSNorm of block i's FFN input (read by the memory units)       (B, T, D)
(a, b)     a memory unit (``model.mem.placement`` "a:b"): reads u_a, its   ints
           output is added to h_b (skip-layer, paper Fig. 3 / Table 2
           "split big mem & skip"); a == b: parallel to block a's FFN
logits     lm_head(norm_f(h_L)); lm_head = wte (tied)                      (B, T, V)
aux        sum of the modules' auxiliary losses (MoE balance, TDQKR)       ()
=========  ==============================================================  =============
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from reprokit.rng import step_generator

from .config import ModelCfg
from .layers import Block, RMSNorm, rope_tables
from .memory import MemoryLayer, MoE


class UltraMemLM(nn.Module):
    """Decoder LM; ``forward(ids, doc_start=None) -> logits (B, T, V)``; ``self.aux`` after a forward."""

    def __init__(self, cfg: ModelCfg, seed: int = 0):
        super().__init__()
        cfg.check_complete()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.depth))
        self.units = cfg.mem.units(cfg.depth) if cfg.arch == "memory" else []
        self.mems = nn.ModuleList(MemoryLayer(cfg, k, seed) for k in range(len(self.units)))
        self.norm_f = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.aux = torch.zeros(())

    def forward(self, ids: torch.Tensor, doc_start: torch.Tensor | None = None) -> torch.Tensor:
        B, T = ids.shape
        h = self.wte(ids)                                                # (B, T, D)
        cos, sin = rope_tables(T, self.cfg.hidden // self.cfg.heads, self.cfg.rope_theta, ids.device)
        pending: dict[int, list[torch.Tensor]] = {}
        for i, blk in enumerate(self.blocks):
            h, u = blk(h, cos, sin)                                      # (B, T, D) each
            for k, (a, b) in enumerate(self.units):
                if a == i:
                    pending.setdefault(b, []).append(self.mems[k](u))    # skip-layer: read at a, add at b
            for o in pending.pop(i, []):
                h = h + o
        aux = [m.aux for m in self.modules() if isinstance(m, MemoryLayer | MoE)]
        self.aux = torch.stack([a.to(h.dtype) for a in aux]).sum() if aux else h.new_zeros(())
        return self.lm_head(self.norm_f(h))                              # (B, T, V)

    def value_parameters(self) -> list[nn.Parameter]:
        return [m.values for m in self.mems]

    def param_counts(self) -> dict[str, int]:
        """total; sparse (memory values or MoE experts); embedding (wte, tied head); non_embedding dense."""
        total = sum(p.numel() for p in self.parameters())
        emb = self.wte.weight.numel()
        sparse = sum(p.numel() for p in self.value_parameters())
        for m in self.modules():
            if isinstance(m, MoE):
                sparse += m.w_gate.numel() + m.w_up.numel() + m.w_down.numel()
        return {"total": total, "sparse": sparse, "embedding": emb, "non_embedding": total - emb,
                "dense_non_embedding": total - emb - sparse}


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V).float(), targets.reshape(-1))


@torch.no_grad()
def init_parameters(model: nn.Module, seed: int, prefixes: tuple[str, ...] = ()) -> None:
    """Every parameter from its own keyed stream ``(seed, "init", name)``, so the weights two arms share
    start identical. N(0, init_std); block output projections N(0, init_std / sqrt(2 depth)); norms 1;
    memory layers by ``MemoryLayer.init_param`` (values: PKM N(0, 1/D_v) or the improved-init variance, q/k
    LayerNorm gains, Tucker cores U(0, 1), the causal query conv as the identity); MoE experts like the dense
    FFN. ``prefixes``: only the parameters whose names start with one of them (a transformers backbone
    initialises itself)."""
    cfg = model.cfg
    for name, p in model.named_parameters():
        if p.device.type == "meta" or (prefixes and not name.startswith(prefixes)):
            continue
        g = step_generator(seed, "init", name)
        std = cfg.init_std
        if name.startswith("mems."):
            k, local = name.split(".", 2)[1:]
            model.mems[int(k)].init_param(local, p, g)                  # the layer's own rules
            continue
        if name.endswith("norm.weight") or ".norm" in name or name.startswith("norm"):
            p.fill_(1.0)
            continue
        if name.endswith(("attn.out.weight", "mlp.down.weight", "mlp.w_down")):
            std = cfg.init_std / math.sqrt(2 * cfg.depth)
        p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * std)


def new_model(cfg: ModelCfg, seed: int = 0) -> nn.Module:
    """The module of ``model.backbone`` (ours, or transformers' OLMo / OLMoE in paper.py), not initialised."""
    if cfg.backbone != "ours":
        from .paper import PaperLM

        return PaperLM(cfg, seed=seed)
    return UltraMemLM(cfg, seed=seed)


def build_model(cfg: ModelCfg, seed: int = 0) -> nn.Module:
    """``new_model`` + ``init_parameters`` (the transformers backbones initialise themselves; then only the
    memory units get our initialisation)."""
    model = new_model(cfg, seed)
    init_parameters(model, seed, prefixes=("mems.",) if cfg.backbone != "ours" else ())
    return model
