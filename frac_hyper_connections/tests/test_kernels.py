"""Connection kernels: the hand-written-backward reference against plain autograd (float64), the Triton kernels
against the reference, forward and backward, under TRITON_INTERPRET=1 at tiny shapes, and the ``impl`` dispatch."""

import pytest
import torch

from hyperfrac.kernels import reference as R
from reprokit.kernels import interpreter_enabled

try:
    import triton
except ImportError:  # pragma: no cover - triton is a Linux dependency
    triton = None

# ---------------------------------------------------------------------------------------- reference vs autograd


def _ref_inputs(kind, s, w, N=12, dyn=True, affine=True, seed=0):
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


def _ref_run(pre, post, args, use_tanh):
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
    args = _ref_inputs(kind, s, 8, dyn=dyn, affine=affine)
    a = _ref_run(R.conn_pre_naive, R.conn_post_naive, args, use_tanh)
    b = _ref_run(R.conn_pre, R.conn_post, args, use_tanh)
    assert len(a) == len(b)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-9)


def test_gradcheck_dynamic_pre():
    r, H, SA, SB, W, nw, sa, sb, y = _ref_inputs("fc", 2, 4, N=3)
    fn = lambda H, SA, SB, W, nw, sa, sb: R.conn_pre(H, SA, SB, W, nw, sa, sb, r, True, 1e-5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (H, SA, SB, W, nw, sa, sb))


# ----------------------------------------------------------------------------------------- Triton vs reference
needs_triton = pytest.mark.skipif(triton is None or (not interpreter_enabled() and not torch.cuda.is_available()),
                                  reason="needs triton and CUDA or TRITON_INTERPRET=1 set before triton is imported")


def _inputs(kind, s, w, N, dyn, affine, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = 1 if kind == "hc" else s
    k = r + s

    def t(*shape, sc=1.0):
        return (torch.randn(*shape, generator=g) * sc).requires_grad_()
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
    out = post(H, y + x.mean(), mix, beta)
    loss = (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum() + (x ** 2).sum()
    leaves = [a for a in (H, SA, SB, W, nw, sa, sb, y) if a is not None]
    return [x, out] + list(torch.autograd.grad(loss, leaves))


@needs_triton
@pytest.mark.parametrize("kind,s,w,N,dyn,use_tanh,affine", [
    ("hc", 4, 24, 20, True, True, False),    # DHCx4 (w not a power of two, N not a multiple of the token block)
    ("hc", 2, 16, 7, True, False, True),     # DHCx2 w/o tanh, with a norm gain
    ("hc", 1, 8, 5, True, True, False),      # DHCx1
    ("hc", 4, 16, 9, False, True, False),    # SHCx4
    ("fc", 4, 6, 18, True, True, True),      # DFCx4 (fractions of width 6)
    ("fc", 2, 8, 5, False, True, False),     # SFCx2
    ("fc", 3, 5, 4, True, False, True),      # DFCx3 (non-power-of-two streams), w/o tanh
])
def test_triton_matches_reference(kind, s, w, N, dyn, use_tanh, affine):
    from hyperfrac.kernels.conn_triton import conn_post_triton, conn_pre_triton
    args = _inputs(kind, s, w, N, dyn, affine)
    ref = _run(R.conn_pre_naive, R.conn_post_naive, args, use_tanh)
    tri = _run(conn_pre_triton, conn_post_triton, args, use_tanh)
    assert len(ref) == len(tri)
    for i, (a, b) in enumerate(zip(ref, tri, strict=True)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4, msg=lambda m, i=i: f"output {i}: {m}")


@needs_triton
def test_model_with_triton_impl_matches_torch():
    from hyperfrac.config import ModelCfg
    from hyperfrac.model import DecoderLM
    cfgs = [ModelCfg(connection="dfcx2", hidden=16, depth=1, heads=2, context=8, vocab_size=11, impl=i)
            for i in ("torch", "triton")]
    torch.manual_seed(0)
    a = DecoderLM(cfgs[0])
    b = DecoderLM(cfgs[1])
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        for m in (a, b):
            for c in m.trunk.connections():
                c.W.copy_(torch.linspace(-0.5, 0.5, c.W.numel()).view_as(c.W))
    idx = torch.randint(0, 11, (2, 8))
    la, lb = a(idx).square().mean(), b(idx).square().mean()
    torch.testing.assert_close(lb, la, rtol=1e-4, atol=1e-5)
    la.backward()
    lb.backward()
    ga, gb = a.trunk.blocks[0].conn_attn.W.grad, b.trunk.blocks[0].conn_attn.W.grad
    torch.testing.assert_close(gb, ga, rtol=1e-3, atol=1e-6)


@pytest.mark.skipif(triton is None, reason="triton not installed")
def test_triton_impl_is_an_error_without_cuda_or_interpreter():
    import subprocess
    import sys
    code = ("import torch\nfrom hyperfrac.kernels import conn_post\n"
            "H = torch.zeros(2, 2, 4)\n"
            "conn_post(H, torch.zeros(2, 1, 4), torch.zeros(2, 2, 2), torch.zeros(2, 2), impl='triton')\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0 and "KernelUnavailable" in r.stderr


# ------------------------------------------------------------------------------------------------------ dispatch


def test_impl_dispatch_torch_and_auto_on_cpu_use_the_reference(monkeypatch):
    import hyperfrac.kernels as K
    calls = []
    monkeypatch.setattr(K.reference, "conn_post", lambda *a: calls.append("ref") or a[0])
    H = torch.zeros(2, 2, 4)
    for impl in ("torch", "auto"):
        K.conn_post(H, torch.zeros(2, 1, 4), torch.zeros(2, 2, 2), torch.zeros(2, 2), impl=impl)
    assert calls == ["ref", "ref"]


def test_impl_is_a_config_choice():
    from hyperfrac.config import Cfg
    from reprokit.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="model.impl"):
        load_config(Cfg, None, overrides=["model.impl=cuda"])
