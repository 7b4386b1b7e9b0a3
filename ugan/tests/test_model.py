"""G/D shapes, the WGAN-GP penalty against a hand computation, the trace terms (target = source pairs
excluded, the two G variants), the prototype switch and the learning-rate rules."""

import math

import pytest
import torch
import torch.nn.functional as F

from reprokit.config import ConfigError, load_config
from ugan.config import Cfg
from ugan.gan import Prototypes, d_loss, g_loss, trace_mask
from ugan.model import Discriminator, Generator, gradient_penalty
from ugan.train import lr_factor

TINY = ["model.hidden=4", "model.depth=1", "model.d_depth=2", "model.image_size=8", "model.num_domains=3"]


def _cfg(*ov):
    return load_config(Cfg, None, [*TINY, *ov])


def test_shapes():
    cfg = _cfg()
    G, D = Generator(cfg), Discriminator(cfg)
    x, c = torch.randn(2, 3, 8, 8), torch.eye(3)[[0, 2]]
    y = G(x, c)
    assert y.shape == (2, 3, 8, 8) and y.abs().max() <= 1
    adv, cls, tr = D(x)
    assert adv.shape == (2, 1, 2, 2) and cls.shape == (2, 3) and tr.shape == (2, 3)
    assert G.conv_in.bias is None and G.conv_in.padding == (3, 3) and G.conv_in.padding_mode == "zeros"
    assert G.in_in.track_running_stats and not _cfg("model.track_running_stats=false").model.track_running_stats


def test_eval_norm_instance_is_the_train_mode_forward_and_running_reads_the_buffers():
    # the public code's test() never calls G.eval(): inference normalises with each image's statistics
    torch.manual_seed(0)
    x, c = torch.randn(4, 3, 8, 8), torch.eye(3)[[0, 1, 2, 0]]
    G = Generator(_cfg())
    assert _cfg().model.eval_norm == "instance"
    G.train()
    G(x, c)                                        # one training forward: the running buffers move
    assert G.in_in.running_mean.abs().sum() > 0
    R = Generator(_cfg("model.eval_norm=running"))
    R.load_state_dict(G.state_dict())              # same buffers and parameters under both settings
    G.eval(), R.eval()
    buf = G.in_in.running_mean.clone()
    a, r = G(x, c), R(x, c)
    G.train()
    t = G(x, c)
    assert torch.allclose(a, t, atol=1e-6)         # instance: eval == train-mode forward
    assert not torch.allclose(a, r, atol=1e-3)     # running: the running estimates, a different output
    assert torch.equal(R.in_in.running_mean, buf)  # eval never writes the buffers
    with pytest.raises(ConfigError, match="eval_norm"):
        _cfg("model.eval_norm=batch")


def test_gradient_penalty_matches_hand_computation():
    # D_adv(x) = sum of w * x over a 2x2 patch map -> gradient w.r.t. x is known in closed form
    w = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]]])
    x = torch.randn(3, 1, 2, 2, requires_grad=True)
    gp = gradient_penalty(lambda z: z * w, x)                       # map (B,1,2,2); grad = w per sample
    norm = math.sqrt(1 + 4 + 0.25 + 9)
    assert torch.allclose(gp, torch.tensor((norm - 1) ** 2))
    q = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    x2 = torch.tensor([[[[1.0, 0.0], [2.0, 1.0]]], [[[0.0, 0.5], [1.0, 1.0]]]], requires_grad=True)
    gp2 = gradient_penalty(lambda z: (z ** 2 * q).sum((2, 3), keepdim=True), x2)   # grad = 2 q x
    g = 2 * q * x2.detach()[:, 0]
    hand = ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert torch.allclose(gp2, hand)
    gp2.backward()                                                   # differentiable (double backward)
    assert x2.grad is not None


def test_trace_terms_exclude_target_equal_source():
    c_s = torch.eye(3)[[0, 1, 2, 1]]
    c_t = torch.eye(3)[[0, 2, 1, 1]]
    assert trace_mask(c_s, c_t).tolist() == [False, True, True, False]
    cfg = _cfg("ugan.lambda_tr=1.0", "ugan.d_real_term=false")
    torch.manual_seed(0)
    G, D = Generator(cfg), Discriminator(cfg)
    P = Prototypes(cfg, D.width)
    x = torch.randn(4, 3, 8, 8)
    _, parts = d_loss(G, D, P, cfg, x, c_s, c_t, torch.full((4, 1, 1, 1), 0.5))
    with torch.no_grad():
        fake = G(x, c_t)
        tr = D(fake)[2]
    m = torch.tensor([False, True, True, False])
    assert torch.allclose(parts["d_trace"], F.cross_entropy(tr[m], c_s[m].argmax(1)))
    # all pairs equal: the trace terms are zero (not NaN)
    _, parts = g_loss(G, D, P, cfg, x, c_s, c_s)
    assert parts["g_trace"].item() == 0.0


def test_g_variants():
    torch.manual_seed(0)
    c_s, c_t = torch.eye(3)[[0, 1]], torch.eye(3)[[2, 0]]
    x = torch.randn(2, 3, 8, 8)
    out = {}
    for v in ("untranslated", "confusion"):
        cfg = _cfg("ugan.lambda_tr=1.0", f"ugan.g_variant={v}")
        torch.manual_seed(1)
        G, D = Generator(cfg), Discriminator(cfg)
        _, parts = g_loss(G, D, Prototypes(cfg, D.width), cfg, x, c_s, c_t)
        tr = D(G(x, c_t))[2]
        out[v] = (parts["g_trace"], tr)
    tr = out["untranslated"][1]
    assert torch.allclose(out["untranslated"][0], F.cross_entropy(tr, c_t.argmax(1)))
    assert torch.allclose(out["confusion"][0], -F.log_softmax(tr, 1).mean())


def test_prototype_switch_changes_gs_input():
    x, c = torch.randn(2, 3, 8, 8), torch.eye(3)[[0, 2]]
    none, pix, feat = _cfg(), _cfg("ugan.prototype=pixel"), _cfg("ugan.prototype=feature")
    assert Generator(none).make_input(x, c).shape[1] == 3 + 3
    Gp = Generator(pix)
    P = torch.randn(2, 3, 8, 8)
    inp = Gp.make_input(x, c, P)
    assert inp.shape[1] == 3 + 3 + 3 and torch.equal(inp[:, 6:], P) and torch.equal(inp[:, 3:6, 4, 4], c)
    with pytest.raises(ValueError, match="prototype"):
        Gp(x, c)
    protos = Prototypes(pix, 8)
    protos.pixel.copy_(torch.arange(3.0)[:, None, None, None].expand(3, 3, 8, 8))
    assert torch.equal(protos.guide(c, c)[:, 0, 0, 0], torch.tensor([0.0, 2.0]))
    diff = Prototypes(_cfg("ugan.prototype=pixel", "ugan.proto_diff=true"), 8)
    diff.pixel.copy_(protos.pixel)
    assert torch.equal(diff.guide(c, torch.eye(3)[[1, 1]])[:, 0, 0, 0], torch.tensor([-1.0, 1.0]))
    Gf = Generator(feat, proto_dim=5)
    assert Gf.in_channels == 6 and Gf.film is not None
    fp = Prototypes(feat, 5)
    fp.update(torch.ones(2, 5), torch.tensor([0, 2]))
    assert torch.equal(fp.feat[1], torch.zeros(5)) and torch.equal(fp.feat[0], torch.ones(5))


def test_lr_rules():
    cfg = _cfg("train.steps=40000", "train.n_critic=5")
    tc = cfg.train                              # 200k D iterations, decay over the last 100k
    assert lr_factor(tc, 0) == 1.0 and lr_factor(tc, 100_000) == 1.0
    end = lr_factor(tc, 200_000)
    assert 0.998 < end < 0.9995                # the public code's "linear decay": ~0.1 % in total
    tc.schedule = "linear"
    assert lr_factor(tc, 150_000) == pytest.approx(0.5) and lr_factor(tc, 200_000) == 0.0
    tc.schedule = "constant"
    assert lr_factor(tc, 199_999) == 1.0
