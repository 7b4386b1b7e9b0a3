"""Losses and the five-step training iteration of the official code (notes §4.2, §4.3).

With P = P3 . P2 . P1, f1 = P1(x), f5 = P2(f1), least-squares GAN targets 1 (real) / 0 (fake):

1. parse:       L_seg = CE(P(x_s), y_s)                                  -> parser (SGD)
2. compensate:  f~5_s = f5_s + C(f1_s) (f1, f5 detached); L_C = (D_f(f~5_s) - 1)^2   -> C (Adam)
3. D_f:         L_Df = 1/2 [(D_f(f5_t) - 1)^2 + D_f(f~5_s)^2]            -> D_f (Adam)
4. every ``adapt.label_every``-th iteration:
   a. L_adv = (D_l(s(P(x_t))) - 1)^2                                     -> parser (Adam, adv_lr)
   b. L_Dl = 1/2 [(D_l(onehot(y_s)) - 1)^2 + D_l(s(P(x_t)))^2]           -> D_l (Adam)
   s = softmax (our default) or identity on logits (the code); the AdaptSegNet-style baseline uses
   s(P(x_s)) instead of onehot(y_s) as "real".
5. refine:      L_ref = CE(P3(f5_s + C(f1_s)), y_s)                       -> parser (SGD)

Arms switch steps on and off: source-only = 1; feature = 1, 2, 3, 5; label = 1, 4; full = all;
oracle / fine-tuning = 1 on labelled target images. The source-only arm never passes a target batch
through the parser (so no BatchNorm statistic ever sees the target: AdaptSegNet issue #25).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import Cfg
from .kernels import upsample_ce


def lsgan(pred: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss: mean (D(.) - 1)^2 for real, mean D(.)^2 for fake."""
    return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))


def seg_loss(logits: torch.Tensor, y: torch.Tensor, cfg: Cfg) -> torch.Tensor:
    """CE of the upsampled logits: summed over pixels / batch (code) or the mean over valid pixels."""
    s, n = upsample_ce(logits, y, 255, impl=cfg.model.impl, chunk_rows=cfg.model.ce_chunk_rows)
    if cfg.train.ce_reduction == "sum_per_image":
        return s / y.shape[0]
    return s / n.clamp(min=1)


def label_input(logits_up: torch.Tensor, cfg: Cfg) -> torch.Tensor:
    return logits_up.softmax(1) if cfg.adapt.dl_input == "softmax" else logits_up


def onehot(y: torch.Tensor, K: int) -> torch.Tensor:
    """(B, H, W) labels -> (B, K, H, W) one-hot; ignored pixels are all-zero."""
    valid = y != 255
    oh = F.one_hot(torch.where(valid, y.long(), 0), K).permute(0, 3, 1, 2).float()
    return oh * valid[:, None]


@contextmanager
def target_bn(parser, update: bool):
    """Target forwards: BN in train mode (statistics updated) or, with ``update=False``, in eval mode
    (running source statistics, nothing updated; gradients still flow)."""
    bns = [m for m in parser.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not update:
        for m in bns:
            m.eval()
    try:
        yield
    finally:
        for m in bns:
            m.train()


def iteration(net, opts: dict, cfg: Cfg, xs, ys, xt, step: int, sync) -> dict:
    """One training iteration (the five steps); ``sync(module)`` averages gradients across ranks."""
    a, P = cfg.adapt, net.parser
    out = {}
    # 1. parsing step
    loss = seg_loss(P(xs), ys, cfg)
    opts["parser"].zero_grad(set_to_none=True)
    loss.backward()
    sync(P)
    opts["parser"].step()
    out["loss"] = loss.detach()
    if a.feature:
        # 2. compensation step
        with torch.no_grad():
            f1 = P.p1(xs)
            f5 = P.p2(f1)
        comp = f5 + net.C(f1, f5.shape[-2:])
        l_c = lsgan(net.D_f(comp), True)
        opts["C"].zero_grad(set_to_none=True)
        l_c.backward()
        sync(net.C)
        opts["C"].step()
        # 3. D_f step (target pool5 = real, compensated source pool5 = fake)
        with torch.no_grad(), target_bn(P, a.target_bn_stats):
            f5t = P.p2(P.p1(xt))
        l_df = 0.5 * (lsgan(net.D_f(f5t), True) + lsgan(net.D_f(comp.detach()), False))
        opts["D_f"].zero_grad(set_to_none=True)
        l_df.backward()
        sync(net.D_f)
        opts["D_f"].step()
        out.update(c_loss=l_c.detach(), df_loss=l_df.detach())
    if a.label and step % a.label_every == 0:
        # 4a. parser-adversarial step: make D_l call the target predictions real
        with target_bn(P, a.target_bn_stats):
            fake = label_input(P.upsample(P(xt)), cfg)
        l_adv = a.lambda_adv * lsgan(net.D_l(fake), True)
        opts["adv"].zero_grad(set_to_none=True)
        l_adv.backward()
        sync(P)
        opts["adv"].step()
        # 4b. D_l step
        if a.label_real == "onehot":
            real = onehot(ys, cfg.model.num_classes)
        else:
            with torch.no_grad():
                real = label_input(P.upsample(P(xs)), cfg)
        l_dl = 0.5 * (lsgan(net.D_l(real), True) + lsgan(net.D_l(fake.detach()), False))
        opts["D_l"].zero_grad(set_to_none=True)
        l_dl.backward()
        sync(net.D_l)
        opts["D_l"].step()
        out.update(adv_loss=l_adv.detach(), dl_loss=l_dl.detach())
    if a.feature:
        # 5. refinement step: parse the compensated (target-like) source features; parser updated only
        f1 = P.p1(xs)
        f5 = P.p2(f1)
        l_ref = seg_loss(P.head(f5 + net.C(f1, f5.shape[-2:])), ys, cfg)
        opts["parser"].zero_grad(set_to_none=True)
        l_ref.backward()
        sync(P)
        opts["parser"].step()
        out["ref_loss"] = l_ref.detach()
    return out
