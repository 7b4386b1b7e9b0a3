"""The C-GAN objectives (notes §3.2, *inferred* working formulation) and their real/fake assignment.

Age discriminator, matching-aware (eq. D_age):
    real  (x, y_x)            fake  (G(x, y_t), y_t)          fake (optional)  (x, y_wrong)
Transition-pattern discriminator on adjacent groups y_b = y_a + 1 (eq. D_t):
    real  (x_a, x_b)  one person          fake  (x_a, G(x_a, y_a + 1))   aging
                                          fake  (G(x_b, y_b - 1), x_b)   rejuvenation
                                          fake (optional)  (x_c, x_d) two different people, y_d = y_c + 1
Generator (eq. L_G):
    L_G = L_adv(D_age(G(x, y_t), y_t) -> real)
        + lambda_t [L_adv(D_trans(x_a, G(x_a, y_a+1)) -> real) + L_adv(D_trans(G(x_b, y_a), x_b) -> real)] / 2
        + lambda_id |G(x, y_x) - x|_1                                                   (optional, off)
        + lambda_cls CE(D_age.classify(G(x, y_t)), y_t)                     (optional, off; the target group)
Discriminators: L_D = L_adv(real -> real) + mean over the fake terms of L_adv(fake -> fake)
(+ lambda_gp GP for wgan-gp) (+ lambda_cls CE(D_age.classify(x), y_x) on real faces only, D_age).
The classifier terms (``gan.lambda_cls``, StarGAN / CODE_X practice, ours) need ``model.d_cond=projection``.
L_adv: lsgan (squared error to 1 / 0, ours by default), vanilla
(BCE with logits) or wgan-gp (-D on reals, +D on fakes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import Cfg
from .model import gradient_penalty


@dataclass
class Term:
    """One discriminator input and what the discriminator is trained to call it."""

    name: str
    inputs: tuple          # (x, y) for D_age; (x_a, x_b, y_a) for D_trans
    real: bool


def adv_loss(out: torch.Tensor, real: bool, kind: str) -> torch.Tensor:
    if kind == "lsgan":
        return ((out - (1.0 if real else 0.0)) ** 2).mean()
    if kind == "vanilla":
        return F.binary_cross_entropy_with_logits(out, torch.full_like(out, 1.0 if real else 0.0))
    return -out.mean() if real else out.mean()


def age_terms(x, y, fake_t, y_t, y_wrong=None) -> list[Term]:
    terms = [Term("real", (x, y), True), Term("fake", (fake_t, y_t), False)]
    if y_wrong is not None:
        terms.append(Term("wrong_group", (x, y_wrong), False))
    return terms


def trans_terms(x_a, x_b, y_a, aged, rejuvenated, neg=None) -> list[Term]:
    """``aged`` = G(x_a, y_a + 1), ``rejuvenated`` = G(x_b, y_a); ``neg`` = (x_c, x_d, y_c) or None."""
    terms = [Term("real_pair", (x_a, x_b, y_a), True),
             Term("fake_aging", (x_a, aged, y_a), False),
             Term("fake_rejuvenation", (rejuvenated, x_b, y_a), False)]
    if neg is not None:
        terms.append(Term("different_person", neg, False))
    return terms


def d_objective(D, terms: list[Term], kind: str, lambda_gp: float, alpha: torch.Tensor | None) -> torch.Tensor:
    real = [t for t in terms if t.real]
    fake = [t for t in terms if not t.real]
    loss = sum(adv_loss(D(*t.inputs), True, kind) for t in real) / len(real)
    loss = loss + sum(adv_loss(D(*t.inputs), False, kind) for t in fake) / len(fake)
    if kind == "wgan-gp":
        r, f = real[0].inputs, fake[0].inputs           # interpolate the real and the first fake input
        a = alpha.to(r[0].dtype)
        hats = [(a * ri + (1 - a) * fi).detach().requires_grad_(True) for ri, fi in zip(r[:-1], f[:-1])]
        loss = loss + lambda_gp * gradient_penalty(lambda *z: D(*z, f[-1]), hats)
    return loss


@dataclass
class Batch:
    x: torch.Tensor          # (B, 3, S, S) unpaired faces
    y: torch.Tensor          # (B,) their groups
    y_t: torch.Tensor        # (B,) target groups != y
    y_wrong: torch.Tensor    # (B,) wrong groups != y (matching-aware negatives)
    x_a: torch.Tensor | None = None     # (P, 3, S, S) pairs of one person, groups y_a and y_a + 1
    x_b: torch.Tensor | None = None
    y_a: torch.Tensor | None = None
    neg: tuple | None = None            # (x_c, x_d, y_c): two different people in adjacent groups
    alpha: torch.Tensor | None = None   # (B, 1, 1, 1) / (P, 1, 1, 1) GP interpolation weights


def d_loss(G, D_age, D_trans, cfg: Cfg, b: Batch) -> tuple[torch.Tensor, dict]:
    g = cfg.gan
    with torch.no_grad():
        fake_t = G(b.x, b.y_t)
    terms = age_terms(b.x, b.y, fake_t, b.y_t, b.y_wrong if g.age_wrong_negatives else None)
    la = d_objective(D_age, terms, g.loss, g.lambda_gp, b.alpha[: len(b.x)] if b.alpha is not None else None)
    parts = {"d_age": la}
    total = la
    if g.lambda_cls > 0:
        parts["d_cls"] = F.cross_entropy(D_age.classify(b.x), b.y)             # real faces, their own group
        total = total + g.lambda_cls * parts["d_cls"]
    if g.lambda_t > 0 and b.x_a is not None:
        with torch.no_grad():
            aged, rejuv = G(b.x_a, b.y_a + 1), G(b.x_b, b.y_a)
        tt = trans_terms(b.x_a, b.x_b, b.y_a, aged, rejuv, b.neg if g.trans_negatives else None)
        lt = d_objective(D_trans, tt, g.loss, g.lambda_gp,
                         b.alpha[: len(b.x_a)] if b.alpha is not None else None)
        parts["d_trans"] = lt
        total = total + lt
    return total, parts


def g_loss(G, D_age, D_trans, cfg: Cfg, b: Batch) -> tuple[torch.Tensor, dict]:
    g = cfg.gan
    fake_t = G(b.x, b.y_t)
    parts = {"g_age": adv_loss(D_age(fake_t, b.y_t), True, g.loss)}
    total = parts["g_age"]
    if g.lambda_cls > 0:
        parts["g_cls"] = F.cross_entropy(D_age.classify(fake_t), b.y_t)        # G's output, the target group
        total = total + g.lambda_cls * parts["g_cls"]
    if g.lambda_t > 0 and b.x_a is not None:
        aged, rejuv = G(b.x_a, b.y_a + 1), G(b.x_b, b.y_a)
        lt = 0.5 * (adv_loss(D_trans(b.x_a, aged, b.y_a), True, g.loss)
                    + adv_loss(D_trans(rejuv, b.x_b, b.y_a), True, g.loss))
        parts["g_trans"] = lt
        total = total + g.lambda_t * lt
    if g.lambda_id > 0:
        parts["g_id"] = (G(b.x, b.y) - b.x).abs().mean()
        total = total + g.lambda_id * parts["g_id"]
    return total, parts
