"""PyTorch reference (and CPU path) of the MoE FFN hot path for a variable number of experts per token.

Inputs are the selected (token, expert, gate) pairs **sorted by expert** (``mask.t().nonzero()``
gives this order for free), the per-expert counts, and the stacked expert weights
``W1 (E, d, h), b1 (E, h), W2 (E, h, d), b2 (E, d)``. For pair p = (t, e, g)::

    y[t] += g * (gelu_tanh(x[t] @ W1[e] + b1[e]) @ W2[e] + b2[e])

The computation is vectorised per expert (a loop over experts, never over tokens): gather the expert's
rows, two GEMMs, scale by the gates, ``index_add_`` into the output. Forward and backward are written by
hand (an autograd.Function) so that only the pre-activations are saved (see :class:`_MoEFFN`);
:func:`moe_ffn_naive` is the plain-autograd definition used by the tests.
"""

from __future__ import annotations

import torch


def gelu_tanh(a: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(a, approximate="tanh")


def _bounds(counts: torch.Tensor) -> list[int]:
    return [0, *torch.cumsum(counts, 0).tolist()]


class _MoEFFN(torch.autograd.Function):
    """Expert-by-expert forward and backward with O(N*4d) saved activations.

    Only the pre-activations ``pre (P, h)`` are saved (at k-in-E, P*h = N*4d: the dense MLP's hidden),
    besides the layer input ``x`` that autograd keeps alive anyway. Every other per-pair tensor (the
    gathered rows, GELU output, expert output, their gradients) exists one expert slice at a time, so
    peak memory does not grow with P*d. The backward recomputes the gather and GELU(pre) and gets
    the gate gradient without the saved expert output::

        dg_p = <out_p, dy_t> = <GELU(pre_p), dy_t W2[e]^T> + <b2[e], dy_t>
    """

    @staticmethod
    def forward(ctx, x, tok, counts, gate, W1, b1, W2, b2):
        bounds = _bounds(counts)
        pre = x.new_empty(tok.shape[0], W1.shape[2])                     # (P, h)
        y = torch.zeros_like(x)                                          # (N, d)
        for e in range(W1.shape[0]):
            s, t = bounds[e], bounds[e + 1]
            if t == s:
                continue
            te = tok[s:t]
            pe = torch.addmm(b1[e], x.index_select(0, te), W1[e], out=pre[s:t])   # (c, h)
            oe = torch.addmm(b2[e], gelu_tanh(pe), W2[e])                         # (c, d)
            y.index_add_(0, te, oe.mul_(gate[s:t].unsqueeze(1)))
        ctx.save_for_backward(x, tok, gate, W1, W2, b2, pre)
        ctx.bounds = bounds
        return y

    @staticmethod
    def backward(ctx, dy):
        x, tok, gate, W1, W2, b2, pre = ctx.saved_tensors
        bounds = ctx.bounds
        dy = dy.contiguous()
        need_x, need_g = ctx.needs_input_grad[0], ctx.needs_input_grad[3]
        dx = torch.zeros_like(x) if need_x else None
        dgate = torch.zeros_like(gate) if need_g else None
        # every slice is written below (or zeroed for an expert without pairs): no full zero-fill
        dW1, dW2 = torch.empty_like(W1), torch.empty_like(W2)
        db1 = W1.new_empty(W1.shape[0], W1.shape[2])
        db2 = torch.empty_like(b2)
        for e in range(W1.shape[0]):
            s, t = bounds[e], bounds[e + 1]
            if t == s:
                for g in (dW1, dW2, db1, db2):
                    g[e].zero_()
                continue
            te, ge = tok[s:t], gate[s:t].unsqueeze(1)                    # (c,), (c, 1)
            dye = dy.index_select(0, te)                                 # (c, d)
            pe = pre[s:t]                                                # (c, h)
            he = gelu_tanh(pe)                                           # (c, h) recomputed
            dhe = dye @ W2[e].t()                                        # (c, h) ungated
            if need_g:
                dgate[s:t] = (he * dhe).sum(1) + dye @ b2[e]
            dye.mul_(ge)                                                 # g * dy: dL/d(out)
            torch.mm(he.t(), dye, out=dW2[e])
            torch.sum(dye, 0, out=db2[e])
            dpe = torch.ops.aten.gelu_backward(dhe.mul_(ge), pe, approximate="tanh")   # (c, h)
            torch.mm(x.index_select(0, te).t(), dpe, out=dW1[e])
            torch.sum(dpe, 0, out=db1[e])
            if need_x:
                dx.index_add_(0, te, dpe @ W1[e].t())
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
