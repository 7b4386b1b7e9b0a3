"""The real/fake assignment of both discriminators and the generator's targets (gan.py docstring),
checked with recording critics; the switches (negatives, wrong-group, lambda_t, lambda_id, lambda_cls,
model.d_cond)."""

import pytest
import torch

from cgan_aging.config import Cfg
from cgan_aging.gan import Batch, adv_loss, age_terms, d_loss, g_loss, trans_terms
from cgan_aging.model import AgeDiscriminator, Generator, TransitionDiscriminator, gradient_penalty
from reprokit.config import load_config

TINY = ["model.hidden=2", "model.depth=1", "model.d_depth=2", "model.image_size=8", "model.num_groups=3"]


def _cfg(*ov):
    return load_config(Cfg, None, [*TINY, *ov])


class Recorder(torch.nn.Module):
    """A critic that records its inputs and returns a constant per-call score."""

    def __init__(self):
        super().__init__()
        self.calls = []
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, *inputs):
        self.calls.append(inputs)
        return self.p + torch.zeros(inputs[0].shape[0], 1, 2, 2)


class TagG(torch.nn.Module):
    """G(x, y) = x + 100 + y: outputs are recognisable."""

    def forward(self, x, y):
        return x + 100 + y[:, None, None, None].float()


class ClsRecorder(Recorder):
    """A recording critic with a classifier head: logits say group 0 (so CE is known exactly)."""

    def __init__(self, K=3):
        super().__init__()
        self.K, self.cls_calls = K, []

    def classify(self, x):
        self.cls_calls.append(x)
        return self.p + torch.tensor([[10.0] + [0.0] * (self.K - 1)]).expand(x.shape[0], -1)


def _ce_to(groups, K=3):
    """CE of logits (10, 0, ..., 0) against ``groups``."""
    logits = torch.tensor([[10.0] + [0.0] * (K - 1)]).expand(len(groups), -1)
    return torch.nn.functional.cross_entropy(logits, groups).item()


def _batch(neg=True):
    x = torch.zeros(2, 3, 8, 8)
    xa, xb = torch.full((2, 3, 8, 8), 1.0), torch.full((2, 3, 8, 8), 2.0)
    b = Batch(x, torch.tensor([0, 1]), torch.tensor([2, 2]), torch.tensor([1, 0]), xa, xb, torch.tensor([0, 1]))
    if neg:
        b.neg = (torch.full((2, 3, 8, 8), 5.0), torch.full((2, 3, 8, 8), 6.0), torch.tensor([1, 0]))
    return b


def test_term_lists():
    x, y = torch.zeros(1, 3, 2, 2), torch.tensor([0])
    t = age_terms(x, y, x + 1, y + 1, y + 2)
    assert [(s.name, s.real) for s in t] == [("real", True), ("fake", False), ("wrong_group", False)]
    assert len(age_terms(x, y, x, y)) == 2
    t = trans_terms(x, x + 1, y, x + 2, x + 3, neg=(x, x, y))
    assert [(s.name, s.real) for s in t] == [("real_pair", True), ("fake_aging", False),
                                             ("fake_rejuvenation", False), ("different_person", False)]


def test_discriminator_assignment_per_the_formulation():
    cfg = _cfg("gan.lambda_t=1.0", "gan.trans_negatives=true", "gan.age_wrong_negatives=true")
    Da, Dt, b = Recorder(), Recorder(), _batch()
    total, parts = d_loss(TagG(), Da, Dt, cfg, b)
    (x0, y0), (f, yt), (xw, yw) = Da.calls
    assert torch.equal(x0, b.x) and torch.equal(y0, b.y)                           # real: (x, its group)
    assert torch.equal(f, b.x + 100 + 2) and torch.equal(yt, b.y_t)                # fake: (G(x, y_t), y_t)
    assert torch.equal(xw, b.x) and torch.equal(yw, b.y_wrong)                     # wrong-group negative
    real, aging, rejuv, neg = Dt.calls
    assert torch.equal(real[0], b.x_a) and torch.equal(real[1], b.x_b) and torch.equal(real[2], b.y_a)
    assert torch.equal(aging[0], b.x_a) and torch.equal(aging[1], b.x_a + 100 + (b.y_a + 1)[:, None, None, None])
    assert torch.equal(rejuv[0], b.x_b + 100 + b.y_a[:, None, None, None]) and torch.equal(rejuv[1], b.x_b)
    assert torch.equal(neg[0], b.neg[0]) and torch.equal(neg[1], b.neg[1]) and torch.equal(neg[2], b.neg[2])
    # LSGAN with a zero critic: real terms cost (0-1)^2 = 1, fakes 0
    assert parts["d_age"].item() == pytest.approx(1.0) and parts["d_trans"].item() == pytest.approx(1.0)


def test_switches_remove_terms():
    Da, Dt = Recorder(), Recorder()
    d_loss(TagG(), Da, Dt, _cfg("gan.trans_negatives=false", "gan.age_wrong_negatives=false"), _batch())
    assert len(Da.calls) == 2 and len(Dt.calls) == 3
    Da, Dt = Recorder(), Recorder()
    _, parts = d_loss(TagG(), Da, Dt, _cfg("gan.lambda_t=0.0"), _batch())
    assert len(Dt.calls) == 0 and "d_trans" not in parts


def test_generator_targets_are_real():
    cfg = _cfg("gan.lambda_t=2.0")
    Da, Dt, b = Recorder(), Recorder(), _batch()
    with torch.no_grad():
        Da.p.fill_(1.0)                                        # LSGAN: a critic saying "real" costs G nothing
        Dt.p.fill_(1.0)
    total, parts = g_loss(TagG(), Da, Dt, cfg, b)
    assert total.item() == pytest.approx(0.0)
    (f, yt), = Da.calls
    assert torch.equal(f, b.x + 102) and torch.equal(yt, b.y_t)
    aging, rejuv = Dt.calls
    assert torch.equal(aging[0], b.x_a) and torch.equal(rejuv[1], b.x_b)
    with torch.no_grad():
        Dt.p.fill_(0.0)
    _, parts = g_loss(TagG(), Da, Dt, cfg, b)
    assert parts["g_trans"].item() == pytest.approx(1.0)
    _, parts = g_loss(TagG(), Da, Dt, _cfg("gan.lambda_id=1.0"), b)
    assert parts["g_id"].item() == pytest.approx(100 + 0.5)    # |G(x, y_x) - x| = 100 + y


def test_adv_losses_and_gp():
    out = torch.tensor([[0.5]])
    assert adv_loss(out, True, "lsgan").item() == pytest.approx(0.25)
    assert adv_loss(out, False, "wgan-gp").item() == pytest.approx(0.5)
    assert adv_loss(out, True, "wgan-gp").item() == pytest.approx(-0.5)
    w = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]]])
    x = torch.randn(3, 1, 2, 2, requires_grad=True)
    gp = gradient_penalty(lambda z: z * w, [x])
    assert torch.allclose(gp, torch.tensor((14.25 ** 0.5 - 1) ** 2))


def test_real_networks_shapes_and_wgan():
    cfg = _cfg("gan.loss=wgan-gp")
    torch.manual_seed(0)
    G, Da, Dt = Generator(cfg), AgeDiscriminator(cfg), TransitionDiscriminator(cfg)
    b = _batch()
    b.alpha = torch.rand(2, 1, 1, 1)
    y = G(b.x, b.y_t)
    assert y.shape == (2, 3, 8, 8) and y.abs().max() <= 1
    assert Da(b.x, b.y).shape == (2, 1, 2, 2) and Dt(b.x_a, b.x_b, b.y_a).shape == (2, 1, 2, 2)
    total, parts = d_loss(G, Da, Dt, cfg, b)
    total.backward()
    assert all(p.grad is not None for p in Dt.parameters())


def test_classifier_terms_real_faces_in_d_target_group_in_g():
    cfg = _cfg("model.d_cond=projection", "gan.lambda_cls=2.0", "gan.lambda_t=0.0")
    b = _batch()
    b.y, b.y_t = torch.tensor([0, 1]), torch.tensor([2, 2])
    Da, Dt = ClsRecorder(), Recorder()
    total, parts = d_loss(TagG(), Da, Dt, cfg, b)
    (xc,) = Da.cls_calls
    assert torch.equal(xc, b.x)                                                    # D: real faces only...
    assert parts["d_cls"].item() == pytest.approx(_ce_to(b.y))                     # ...with their own group
    assert total.item() == pytest.approx(parts["d_age"].item() + 2.0 * parts["d_cls"].item())
    Da = ClsRecorder()
    total, parts = g_loss(TagG(), Da, Dt, cfg, b)
    (xg,) = Da.cls_calls
    assert torch.equal(xg, b.x + 100 + b.y_t[:, None, None, None])               # G: its output at y_t...
    assert parts["g_cls"].item() == pytest.approx(_ce_to(b.y_t))                   # ...scored against y_t
    assert parts["g_cls"].item() != pytest.approx(_ce_to(b.y))
    assert total.item() == pytest.approx(parts["g_age"].item() + 2.0 * parts["g_cls"].item())
    Da = ClsRecorder()
    _, parts = d_loss(TagG(), Da, Dt, _cfg("model.d_cond=projection"), b)        # lambda_cls = 0: no term
    assert not Da.cls_calls and "d_cls" not in parts


def test_projection_critics_see_only_images_and_depend_on_the_code():
    cfg = _cfg("model.d_cond=projection")
    torch.manual_seed(0)
    Da, Dt = AgeDiscriminator(cfg), TransitionDiscriminator(cfg)
    assert Da.trunk[0].in_channels == 3 and Dt.trunk[0].in_channels == 6         # no tiled code
    assert Dt.cls is None and Da.classify(torch.zeros(2, 3, 8, 8)).shape == (2, 3)
    x = torch.randn(2, 3, 8, 8)
    y0, y1 = torch.tensor([0, 0]), torch.tensor([1, 1])
    assert torch.equal(Da(x, y0), Da(x, y1))                                       # zero-init table: unconditional
    with torch.no_grad():
        Da.emb.weight.normal_()
        Dt.emb.weight.normal_()
    assert Da(x, y0).shape == (2, 1, 2, 2) and not torch.allclose(Da(x, y0), Da(x, y1))
    xb = torch.randn(2, 3, 8, 8)
    assert not torch.allclose(Dt(x, xb, y0), Dt(x, xb, y1))
    f = Da.trunk(x)                                                                # head(f) + <E[y], f> per patch
    want = Da.head(f) + (Da.emb.weight[1][None, :, None, None] * f).sum(1, keepdim=True)
    assert torch.allclose(Da(x, y1), want)
    cat = AgeDiscriminator(_cfg())
    assert cat.trunk[0].in_channels == 3 + 3 and cat.emb is None
    with pytest.raises(ValueError, match="projection"):
        cat.classify(x)
