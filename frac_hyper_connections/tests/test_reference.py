import pytest
import torch

from hyperfrac.kernels import reference as R


def _inputs(kind, s, w, N=12, dyn=True, affine=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = 1 if kind == "hc" else s
    k = r + s
    t = lambda *shape, sc=1.0: (torch.randn(*shape, generator=g, dtype=torch.float64) * sc).requires_grad_()  # noqa: E731
    H = t(N, s, w)
    SA, SB = t(s, k), t(s)
    W = t(w, k + 1, sc=0.3) if dyn else None
    nw = t(w) if (dyn and affine) else None
    sa, sb = (t((), sc=0.5), t((), sc=0.5)) if dyn else (None, None)
    y = t(N, 1 if kind == "hc" else s, w)
    return r, H, SA, SB, W, nw, sa, sb, y


def _run(pre, post, args, use_tanh):
    r, H, SA, SB, W, nw, sa, sb, y = args
    x, mix, beta = pre(H, SA, SB, W, nw, sa, sb, r, use_tanh, 1e-5)
    out = post(H, y * 1.0 + x.mean(), mix, beta)  # y depends on x, as in a real sublayer
    loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum() + (x ** 2).sum()
    leaves = [a for a in (H, SA, SB, W, nw, sa, sb, y) if a is not None]
    return [out, x] + list(torch.autograd.grad(loss, leaves))


@pytest.mark.parametrize("kind,s,dyn,use_tanh,affine", [("hc", 4, True, True, False), ("hc", 2, True, False, True),
                                                        ("hc", 1, True, True, False), ("fc", 4, True, True, True),
                                                        ("fc", 2, True, False, False), ("hc", 4, False, True, False),
                                                        ("fc", 4, False, True, False)])
def test_manual_backward_matches_autograd(kind, s, dyn, use_tanh, affine):
    args = _inputs(kind, s, 8, dyn=dyn, affine=affine)
    a = _run(R.conn_pre_naive, R.conn_post_naive, args, use_tanh)
    b = _run(R.conn_pre, R.conn_post, args, use_tanh)
    assert len(a) == len(b)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-9)


def test_gradcheck_dynamic_pre():
    r, H, SA, SB, W, nw, sa, sb, y = _inputs("fc", 2, 4, N=3)
    fn = lambda H, SA, SB, W, nw, sa, sb: R.conn_pre(H, SA, SB, W, nw, sa, sb, r, True, 1e-5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (H, SA, SB, W, nw, sa, sb))
