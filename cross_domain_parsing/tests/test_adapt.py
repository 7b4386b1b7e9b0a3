"""The five-step iteration: the least-squares targets of every step, what each step updates, D_l's
real/fake inputs per arm, and BatchNorm statistics never touched by target batches in the source-only arm."""

from pathlib import Path

import pytest
import torch

from crossparse import adapt
from crossparse.config import Cfg
from crossparse.model import CrossParse
from crossparse.train import load_run, make_optimizers, train
from reprokit.config import load_config

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def _cfg(*ov):
    return load_config(Cfg, str(SMOKE), ["train.log_every=1", "train.eval_every=0", "train.ckpt_every=0", *ov])


def test_lsgan_targets():
    x = torch.tensor([0.0, 0.5, 2.0])
    assert adapt.lsgan(x, True) == pytest.approx(((x - 1) ** 2).mean().item())
    assert adapt.lsgan(x, False) == pytest.approx((x ** 2).mean().item())


def _batch(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, H, W = 2, cfg.model.height, cfg.model.width
    return torch.randn(b, 3, H, W, generator=g), torch.randint(0, 12, (b, H, W), generator=g), \
        torch.randn(b, 3, H, W, generator=g)


@pytest.mark.parametrize("label_real", ["onehot", "source_pred"])
def test_each_step_has_its_lsgan_target_and_updates_only_its_module(monkeypatch, label_real):
    cfg = _cfg("adapt.label_every=1", f"adapt.label_real={label_real}")
    torch.manual_seed(0)
    net = CrossParse(cfg)
    opts = make_optimizers(net, cfg)
    calls = []
    real_lsgan = adapt.lsgan

    def spy(pred, real):
        calls.append(real)
        return real_lsgan(pred, real)

    monkeypatch.setattr(adapt, "lsgan", spy)
    d_l_inputs = []
    net.D_l.register_forward_pre_hook(lambda m, a: d_l_inputs.append(a[0].detach().clone()))
    snap = {k: {n: p.detach().clone() for n, p in getattr(net, k).named_parameters()} for k in ("C", "D_f", "D_l")}
    xs, ys, xt = _batch(cfg)
    out = adapt.iteration(net, opts, cfg, xs, ys, xt, step=0, sync=lambda m: None)
    # 2: C wants D_f(f~5_s) = 1; 3: D_f real target / fake source; 4a: parser wants D_l(P(x_t)) = 1; 4b: D_l
    assert calls == [True, True, False, True, True, False]
    assert set(out) == {"loss", "c_loss", "df_loss", "adv_loss", "dl_loss", "ref_loss"}
    for k in ("C", "D_f", "D_l"):
        assert any(not torch.equal(p, snap[k][n]) for n, p in getattr(net, k).named_parameters()), k
    fake, real = d_l_inputs[0], d_l_inputs[1]
    assert torch.allclose(fake.sum(1), torch.ones_like(fake.sum(1)), atol=1e-5)          # softmax probabilities
    if label_real == "onehot":
        assert torch.equal(real, adapt.onehot(ys, 12))
    else:
        assert torch.allclose(real.sum(1), torch.ones_like(real.sum(1)), atol=1e-5) and not torch.equal(
            real, adapt.onehot(ys, 12))


def test_label_pair_runs_every_kth_iteration_and_logits_switch(monkeypatch):
    cfg = _cfg("adapt.label_every=5", "adapt.feature=false", "adapt.dl_input=logits")
    net = CrossParse(cfg)
    opts = make_optimizers(net, cfg)
    xs, ys, xt = _batch(cfg)
    assert "adv_loss" in adapt.iteration(net, opts, cfg, xs, ys, xt, 0, lambda m: None)
    assert "adv_loss" not in adapt.iteration(net, opts, cfg, xs, ys, xt, 3, lambda m: None)
    seen = []
    net.D_l.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    adapt.iteration(net, opts, cfg, xs, ys, xt, 5, lambda m: None)
    assert not torch.allclose(seen[0].sum(1), torch.ones_like(seen[0].sum(1)))            # raw logits (code)


def _bn_stats(run):
    sd = load_run(run).net.parser.state_dict()
    return {k: v for k, v in sd.items() if "running" in k}


def test_source_only_never_runs_target_batches_through_batchnorm(tmp_path):
    """Same seed, different target domains: the source-only parser (BN statistics included) is
    identical; the full model's is not (it does pass target batches through the parser)."""
    so = ["adapt.feature=false", "adapt.label=false", "train.steps=2"]
    train(_cfg(*so, "data.target=indoor"), tmp_path / "a")
    train(_cfg(*so, "data.target=movie"), tmp_path / "b")
    a, b = _bn_stats(tmp_path / "a"), _bn_stats(tmp_path / "b")
    assert a and all(torch.equal(a[k], b[k]) for k in a)
    full = ["adapt.feature=true", "adapt.label=true", "adapt.label_every=1", "train.steps=2"]
    train(_cfg(*full, "data.target=indoor"), tmp_path / "c")
    train(_cfg(*full, "data.target=movie"), tmp_path / "d")
    c, d = _bn_stats(tmp_path / "c"), _bn_stats(tmp_path / "d")
    assert any(not torch.equal(c[k], d[k]) for k in c if "mean" in k)


def test_target_bn_switch_leaves_statistics_untouched():
    """adapt.target_bn_stats=false: target forwards run BN in eval mode (no update, gradients flow),
    and BN is back in train mode afterwards."""
    cfg = _cfg()
    P = CrossParse(cfg).parser.train()
    stats = lambda: {k: v.clone() for k, v in P.state_dict().items() if "running" in k}  # noqa: E731
    before = stats()
    _, _, xt = _batch(cfg)
    with adapt.target_bn(P, update=False):
        P(xt).sum().backward()
    assert all(torch.equal(before[k], v) for k, v in stats().items())
    assert all(m.training for m in P.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in P.parameters())
    with adapt.target_bn(P, update=True):
        P(xt)
    assert any(not torch.equal(before[k], v) for k, v in stats().items() if "mean" in k)
