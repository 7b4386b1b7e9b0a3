"""OLMo-style decoder LM and a small ViT, both with the connection type as a config field.

OLMo-1B/7B choices (HC Sec. 4 keeps the baseline recipe): no biases, non-parametric LayerNorm, SwiGLU MLP,
rotary positions, Pre-Norm sublayers; OLMo-1B ties input/output embeddings. Each block is two sublayers
(attention, MLP), each wrapped by its own :class:`~hyperfrac.connections.Connection` with its own layer index.

Notation (config key -> symbol -> meaning):

    model.hidden  d     width of the residual / of one HC stream
    model.depth   L     blocks (2L wrapped sublayers)
    model.heads   h     attention heads (head width d / h)
    B, T                batch, sequence length (tokens; ViT: patches + class token)
    H             (B, T, s, w)   connection state (see connections.py: HC s = n, w = d; FC s = m, w = d / m)

An impossible shape (``d`` not divisible by ``h`` or by the FC rate ``m``, odd RoPE head width, image size not
divisible by the patch) is a :class:`reprokit.errors.ShapeError` naming the config keys; an unknown connection
name is a :class:`reprokit.config.ConfigError` naming ``model.connection``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reprokit.config import ConfigError
from reprokit.errors import ShapeError

from .config import ModelCfg
from .connections import Connection, ConnSpec, expand_streams, out_proj_std, parse_variant, reduce_streams

__all__ = ["Norm", "Attention", "MLP", "Block", "Trunk", "DecoderLM", "ViT", "build_model", "check_model_cfg"]


def check_model_cfg(cfg: ModelCfg) -> ConnSpec:
    """Validate the shapes of ``cfg`` before any weight is built; return the parsed connection variant."""
    try:
        spec = parse_variant(cfg.connection)
    except ValueError as e:
        raise ConfigError(f"model.connection: {e}") from e
    for key in ("hidden", "depth", "heads"):
        if getattr(cfg, key) < 1:
            raise ShapeError(f"model.{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.hidden % cfg.heads != 0:
        raise ShapeError(f"model.heads={cfg.heads} must divide model.hidden={cfg.hidden}")
    if cfg.pos == "rope" and (cfg.hidden // cfg.heads) % 2 != 0:
        raise ShapeError(f"model.pos=rope needs an even head width; model.hidden / model.heads = "
                         f"{cfg.hidden} / {cfg.heads} = {cfg.hidden // cfg.heads}")
    if spec.kind == "fc" and cfg.hidden % spec.rate != 0:
        raise ShapeError(f"model.connection={cfg.connection}: frac-rate m={spec.rate} must divide "
                         f"model.hidden={cfg.hidden}")
    if cfg.n_experts and not 1 <= cfg.top_k <= cfg.n_experts:
        raise ShapeError(f"model.top_k={cfg.top_k} must be in [1, model.n_experts={cfg.n_experts}]")
    if cfg.kind == "lm" and cfg.vocab_size < 1:
        raise ConfigError(f"model.vocab_size must be >= 1, got {cfg.vocab_size} (0 is only resolved from a "
                          "text source with a tokenizer)")
    if cfg.kind == "vit" and (cfg.patch < 1 or cfg.image_size % cfg.patch != 0):
        raise ShapeError(f"model.patch={cfg.patch} must divide model.image_size={cfg.image_size}")
    return spec


class Norm(nn.Module):
    def __init__(self, dim: int, kind: str = "layernorm", affine: bool = False, eps: float = 1e-5):
        super().__init__()
        self.kind, self.eps = kind, eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if affine and kind == "layernorm" else None

    def forward(self, x):
        if self.kind == "layernorm":
            return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return F.rms_norm(x, x.shape[-1:], self.weight, self.eps)


def _rope(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary embedding on (B, H, T, Dh), half-split convention."""
    T, Dh = x.shape[-2], x.shape[-1]
    inv = 1.0 / (base ** (torch.arange(0, Dh, 2, device=x.device, dtype=torch.float32) / Dh))
    ang = torch.arange(T, device=x.device, dtype=torch.float32)[:, None] * inv[None]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., : Dh // 2], x[..., Dh // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    """Sublayer T = attention(norm(x)) (the sublayer's own pre-norm is inside, as in HC Algorithm 3)."""

    def __init__(self, cfg: ModelCfg, causal: bool):
        super().__init__()
        d = cfg.hidden
        self.h, self.causal, self.rope = cfg.heads, causal, cfg.pos == "rope"
        self.norm = Norm(d, cfg.norm, cfg.norm_affine, cfg.norm_eps)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.proj.is_out_proj = True
        self.q_norm = Norm(d, "rmsnorm", True, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = Norm(d, "rmsnorm", True, cfg.norm_eps) if cfg.qk_norm else None

    def forward(self, x):
        B, T, d = x.shape
        q, k, v = self.qkv(self.norm(x)).split(d, dim=-1)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.view(B, T, self.h, d // self.h).transpose(1, 2) for t in (q, k, v))
        if self.rope:
            q, k = _rope(q), _rope(k)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(o.transpose(1, 2).reshape(B, T, d))


class MLP(nn.Module):
    def __init__(self, cfg: ModelCfg):
        super().__init__()
        d = cfg.hidden
        self.norm = Norm(d, cfg.norm, cfg.norm_affine, cfg.norm_eps)
        self.swiglu = cfg.mlp == "swiglu"
        if cfg.mlp_hidden:
            hid = cfg.mlp_hidden
        else:
            hid = int(math.ceil(8 * d / 3 / 8) * 8) if self.swiglu else 4 * d
        self.up = nn.Linear(d, 2 * hid if self.swiglu else hid, bias=False)
        self.down = nn.Linear(hid, d, bias=False)
        self.down.is_out_proj = True

    def forward(self, x):
        u = self.up(self.norm(x))
        if self.swiglu:
            a, g = u.chunk(2, dim=-1)
            return self.down(F.silu(g) * a)
        return self.down(F.gelu(u))


class MoE(nn.Module):
    """Token-choice top-k MoE with SwiGLU experts (OLMoE); dense masked compute, for the paper configs."""

    def __init__(self, cfg: ModelCfg):
        super().__init__()
        d, E, hid = cfg.hidden, cfg.n_experts, cfg.expert_hidden or cfg.hidden
        self.norm = Norm(d, cfg.norm, cfg.norm_affine, cfg.norm_eps)
        self.k = cfg.top_k
        self.router = nn.Linear(d, E, bias=False)
        self.w_up = nn.Parameter(torch.empty(E, d, 2 * hid))
        self.w_down = nn.Parameter(torch.empty(E, hid, d))
        self.w_down.is_out_proj = True

    def forward(self, x):
        xs = self.norm(x)
        B, T, d = xs.shape
        flat = xs.reshape(-1, d)
        probs = self.router(flat).softmax(-1)
        topv, topi = probs.topk(self.k, dim=-1)
        out = torch.zeros_like(flat)
        for e in range(self.w_up.shape[0]):
            sel = (topi == e)
            rows = sel.any(-1).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            a, g = (flat[rows] @ self.w_up[e]).chunk(2, dim=-1)
            wgt = (topv[rows] * sel[rows]).sum(-1, keepdim=True)
            out.index_add_(0, rows, wgt * ((F.silu(g) * a) @ self.w_down[e]))
        return out.view(B, T, d)


class Block(nn.Module):
    def __init__(self, cfg: ModelCfg, spec: ConnSpec, index: int, causal: bool):
        super().__init__()
        self.attn = Attention(cfg, causal)
        self.mlp = MoE(cfg) if cfg.n_experts else MLP(cfg)
        kw = dict(impl=cfg.impl, scale_init=cfg.scale_init, dyn_norm_affine=cfg.dyn_norm_affine, eps=cfg.conn_eps)
        self.conn_attn = Connection(spec, cfg.hidden, 2 * index, **kw)
        self.conn_mlp = Connection(spec, cfg.hidden, 2 * index + 1, **kw)

    def forward(self, H):
        H = self.conn_attn(H, self.attn)
        return self.conn_mlp(H, self.mlp)


class Trunk(nn.Module):
    """Input expansion -> blocks -> output reduction -> final norm."""

    def __init__(self, cfg: ModelCfg, causal: bool):
        super().__init__()
        self.spec = check_model_cfg(cfg)
        self.blocks = nn.ModuleList(Block(cfg, self.spec, i, causal) for i in range(cfg.depth))
        fa = cfg.norm_affine if cfg.final_norm_affine is None else cfg.final_norm_affine
        self.final_norm = Norm(cfg.hidden, cfg.norm, fa, cfg.norm_eps)

    def forward(self, h):
        H = expand_streams(h, self.spec)
        for b in self.blocks:
            H = b(H)
        return self.final_norm(reduce_streams(H, self.spec))

    def connections(self) -> list[Connection]:
        return [c for b in self.blocks for c in (b.conn_attn, b.conn_mlp)]


def _init_weights(model: nn.Module, cfg: ModelCfg, spec: ConnSpec) -> None:
    std_out = out_proj_std(cfg.init_std, spec, 2 * cfg.depth, cfg.sqrt_n_out_init)
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Embedding):
            std = std_out if getattr(m, "is_out_proj", False) else cfg.init_std
            nn.init.normal_(m.weight, 0.0, std)
        if isinstance(m, MoE):
            nn.init.normal_(m.w_up, 0.0, cfg.init_std)
            nn.init.normal_(m.w_down, 0.0, std_out)
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, cfg.init_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class DecoderLM(nn.Module):
    def __init__(self, cfg: ModelCfg):
        super().__init__()
        self.cfg = cfg
        check_model_cfg(cfg)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.pos = nn.Embedding(cfg.context, cfg.hidden) if cfg.pos == "learned" else None
        self.trunk = Trunk(cfg, causal=True)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.hidden, cfg.vocab_size, bias=False)
        if not next(self.parameters()).is_meta:
            _init_weights(self, cfg, self.trunk.spec)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[-1]
        if self.cfg.context < T:
            raise ValueError(f"sequence length {T} is longer than the model's context {self.cfg.context}")
        h = self.embed(idx)
        if self.pos is not None:
            h = h + self.pos.weight[:T]
        h = self.trunk(h)
        return h @ self.embed.weight.t() if self.head is None else self.head(h)


class ViT(nn.Module):
    """ViT classifier: patch embedding + class token + learned positions; the class token is read after the
    stream reduction and final norm (our assumption; HC App. E.2 does not say)."""

    def __init__(self, cfg: ModelCfg):
        super().__init__()
        self.cfg = cfg
        check_model_cfg(cfg)
        n = (cfg.image_size // cfg.patch) ** 2
        self.patch = nn.Conv2d(cfg.channels, cfg.hidden, cfg.patch, cfg.patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.hidden))
        self.pos = nn.Parameter(torch.zeros(1, n + 1, cfg.hidden))
        self.trunk = Trunk(cfg, causal=False)
        self.head = nn.Linear(cfg.hidden, cfg.num_classes)
        if not next(self.parameters()).is_meta:
            _init_weights(self, cfg, self.trunk.spec)
            nn.init.normal_(self.pos, 0.0, cfg.init_std)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.cfg.image_size or x.shape[-2] != self.cfg.image_size:
            raise ValueError(f"image size {tuple(x.shape[-2:])} != configured {self.cfg.image_size}")
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        return self.head(self.trunk(t)[:, 0])


def build_model(cfg: ModelCfg) -> nn.Module:
    return DecoderLM(cfg) if cfg.kind == "lm" else ViT(cfg)
