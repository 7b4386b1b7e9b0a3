"""Kernel (c), the weighted gather with IVE pooling: forward and backward parity with the reference under
TRITON_INTERPRET=1 (set in conftest.py), and the ``model.impl`` dispatch."""

import pytest
import torch

from reprokit.kernels import KernelUnavailable, triton_available
from ultramem.kernels import weighted_bag, weighted_bag_reference

needs_triton = pytest.mark.skipif(not triton_available(), reason="triton not installed")


def _case(R=40, D=12, K=60, n_bags=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(R, D, generator=g, dtype=torch.float32)
    rows = torch.randint(0, R, (K,), generator=g)
    rows[:5] = 3                                            # repeated rows: the segment sum must add them
    w = torch.randn(K, generator=g, dtype=torch.float32)
    bags = torch.randint(0, n_bags, (K,), generator=g)
    return table, rows, w, bags, n_bags


@needs_triton
@pytest.mark.parametrize("D", [12, 33])
def test_triton_matches_reference_forward_and_backward(D):
    table, rows, w, bags, nb = _case(D=D)
    outs, grads = [], []
    for impl in ("torch", "triton"):
        t = table.clone().requires_grad_(True)
        ww = w.clone().requires_grad_(True)
        out = weighted_bag(t, rows, ww, bags, nb, impl=impl)
        g = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        (out * g).sum().backward()
        outs.append(out.detach())
        grads.append((t.grad, ww.grad))
    torch.testing.assert_close(outs[1], outs[0])
    torch.testing.assert_close(grads[1][0], grads[0][0])
    torch.testing.assert_close(grads[1][1], grads[0][1])


def test_reference_is_the_embedding_bag_sum():
    table, rows, w, bags, nb = _case()
    out = weighted_bag_reference(table, rows, w, bags, nb)
    for b in range(nb):
        sel = bags == b
        torch.testing.assert_close(out[b], (table[rows[sel]] * w[sel, None]).sum(0))


def test_dispatch(monkeypatch):
    table, rows, w, bags, nb = _case()
    ref = weighted_bag_reference(table, rows, w, bags, nb)
    torch.testing.assert_close(weighted_bag(table, rows, w, bags, nb, impl="auto"), ref)   # CPU: auto -> torch
    torch.testing.assert_close(weighted_bag(table, rows, w, bags, nb, impl="torch"), ref)
    import reprokit.kernels as K

    monkeypatch.setattr(K, "triton_available", lambda: False)
    with pytest.raises(KernelUnavailable):
        K.resolve_impl("triton", table.device)


@needs_triton
def test_model_logits_agree_between_impls(smoke_cfg):
    from ultramem.model import build_model

    x = torch.randint(0, 64, (2, 8))
    logits = [build_model(smoke_cfg(f"model.impl={impl}").model)(x) for impl in ("torch", "triton")]
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-5)


@needs_triton
@pytest.mark.parametrize("r, n, m, D", [(1, 12, 4, 8), (2, 37, 5, 20)])
def test_key_topm_triton_matches_reference_forward_and_backward(r, n, m, D):
    from ultramem.kernels import key_topm

    g = torch.Generator().manual_seed(0)
    q0 = torch.randn(6, 2, D, generator=g)
    k0 = torch.randn(2, r, n, D, generator=g)
    w = torch.rand(2, r, generator=g) + 0.1
    res = []
    for impl in ("torch", "triton"):
        q, k = q0.clone().requires_grad_(True), k0.clone().requires_grad_(True)
        idx, s = key_topm(q, k, w, m, impl=impl)
        (s * torch.linspace(-1, 1, s.numel()).view_as(s)).sum().backward()
        res.append((idx, s.detach(), q.grad, k.grad))
    assert torch.equal(res[0][0], res[1][0])                  # same winners, in score order
    for a, b in zip(res[0][1:], res[1][1:]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
