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


@pytest.mark.parametrize("D", [12, 33])
def test_embedding_bag_path_matches_reference_forward_and_backward(D):
    from ultramem.kernels import weighted_bag_torch

    table, rows, w, bags, nb = _case(D=D, n_bags=70)                       # some bags stay empty
    res = []
    for fn in (weighted_bag_reference, weighted_bag_torch):
        t, ww = table.clone().requires_grad_(True), w.clone().requires_grad_(True)
        out = fn(t, rows, ww, bags, nb)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        res.append((out.detach(), t.grad, ww.grad))
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_reference_is_the_embedding_bag_sum():
    table, rows, w, bags, nb = _case()
    out = weighted_bag_reference(table, rows, w, bags, nb)
    for b in range(nb):
        sel = bags == b
        torch.testing.assert_close(out[b], (table[rows[sel]] * w[sel, None]).sum(0))


def test_dispatch(monkeypatch):
    table, rows, w, bags, nb = _case()
    ref = weighted_bag_reference(table, rows, w, bags, nb)
    torch.testing.assert_close(weighted_bag(table, rows, w, bags, nb, impl="auto"), ref,   # CPU: auto -> torch
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weighted_bag(table, rows, w, bags, nb, impl="torch"), ref, rtol=1e-5, atol=1e-6)
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


def _grid_case(N=5, H=2, r=2, mm=6, h=2, additive=False, m=None):
    """Random stage-1 scores and cores, drawn from the first seed whose core-summed grid has a gap of at
    least 1e-3 between consecutive scores among the top-(m+1) of every (token, head): the top-m indices
    are then unique under any fp32 summation order (ties excluded by construction)."""
    from ultramem.kernels import grid_scores_reference

    m = m or mm
    for seed in range(100):
        g = torch.Generator().manual_seed(seed)
        sr = torch.randn(N, H, 1 if additive else r, mm, generator=g)
        scol = torch.randn(N, H, 1 if additive else r, mm, generator=g)
        core = None if additive else torch.rand(H, h, r, r, generator=g)
        top = grid_scores_reference(sr, scol, core).sum(2).flatten(-2).topk(min(m + 1, mm * mm), -1)[0]
        if (top[..., :-1] - top[..., 1:] > 1e-3).all():
            return sr, scol, core
    raise AssertionError("no tie-free seed")


@needs_triton
@pytest.mark.parametrize("additive, r, mm, m, h", [(True, 1, 5, 5, 1), (False, 2, 6, 6, 2), (False, 3, 5, 4, 1)])
def test_grid_topm_triton_matches_reference_forward_and_backward(additive, r, mm, m, h):
    from ultramem.kernels import grid_topm

    sr0, sc0, c0 = _grid_case(r=r, mm=mm, h=h, additive=additive, m=m)
    res = []
    for impl in ("torch", "triton"):
        sr, scol = sr0.clone().requires_grad_(True), sc0.clone().requires_grad_(True)
        core = None if c0 is None else c0.clone().requires_grad_(True)
        flat, s = grid_topm(sr, scol, core, m, impl=impl)
        (s * torch.linspace(-1, 1, s.numel()).view_as(s)).sum().backward()
        res.append((flat, s.detach(), sr.grad, scol.grad, None if core is None else core.grad))
    assert torch.equal(res[0][0], res[1][0])                  # same winners, in descending score order
    for a, b in zip(res[0][1:], res[1][1:]):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_grid_topm_reference_is_the_exhaustive_sub_grid_top_m():
    from ultramem.kernels import grid_topm_reference

    sr, scol, core = _grid_case(r=2, mm=5, h=2, m=3)
    flat, s = grid_topm_reference(sr, scol, core, 3)
    full = torch.einsum("bhri,hcrs,bhsj->bhcij", sr, core, scol)              # (N, H, h, m, m)
    for b in range(sr.shape[0]):
        for hd in range(sr.shape[1]):
            summed = full[b, hd].sum(0).flatten()
            want = summed.argsort(descending=True)[:3]
            assert torch.equal(flat[b, hd], want)
            torch.testing.assert_close(s[b, hd].sum(0), summed[want])


def test_grid_topm_triton_is_refused_without_triton(monkeypatch):
    import reprokit.kernels as K
    from ultramem.kernels import grid_topm

    sr, scol, core = _grid_case()
    monkeypatch.setattr(K, "triton_available", lambda: False)
    with pytest.raises(KernelUnavailable):
        grid_topm(sr, scol, core, 4, impl="triton")
