"""DiT backbone with adaLN-Zero (facebookresearch/DiT layout; notes §2.1) whose MLPs are MoE blocks.

Race-DiT replaces the MLP of **every** block by :class:`racedit.moe.MoEFFN` (paper Fig. 2; the
parameter arithmetic of Tables 4/5 confirms all layers are MoE, notes §2.2); the adaLN gate scales the
MoE output exactly as it scales the dense MLP: x <- x + g_mlp * MoE(modulate(LN(x))).

Notation

=========  ===========================================================  =====================
symbol     meaning                                                      shape
=========  ===========================================================  =====================
x          noisy input image or latent                                  (B, C, H, W)
p, g       patch size, grid side H / p                                  ints
L          tokens g * g                                                 int
d          width (model.hidden)                                         int
h          token states                                                 (B, L, d)
t          diffusion time as the model sees it (flow: 1000 t)           (B,)
y          class labels (num_classes = the null class of CFG)           (B,)
c          conditioning t-embedding + y-embedding                       (B, d)
out        prediction per patch, unpatchified                           (B, C_out, H, W)
target     diffusion target, patchified for the PLR head                (B, L, p*p*C)
=========  ===========================================================  =====================

Auxiliary losses (:meth:`DiT.aux_losses`): the router similarity loss (RSL, Fig. 4 / Table 2; notes
§2.4), the per-layer regularisation (PLR, Fig. 5 / Fig. 12; notes §2.5) and the Switch balance loss of
the token-choice baseline; the total objective is notes §2.6.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from reprokit.errors import ShapeError

from . import routing as R
from .config import ModelCfg
from .moe import DenseMLP, MoEFFN, validate_moe


def sincos_pos_embed(d: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding (DiT): (grid*grid, d)."""
    def one(dim, pos):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    gh, gw = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")
    emb = np.concatenate([one(d // 2, gw), one(d // 2, gh)], axis=1)
    return torch.from_numpy(emb).float()


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of t: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def modulate(x, shift, scale):
    """adaLN: x (B, L, d) * (1 + scale (B, d)) + shift (B, d)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        if d % heads:
            raise ShapeError(f"hidden {d} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        B, L, d = x.shape
        # (B, L, 3d) -> 3 x (B, heads, L, d/heads)
        q, k, v = self.qkv(x).reshape(B, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        o = nn.functional.scaled_dot_product_attention(q, k, v)     # (B, heads, L, d/heads)
        return self.proj(o.transpose(1, 2).reshape(B, L, d))        # (B, L, d)


class Block(nn.Module):
    """One adaLN-Zero DiT block whose MLP is the MoE block (Fig. 2): (B, L, d), c (B, d) -> (B, L, d)."""

    def __init__(self, d: int, heads: int, cfg: ModelCfg, target_dim: int, num_tokens: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d, heads)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = (MoEFFN(d, cfg.moe, target_dim, num_tokens, impl=cfg.impl) if cfg.moe.enabled
                    else DenseMLP(d))
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(self, x, c):
        sa, ca, ga, sm, cm, gm = self.adaLN(c).chunk(6, dim=1)       # 6 x (B, d)
        x = x + ga.unsqueeze(1) * self.attn(modulate(self.norm1(x), sa, ca))
        # every MLP is an MoE block, gated by adaLN like the dense one (Fig. 2)
        return x + gm.unsqueeze(1) * self.mlp(modulate(self.norm2(x), sm, cm))


class DiT(nn.Module):
    """x (B, C, H, W), t (B,), y (B,) -> prediction (B, C_out, H, W); C_out = 2C with learn_sigma."""

    def __init__(self, cfg: ModelCfg):
        super().__init__()
        depth, d, heads = cfg.dims()
        if cfg.moe.enabled:
            validate_moe(cfg.moe)
        if cfg.image_size % cfg.patch:
            raise ShapeError(f"patch size {cfg.patch} does not divide the image size {cfg.image_size} "
                             "(model.patch, model.image_size)")
        if d % heads:
            raise ShapeError(f"model.hidden={d} is not divisible by model.heads={heads}")
        self.cfg = cfg
        self.d, self.patch, self.C = d, cfg.patch, cfg.channels
        self.out_ch = 2 * cfg.channels if cfg.learn_sigma else cfg.channels
        self.grid = cfg.image_size // cfg.patch
        self.num_tokens = self.grid ** 2
        self.x_embed = nn.Conv2d(cfg.channels, d, cfg.patch, stride=cfg.patch)
        self.register_buffer("pos_embed", sincos_pos_embed(d, self.grid).unsqueeze(0), persistent=False)
        self.t_embed = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.null_class = cfg.num_classes
        self.y_embed = nn.Embedding(cfg.num_classes + (1 if cfg.class_dropout > 0 else 0), d)
        target_dim = cfg.patch * cfg.patch * cfg.channels     # PLR target per token: p^2*C (noise channels only)
        self.blocks = nn.ModuleList([Block(d, heads, cfg, target_dim, self.num_tokens) for _ in range(depth)])
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_adaLN = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.final = nn.Linear(d, cfg.patch * cfg.patch * self.out_ch)
        self._init()

    def _init(self):
        if self.final.weight.is_meta:
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embed.bias)
        nn.init.normal_(self.y_embed.weight, std=0.02)
        for lin in (self.t_embed[0], self.t_embed[2]):
            nn.init.normal_(lin.weight, std=0.02)
        for b in self.blocks:
            nn.init.zeros_(b.adaLN[-1].weight)
            nn.init.zeros_(b.adaLN[-1].bias)
            if isinstance(b.mlp, MoEFFN):
                b.mlp.reset_experts()
                nn.init.normal_(b.mlp.gate.weight, std=0.02)
        for lin in (self.final_adaLN[-1], self.final):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def moe_layers(self) -> list[MoEFFN]:
        return [b.mlp for b in self.blocks if isinstance(b.mlp, MoEFFN)]

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, L, p*p*C), the token order of the model (the PLR target layout)."""
        B, C, H, W = x.shape
        p, g = self.patch, H // self.patch
        return x.reshape(B, C, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(B, g * g, p * p * C)

    def unpatchify(self, x: torch.Tensor, C: int) -> torch.Tensor:
        """(B, L, p*p*C) -> (B, C, H, W)."""
        B = x.shape[0]
        p, g = self.patch, self.grid
        return x.reshape(B, g, g, p, p, C).permute(0, 5, 1, 3, 2, 4).reshape(B, C, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.cfg.image_size or x.shape[1] != self.C:
            raise ShapeError(f"input {tuple(x.shape)} does not match the model's {self.C}x"
                             f"{self.cfg.image_size}x{self.cfg.image_size}")
        h = self.x_embed(x).flatten(2).transpose(1, 2) + self.pos_embed   # (B, C, H, W) -> (B, L, d)
        c = self.t_embed(timestep_embedding(t)) + self.y_embed(y)          # (B, d)
        for b in self.blocks:
            h = b(h, c)                                                     # (B, L, d)
        sh, sc = self.final_adaLN(c).chunk(2, dim=1)                        # 2 x (B, d)
        out = self.final(modulate(self.final_norm(h), sh, sc))              # (B, L, p*p*C_out)
        return self.unpatchify(out, self.out_ch)                            # (B, C_out, H, W)

    # --------------------------------------------------------------------- auxiliary losses
    def aux_losses(self, target_tokens: torch.Tensor | None, rsl: bool, plr: bool, balance: bool,
                   plr_reduce: str = "sum") -> dict[str, torch.Tensor]:
        """The auxiliary losses of the last forward, each a scalar (notes §2.6):

        * ``rsl``: router similarity loss, mean over layers (Fig. 4 / Table 2; notes §2.4);
        * ``plr``: per-layer regularisation sum_l ||H_l(h_l) - y||^2 (Fig. 5 / Fig. 12; notes §2.5), the
          token-mean squared error of each layer's target head against the diffusion target
          ``target_tokens`` (B, L, p*p*C), summed (or averaged, ``plr_reduce``) over layers;
        * ``balance``: the Switch balance loss of the token-choice baseline, mean over layers.
        """
        layers = self.moe_layers()
        out: dict[str, torch.Tensor] = {}
        if not layers:
            return out
        if rsl:
            out["rsl"] = torch.stack([R.router_similarity_loss(m.last["logits"], m.last["mask"]) for m in layers]).mean()
        if balance:
            out["balance"] = torch.stack([R.balance_loss(m.last["logits"], m.last["mask"]) for m in layers]).mean()
        if plr and target_tokens is not None:
            # ||H_l(h_l) - y||^2 per layer: (B, L, p*p*C) vs the patchified target -> scalar
            terms = [((m.last["plr"] - target_tokens) ** 2).mean() for m in layers if m.last.get("plr") is not None]
            if terms:
                s = torch.stack(terms)
                out["plr"] = s.sum() if plr_reduce == "sum" else s.mean()
        return out


def param_counts(cfg: ModelCfg) -> dict[str, int]:
    """Parameter counts of the model built on the meta device (nothing allocated).

    ``total`` excludes the training-only target heads (dropped at inference, as in the paper's
    Table 4); ``total_no_router`` also leaves out the routers (the paper's Table 5 convention);
    ``active`` counts k/E of the expert parameters per token.
    """
    with torch.device("meta"):
        m = DiT(cfg)   # parameter shapes only (paper-scale configs allocate nothing)
    counts = {"experts": 0, "router": 0, "target_head": 0, "other": 0}
    for name, p in m.named_parameters():
        if ".mlp." in name and name.split(".mlp.")[1] in ("W1", "b1", "W2", "b2"):
            counts["experts"] += p.numel()
        elif ".mlp.router_fc." in name or ".mlp.gate." in name:
            counts["router"] += p.numel()
        elif ".mlp.target_head." in name:
            counts["target_head"] += p.numel()
        else:
            counts["other"] += p.numel()
    total = counts["experts"] + counts["router"] + counts["other"]
    frac = cfg.moe.top_k / cfg.moe.num_experts if cfg.moe.enabled else 1.0
    counts["total"] = total
    counts["total_no_router"] = total - counts["router"]
    counts["active"] = counts["other"] + counts["router"] + round(counts["experts"] * frac)
    return counts
