"""PyTorch reference (and CPU path) of the MoE FFN hot path for a variable number of experts per token.

Inputs are the selected (token, expert, gate) pairs **sorted by expert** (``mask.t().nonzero()``
gives this order for free), the per-expert counts, and the stacked expert weights
``W1 (E, d, h), b1 (E, h), W2 (E, h, d), b2 (E, d)``. For pair p = (t, e, g)::

    y[t] += g * (gelu_tanh(x[t] @ W1[e] + b1[e]) @ W2[e] + b2[e])

The computation is vectorised: one gather, one GEMM per expert slice (a loop over experts, never over
tokens), one ``index_add_``. Forward and backward are written by hand (an autograd.Function) so the
CPU path allocates each buffer once; :func:`moe_ffn_naive` is the plain-autograd definition used by
the tests.
"""

from __future__ import annotations

import torch


def gelu_tanh(a: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(a, approximate="tanh")


def _bounds(counts: torch.Tensor) -> list[int]:
    return [0, *torch.cumsum(counts, 0).tolist()]


class _MoEFFN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, tok, counts, gate, W1, b1, W2, b2):
        bounds = _bounds(counts)
        E = W1.shape[0]
        xg = x.index_select(0, tok)
        P, h, d = xg.shape[0], W1.shape[2], W2.shape[2]
        pre = x.new_empty(P, h)
        out = x.new_empty(P, d)
        for e in range(E):
            s, t = bounds[e], bounds[e + 1]
            if t > s:
                torch.addmm(b1[e], xg[s:t], W1[e], out=pre[s:t])
        hid = gelu_tanh(pre)
        for e in range(E):
            s, t = bounds[e], bounds[e + 1]
            if t > s:
                torch.addmm(b2[e], hid[s:t], W2[e], out=out[s:t])
        y = torch.zeros_like(x).index_add_(0, tok, out * gate.unsqueeze(1))
        ctx.save_for_backward(xg, tok, gate, W1, W2, pre, hid, out)
        ctx.bounds = bounds
        ctx.n = x.shape[0]
        return y

    @staticmethod
    def backward(ctx, dy):
        xg, tok, gate, W1, W2, pre, hid, out = ctx.saved_tensors
        bounds = ctx.bounds
        E = W1.shape[0]
        dy = dy.contiguous()
        dyg = dy.index_select(0, tok)
        dgate = (out * dyg).sum(1)
        dout = dyg * gate.unsqueeze(1)
        dW1, dW2 = torch.zeros_like(W1), torch.zeros_like(W2)
        db1 = W1.new_zeros(E, W1.shape[2])
        db2 = W2.new_zeros(E, W2.shape[2])
        dpre = torch.empty_like(pre)
        for e in range(E):
            s, t = bounds[e], bounds[e + 1]
            if t > s:
                torch.mm(hid[s:t].t(), dout[s:t], out=dW2[e])
                db2[e] = dout[s:t].sum(0)
                torch.mm(dout[s:t], W2[e].t(), out=dpre[s:t])
        dpre = torch.ops.aten.gelu_backward(dpre, pre, approximate="tanh")
        dxg = torch.empty_like(xg)
        for e in range(E):
            s, t = bounds[e], bounds[e + 1]
            if t > s:
                torch.mm(xg[s:t].t(), dpre[s:t], out=dW1[e])
                db1[e] = dpre[s:t].sum(0)
                torch.mm(dpre[s:t], W1[e].t(), out=dxg[s:t])
        dx = torch.zeros(ctx.n, xg.shape[1], dtype=xg.dtype, device=xg.device).index_add_(0, tok, dxg)
        return dx, None, None, dgate, dW1, db1, dW2, db2


def moe_ffn_torch(x, tok, counts, gate, W1, b1, W2, b2) -> torch.Tensor:
    """Vectorised reference; pairs (tok, gate) sorted by expert with ``counts[e]`` pairs each."""
    return _MoEFFN.apply(x, tok, counts, gate, W1, b1, W2, b2)


def moe_ffn_naive(x, tok, counts, gate, W1, b1, W2, b2) -> torch.Tensor:
    """Plain-autograd definition (for tests): per-pair expert index, batched matmuls."""
    eid = torch.repeat_interleave(torch.arange(W1.shape[0], device=x.device), counts)
    xg = x[tok]
    hid = gelu_tanh(torch.bmm(xg.unsqueeze(1), W1[eid]).squeeze(1) + b1[eid])
    out = torch.bmm(hid.unsqueeze(1), W2[eid]).squeeze(1) + b2[eid]
    return torch.zeros_like(x).index_add(0, tok, out * gate.unsqueeze(1))


def masked_loop_moe(x, mask, gates, W1, b1, W2, b2) -> torch.Tensor:
    """The per-expert masked loop of public DiT-MoE code (benchmark baseline only): for every expert,
    boolean-index its tokens, run the expert, scatter back."""
    y = torch.zeros_like(x)
    for e in range(W1.shape[0]):
        sel = mask[:, e]
        xe = x[sel]
        he = gelu_tanh(xe @ W1[e] + b1[e]) @ W2[e] + b2[e]
        y[sel] = y[sel] + he * gates[sel, e].unsqueeze(1)
    return y
