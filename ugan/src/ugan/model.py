"""StarGAN generator and discriminator with UGAN's trace head and prototype inputs.

Notation (shapes at the default 128 px, K domains, base width h = model.hidden):

    x        input image                         (B, 3, S, S) in [-1, 1]
    c        target label (one-hot / multi-hot)   (B, K), tiled to (B, K, S, S) and concatenated to x
    P        pixel prototype of the target domain (B, 3, S, S)  (UGAN v2, ugan.prototype=pixel, *inferred*)
    f        feature prototype                    (B, F)  F = D trunk width   (ugan.prototype=feature, *inferred*)
    D_adv    real/fake critic map                 (B, 1, S/2^n, S/2^n)   (StarGAN's ``out_src``)
    D_cls    domain logits                        (B, K)                 (StarGAN's ``out_cls``)
    D_tr     trace logits: domain of *origin*     (B, K)                 (UGAN's source classifier)

G (StarGAN, paper Table/appendix "network architecture", public code): 7x7 conv h, IN, ReLU;
2 x (4x4 stride-2 conv, IN, ReLU) to 4h; ``depth`` residual blocks (3x3 conv, IN, ReLU, 3x3 conv, IN,
identity skip); 2 x (4x4 stride-2 transposed conv, IN, ReLU); 7x7 conv to 3, tanh. No conv bias,
zero padding, IN with affine and running statistics (``model.track_running_stats``), which inference
reads only under ``model.eval_norm=running`` (the public code's test path uses per-image statistics).

D (PatchGAN, no normalisation): ``d_depth`` x (4x4 stride-2 conv with bias, LeakyReLU 0.01), width h
doubling; heads 3x3 conv -> 1 (adv), kernel S/2^n conv -> K (cls) and, UGAN, the same shape -> K
(trace), all without bias.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import Cfg
from .kernels import check_impl, in_affine_act


class INAct(nn.InstanceNorm2d):
    """InstanceNorm2d(affine=True) + optional ReLU + optional residual add, dispatched on ``impl``
    (same parameters and buffers as ``nn.InstanceNorm2d``, so state dicts match StarGAN's layout).

    ``eval_stats`` (``model.eval_norm``) decides what eval mode normalises with when running statistics
    are tracked: ``"instance"`` -- each image's own statistics, as the public StarGAN code's ``test()``
    gets by never calling ``G.eval()`` (the running buffers are updated in training, never read);
    ``"running"`` -- the running estimates, what ``nn.InstanceNorm2d(track_running_stats=True).eval()``
    does. Training mode is identical under both."""

    def __init__(self, c: int, track: bool, relu: bool, impl: str = "auto", eval_stats: str = "instance"):
        super().__init__(c, affine=True, track_running_stats=track)
        if eval_stats not in ("instance", "running"):
            raise ValueError(f"eval_stats must be 'instance' or 'running', got {eval_stats!r}")
        self.relu, self.impl, self.eval_stats = relu, check_impl(impl), eval_stats

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        # running buffers: updated in training; read in eval only under eval_stats="running"
        use = self.track_running_stats and (self.training or self.eval_stats == "running")
        return in_affine_act(x, self.weight, self.bias, self.running_mean if use else None,
                             self.running_var if use else None, self.training,
                             self.momentum, self.eps, relu=self.relu, skip=skip, impl=self.impl)


class ResBlock(nn.Module):
    def __init__(self, c: int, track: bool, impl: str, eval_stats: str = "instance"):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.in1 = INAct(c, track, relu=True, impl=impl, eval_stats=eval_stats)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.in2 = INAct(c, track, relu=False, impl=impl, eval_stats=eval_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.in2(self.conv2(self.in1(self.conv1(x))), skip=x)


class Generator(nn.Module):
    """G(x, c[, P | f]) -> image (B, 3, S, S)."""

    def __init__(self, cfg: Cfg, proto_dim: int = 0):
        super().__init__()
        m, u = cfg.model, cfg.ugan
        h, tr, impl, es = m.hidden, m.track_running_stats, m.impl, m.eval_norm
        self.prototype = u.prototype
        in_ch = 3 + m.num_domains + (3 if u.prototype == "pixel" else 0)
        self.in_channels = in_ch
        self.conv_in = nn.Conv2d(in_ch, h, 7, 1, 3, bias=False)
        self.in_in = INAct(h, tr, True, impl, es)
        self.down = nn.ModuleList()
        self.down_in = nn.ModuleList()
        c = h
        for _ in range(2):
            self.down.append(nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False))
            self.down_in.append(INAct(2 * c, tr, True, impl, es))
            c *= 2
        self.blocks = nn.ModuleList(ResBlock(c, tr, impl, es) for _ in range(m.depth))
        # feature prototype: FiLM of the bottleneck from f (*inferred* form), zero-initialised = identity
        self.film = nn.Linear(proto_dim, 2 * c) if u.prototype == "feature" else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        self.up = nn.ModuleList()
        self.up_in = nn.ModuleList()
        for _ in range(2):
            self.up.append(nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False))
            self.up_in.append(INAct(c // 2, tr, True, impl, es))
            c //= 2
        self.conv_out = nn.Conv2d(c, 3, 7, 1, 3, bias=False)

    def make_input(self, x: torch.Tensor, c: torch.Tensor, proto: torch.Tensor | None = None) -> torch.Tensor:
        """[x, tiled c (, P)] -> (B, in_channels, S, S)."""
        cmap = c[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])      # (B, K, S, S)
        parts = [x, cmap]
        if self.prototype == "pixel":
            if proto is None:
                raise ValueError("ugan.prototype=pixel: G needs the target prototype image")
            parts.append(proto)
        return torch.cat(parts, 1)

    def forward(self, x: torch.Tensor, c: torch.Tensor, proto: torch.Tensor | None = None) -> torch.Tensor:
        h = self.in_in(self.conv_in(self.make_input(x, c, proto)))           # (B, h, S, S)
        for conv, norm in zip(self.down, self.down_in):
            h = norm(conv(h))                                                  # (B, 2h / 4h, S/2 / S/4, ..)
        for b in self.blocks:
            h = b(h)                                                           # (B, 4h, S/4, S/4)
        if self.film is not None:
            if proto is None:
                raise ValueError("ugan.prototype=feature: G needs the target feature prototype")
            g, beta = self.film(proto).chunk(2, 1)                             # (B, 4h) each
            h = h * (1 + g[:, :, None, None]) + beta[:, :, None, None]
        for conv, norm in zip(self.up, self.up_in):
            h = norm(conv(h))                                                  # (B, 2h / h, S/2 / S, ..)
        return torch.tanh(self.conv_out(h))                                    # (B, 3, S, S)


class Discriminator(nn.Module):
    """D(x) -> (D_adv (B,1,s,s), D_cls (B,K), D_tr (B,K)); ``features(x)`` -> pooled trunk (B, F)."""

    def __init__(self, cfg: Cfg):
        super().__init__()
        m = cfg.model
        layers, c_in, c = [], 3, m.hidden
        for _ in range(m.d_depth):
            layers += [nn.Conv2d(c_in, c, 4, 2, 1), nn.LeakyReLU(0.01)]
            c_in, c = c, c * 2
        self.trunk = nn.Sequential(*layers)
        self.width = c_in
        k = m.image_size // 2 ** m.d_depth
        self.adv = nn.Conv2d(c_in, 1, 3, 1, 1, bias=False)
        self.cls = nn.Conv2d(c_in, m.num_domains, k, bias=False)
        self.trace = nn.Conv2d(c_in, m.num_domains, k, bias=False)   # UGAN: the domain an image came from

    def forward(self, x: torch.Tensor):
        h = self.trunk(x)                                                      # (B, F, S/2^n, S/2^n)
        return self.adv(h), self.cls(h).flatten(1), self.trace(h).flatten(1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).mean((2, 3))                                      # (B, F)


def gradient_penalty(d_adv, x_hat: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: mean over samples of (||d D_adv(x_hat).sum() / d x_hat||_2 - 1)^2 (graph kept)."""
    out = d_adv(x_hat)
    g, = torch.autograd.grad(out, x_hat, grad_outputs=torch.ones_like(out), create_graph=True)
    norm = g.flatten(1).norm(2, dim=1)                                         # (B,)
    return ((norm - 1) ** 2).mean()


def cls_loss(logits: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
    """Domain classification: softmax CE on one-hot targets (single) or per-attribute BCE summed / B (multi)."""
    if mode == "multi":
        return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / logits.shape[0]
    return F.cross_entropy(logits, target.argmax(1))


def param_count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
