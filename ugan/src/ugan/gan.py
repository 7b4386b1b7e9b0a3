"""The StarGAN / UGAN objectives of one discriminator and one generator update (notes §2.3-2.4).

    L_D = -E[D_adv(x)] + E[D_adv(G(x,c_t))] + l_cls E[-log D_cls(c_s|x)] + l_gp GP(x_hat)
          + l_tr ( E_{c_t != c_s}[-log D_tr(c_s | G(x,c_t))] + [d_real_term] E[-log D_tr(c_s | x)] )     (UGAN)
    L_G = -E[D_adv(G(x,c_t))] + l_cls E[-log D_cls(c_t|G(x,c_t))] + l_rec E|x - G(G(x,c_t),c_s)|_1
          + l_tr L^G_tr                                                                                    (UGAN)
    L^G_tr = E_{c_t != c_s}[-log D_tr(c_t | G(x,c_t))]          g_variant=untranslated (A, *inferred*)
           = E_{c_t != c_s}[-(1/K) sum_k log D_tr(k | G(x,c_t))] g_variant=confusion    (B, *inferred*)

Pairs whose target equals the source (possible with StarGAN's permuted targets) are excluded from
both trace terms (``trace_mask``). Multi-label data use per-attribute BCE in place of the softmax CE.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import Cfg
from .model import Discriminator, Generator, cls_loss, gradient_penalty


class Prototypes(nn.Module):
    """UGAN v2 guidance: per-domain pixel prototypes (fixed, from the training images) or a running
    mean of D-trunk features per domain. Buffers, so they travel with the checkpoint."""

    def __init__(self, cfg: Cfg, feat_dim: int):
        super().__init__()
        K, S = cfg.model.num_domains, cfg.model.image_size
        self.kind, self.diff, self.momentum = cfg.ugan.prototype, cfg.ugan.proto_diff, cfg.ugan.proto_momentum
        self.register_buffer("pixel", torch.zeros(K, 3, S, S) if self.kind == "pixel" else torch.zeros(0))
        self.register_buffer("feat", torch.zeros(K, feat_dim) if self.kind == "feature" else torch.zeros(0))
        self.register_buffer("seen", torch.zeros(K))

    def guide(self, c_t: torch.Tensor, c_s: torch.Tensor) -> torch.Tensor | None:
        """G's extra input for targets c_t (B, K) from sources c_s: None | (B, 3, S, S) | (B, F)."""
        if self.kind == "none":
            return None
        t = c_t.argmax(1)
        if self.kind == "pixel":
            p = self.pixel[t]
            return p - self.pixel[c_s.argmax(1)] if self.diff else p
        return self.feat[t]

    @torch.no_grad()
    def update(self, feats: torch.Tensor, dom: torch.Tensor, sums_reduce=None) -> None:
        """Running per-domain mean of D-trunk features (feature prototype only)."""
        if self.kind != "feature":
            return
        K = self.feat.shape[0]
        onehot = F.one_hot(dom, K).float()                       # (B, K)
        sums = torch.cat([onehot.t() @ feats, onehot.sum(0)[:, None]], 1)   # (K, F + 1)
        if sums_reduce is not None:
            sums = sums_reduce(sums)
        cnt = sums[:, -1]
        mean = sums[:, :-1] / cnt.clamp(min=1)[:, None]
        first = (self.seen == 0) & (cnt > 0)
        upd = cnt > 0
        m = torch.where(first, torch.zeros_like(cnt), torch.full_like(cnt, self.momentum))[:, None]
        self.feat[upd] = (m * self.feat + (1 - m) * mean)[upd]
        self.seen += cnt


def trace_mask(c_s: torch.Tensor, c_t: torch.Tensor) -> torch.Tensor:
    """(B,) True where the target differs from the source (only those pairs enter the trace terms)."""
    return (c_s != c_t).any(1)


def _trace_ce(logits: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    return cls_loss(logits, target, mode)


def d_loss(G: Generator, D: Discriminator, protos: Prototypes, cfg: Cfg, x, c_s, c_t, alpha) -> tuple:
    """One discriminator objective; returns (total, parts dict of floats-able tensors)."""
    lc, u, mode = cfg.loss, cfg.ugan, cfg.data.label_mode
    adv_r, cls_r, tr_r = D(x)
    with torch.no_grad():
        fake = G(x, c_t, protos.guide(c_t, c_s))
    adv_f, _, tr_f = D(fake)
    x_hat = (alpha * x + (1 - alpha) * fake).requires_grad_(True)
    gp = gradient_penalty(lambda z: D(z)[0], x_hat)
    parts = {"d_real": -adv_r.mean(), "d_fake": adv_f.mean(), "d_cls": cls_loss(cls_r, c_s, mode), "d_gp": gp}
    total = parts["d_real"] + parts["d_fake"] + lc.lambda_cls * parts["d_cls"] + lc.lambda_gp * gp
    if u.lambda_tr > 0:
        m = trace_mask(c_s, c_t)
        tr = _trace_ce(tr_f[m], c_s[m], mode)
        if u.d_real_term:
            tr = tr + cls_loss(tr_r, c_s, mode)
        parts["d_trace"] = tr
        total = total + u.lambda_tr * tr
    return total, parts


def g_loss(G: Generator, D: Discriminator, protos: Prototypes, cfg: Cfg, x, c_s, c_t) -> tuple:
    lc, u, mode = cfg.loss, cfg.ugan, cfg.data.label_mode
    fake = G(x, c_t, protos.guide(c_t, c_s))
    adv, cls, tr = D(fake)
    rec = G(fake, c_s, protos.guide(c_s, c_t))
    parts = {"g_fake": -adv.mean(), "g_cls": cls_loss(cls, c_t, mode), "g_rec": (x - rec).abs().mean()}
    total = parts["g_fake"] + lc.lambda_cls * parts["g_cls"] + lc.lambda_rec * parts["g_rec"]
    if u.lambda_tr > 0:
        m = trace_mask(c_s, c_t)
        trm = tr[m]
        if u.g_variant == "untranslated":
            gt = _trace_ce(trm, c_t[m], mode)
        elif mode == "multi":
            gt = F.binary_cross_entropy_with_logits(trm, torch.full_like(trm, 0.5)) if trm.shape[0] else trm.sum()
        else:
            gt = -F.log_softmax(trm, 1).mean(1).mean() if trm.shape[0] else trm.sum()
        parts["g_trace"] = gt
        total = total + u.lambda_tr * gt
    return total, parts
