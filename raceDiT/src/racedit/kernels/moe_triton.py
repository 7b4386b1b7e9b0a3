"""Triton MoE FFN for a variable number of experts per token (explicit token indices per pair).

Same semantics as :func:`racedit.kernels.reference.moe_ffn_torch`. Pairs are sorted by expert; a
tile map (tile -> expert, first row, end row) built from the per-expert counts lets one launch run a
grouped GEMM over all experts, and empty experts cost nothing.

Kernels:

* ``_grouped_gemm``: ``out[p] = epilogue(A[a_idx[p]] @ B[e_p])`` with an optional fused row gather of
  A, bias, GELU-tanh (saving the pre-activation) or multiplication by GELU'(saved pre-activation),
  per-row scaling by the gate, and either a plain store or an atomic scatter-add into
  ``out[out_idx[p]]`` (the combine back to tokens, variable fan-out). Used for: up-projection
  (gather + bias + GELU), down-projection (+ bias, gate scaling, combine), and in backward for
  dA = gate * (dY[tok] @ W2^T) * GELU'(A) and dX += dA @ W1^T (scatter-add).
* ``_grouped_xty``: per-expert ``X_e^T @ G_e`` (ragged weight gradients) with optional gathers and
  row scaling.

Bias gradients and the gate gradient <out_p, dY[tok_p]> are segment reductions done in torch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_C = 0.7978845608028654  # sqrt(2/pi)


@triton.jit
def _tanh(u):
    return 2.0 * tl.sigmoid(2.0 * u) - 1.0


@triton.jit
def _grouped_gemm(A, a_idx, B, bias, scale, aux, Out, out_idx,
                  tile_e, tile_r0, tile_r1, K, N,
                  s_am, s_ak, s_be, s_bk, s_bn, s_bias, s_aux, s_om, s_on,
                  GATHER_A: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                  STORE_AUX: tl.constexpr, HAS_SCALE: tl.constexpr, SCATTER: tl.constexpr,
                  PREC: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    e = tl.load(tile_e + pid_m).to(tl.int64)
    r0 = tl.load(tile_r0 + pid_m)
    r1 = tl.load(tile_r1 + pid_m)
    rows = r0 + tl.arange(0, BM)
    rmask = rows < r1
    if GATHER_A:
        arow = tl.load(a_idx + rows, mask=rmask, other=0).to(tl.int64)
    else:
        arow = rows.to(tl.int64)
    cols = pid_n * BN + tl.arange(0, BN)
    cmask = cols < N
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        ks = k0 + tl.arange(0, BK)
        kmask = ks < K
        a = tl.load(A + arow[:, None] * s_am + ks[None, :] * s_ak, mask=rmask[:, None] & kmask[None, :], other=0.0)
        b = tl.load(B + e * s_be + ks[:, None] * s_bk + cols[None, :] * s_bn,
                    mask=kmask[:, None] & cmask[None, :], other=0.0)
        acc += tl.dot(a, b, input_precision=PREC)
    omask = rmask[:, None] & cmask[None, :]
    if HAS_BIAS:
        acc += tl.load(bias + e * s_bias + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    if STORE_AUX:
        tl.store(aux + rows[:, None] * s_aux + cols[None, :], acc, mask=omask)
    if ACT == 1:  # GELU-tanh
        t = _tanh(_C * (acc + 0.044715 * acc * acc * acc))
        acc = 0.5 * acc * (1.0 + t)
    if ACT == 2:  # multiply by GELU'(saved pre-activation)
        p = tl.load(aux + rows[:, None] * s_aux + cols[None, :], mask=omask, other=0.0).to(tl.float32)
        t = _tanh(_C * (p + 0.044715 * p * p * p))
        acc = acc * (0.5 * (1.0 + t) + 0.5 * p * (1.0 - t * t) * _C * (1.0 + 3 * 0.044715 * p * p))
    if HAS_SCALE:
        acc = acc * tl.load(scale + rows, mask=rmask, other=0.0).to(tl.float32)[:, None]
    if SCATTER:
        orow = tl.load(out_idx + rows, mask=rmask, other=0).to(tl.int64)
        tl.atomic_add(Out + orow[:, None] * s_om + cols[None, :] * s_on, acc, mask=omask)
    else:
        tl.store(Out + rows[:, None].to(tl.int64) * s_om + cols[None, :] * s_on, acc, mask=omask)


@triton.jit
def _grouped_xty(X, x_idx, G, g_idx, scale, Out, starts, K, N,
                 s_xm, s_xk, s_gm, s_gn, s_oe, s_ok, s_on,
                 GATHER_X: tl.constexpr, GATHER_G: tl.constexpr, HAS_SCALE: tl.constexpr,
                 PREC: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr):
    e = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_n = tl.program_id(2)
    s = tl.load(starts + e)
    t = tl.load(starts + e + 1)
    ks = pid_k * BK + tl.arange(0, BK)
    ns = pid_n * BN + tl.arange(0, BN)
    kmask = ks < K
    nmask = ns < N
    acc = tl.zeros((BK, BN), dtype=tl.float32)
    for r0 in range(s, t, BM):
        rows = r0 + tl.arange(0, BM)
        rmask = rows < t
        if GATHER_X:
            xr = tl.load(x_idx + rows, mask=rmask, other=0).to(tl.int64)
        else:
            xr = rows.to(tl.int64)
        if GATHER_G:
            gr = tl.load(g_idx + rows, mask=rmask, other=0).to(tl.int64)
        else:
            gr = rows.to(tl.int64)
        x = tl.load(X + xr[:, None] * s_xm + ks[None, :] * s_xk, mask=rmask[:, None] & kmask[None, :], other=0.0)
        g = tl.load(G + gr[:, None] * s_gm + ns[None, :] * s_gn, mask=rmask[:, None] & nmask[None, :], other=0.0)
        if HAS_SCALE:
            sc = tl.load(scale + rows, mask=rmask, other=0.0)
            g = (g.to(tl.float32) * sc.to(tl.float32)[:, None]).to(x.dtype)
        acc += tl.dot(tl.trans(x), g, input_precision=PREC)
    tl.store(Out + e.to(tl.int64) * s_oe + ks[:, None] * s_ok + ns[None, :] * s_on, acc,
             mask=kmask[:, None] & nmask[None, :])


def _blocks(device: torch.device) -> tuple[int, int, int]:
    return (16, 16, 16) if device.type != "cuda" else (64, 64, 32)


def _prec(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _tile_map(counts: torch.Tensor, BM: int):
    """tile -> (expert, first row, end row) over the expert-sorted pairs."""
    E = counts.numel()
    ends = torch.cumsum(counts, 0)
    starts = ends - counts
    nblk = (counts + BM - 1) // BM
    tile_e = torch.repeat_interleave(torch.arange(E, device=counts.device), nblk)
    first = torch.cumsum(nblk, 0) - nblk
    j = torch.arange(tile_e.numel(), device=counts.device) - first[tile_e]
    r0 = (starts[tile_e] + j * BM).to(torch.int32)
    r1 = ends[tile_e].to(torch.int32)
    return tile_e.to(torch.int32).contiguous(), r0.contiguous(), r1.contiguous(), \
        torch.cat([starts, ends[-1:]]).to(torch.int32).contiguous()


def _gg(A, a_idx, B, b_strides, bias, scale, aux, Out, out_idx, tiles, K, N, act, store_aux, scatter):
    tile_e, r0, r1 = tiles
    BM, BN, BK = _blocks(A.device)
    n_tiles = tile_e.numel()
    if n_tiles == 0:
        return
    dummy = tile_e
    grid = (n_tiles, triton.cdiv(N, BN))
    _grouped_gemm[grid](
        A, a_idx if a_idx is not None else dummy, B, bias if bias is not None else A,
        scale if scale is not None else A, aux if aux is not None else A, Out,
        out_idx if out_idx is not None else dummy, tile_e, r0, r1, K, N,
        A.stride(0), A.stride(1), B.stride(0), b_strides[0], b_strides[1],
        bias.stride(0) if bias is not None else 0, aux.stride(0) if aux is not None else 0,
        Out.stride(0), Out.stride(1),
        GATHER_A=a_idx is not None, HAS_BIAS=bias is not None, ACT=act, STORE_AUX=store_aux,
        HAS_SCALE=scale is not None, SCATTER=scatter, PREC=_prec(A.dtype), BM=BM, BN=BN, BK=BK)


def _xty(X, x_idx, G, g_idx, scale, Out, starts, K, N):
    BM, BN, BK = _blocks(X.device)
    E = Out.shape[0]
    grid = (E, triton.cdiv(K, BK), triton.cdiv(N, BN))
    dummy = starts
    _grouped_xty[grid](
        X, x_idx if x_idx is not None else dummy, G, g_idx if g_idx is not None else dummy,
        scale if scale is not None else X, Out, starts, K, N,
        X.stride(0), X.stride(1), G.stride(0), G.stride(1), Out.stride(0), Out.stride(1), Out.stride(2),
        GATHER_X=x_idx is not None, GATHER_G=g_idx is not None, HAS_SCALE=scale is not None,
        PREC=_prec(X.dtype), BM=BM, BK=BK, BN=BN)


class MoEFFNTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, tok, counts, gate, W1, b1, W2, b2):
        x = x.contiguous()
        W1, W2, b1, b2 = W1.contiguous(), W2.contiguous(), b1.contiguous(), b2.contiguous()
        tok32 = tok.to(torch.int32).contiguous()
        gate = gate.contiguous()
        BM = _blocks(x.device)[0]
        tile_e, r0, r1, starts = _tile_map(counts, BM)
        P, d, h = tok.numel(), x.shape[1], W1.shape[2]
        pre = torch.empty(P, h, device=x.device, dtype=torch.float32)
        hid = torch.empty(P, h, device=x.device, dtype=x.dtype)
        _gg(x, tok32, W1, (W1.stride(1), W1.stride(2)), b1, None, pre, hid, None,
            (tile_e, r0, r1), d, h, act=1, store_aux=True, scatter=False)
        out = torch.empty(P, d, device=x.device, dtype=torch.float32)
        y = torch.zeros(x.shape[0], d, device=x.device, dtype=torch.float32)
        _gg(hid, None, W2, (W2.stride(1), W2.stride(2)), b2, gate, out, y, tok32,
            (tile_e, r0, r1), h, d, act=0, store_aux=True, scatter=True)
        ctx.save_for_backward(x, tok32, tok, gate, W1, W2, pre, hid, out, tile_e, r0, r1, starts, counts)
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, dy):
        x, tok32, tok, gate, W1, W2, pre, hid, out, tile_e, r0, r1, starts, counts = ctx.saved_tensors
        dy = dy.contiguous()
        P, d, h, E = tok.numel(), x.shape[1], W1.shape[2], W1.shape[0]
        tiles = (tile_e, r0, r1)
        dyg = dy.index_select(0, tok)
        dgate = (out * dyg.float()).sum(1).to(gate.dtype)
        # dA = gate * (dY[tok] @ W2^T) * GELU'(pre)
        dpre = torch.empty(P, h, device=x.device, dtype=x.dtype)
        _gg(dy, tok32, W2, (W2.stride(2), W2.stride(1)), None, gate, pre, dpre, None,
            tiles, d, h, act=2, store_aux=False, scatter=False)
        # dX += dA @ W1^T (scatter back to tokens)
        dx = torch.zeros(x.shape[0], d, device=x.device, dtype=torch.float32)
        _gg(dpre, None, W1, (W1.stride(2), W1.stride(1)), None, None, None, dx, tok32,
            tiles, h, d, act=0, store_aux=False, scatter=True)
        dW2 = torch.zeros(E, h, d, device=x.device, dtype=torch.float32)
        _xty(hid, None, dy, tok32, gate, dW2, starts, h, d)
        dW1 = torch.zeros(E, d, h, device=x.device, dtype=torch.float32)
        _xty(x, tok32, dpre, None, None, dW1, starts, d, h)
        eid = torch.repeat_interleave(torch.arange(E, device=x.device), counts)
        db1 = torch.zeros(E, h, device=x.device, dtype=torch.float32).index_add_(0, eid, dpre.float())
        dout = dyg.float() * gate.float().unsqueeze(1)
        db2 = torch.zeros(E, d, device=x.device, dtype=torch.float32).index_add_(0, eid, dout)
        return (dx.to(x.dtype), None, None, dgate, dW1.to(W1.dtype), db1.to(W1.dtype),
                dW2.to(W2.dtype), db2.to(W2.dtype))


def moe_ffn_triton(x, tok, counts, gate, W1, b1, W2, b2) -> torch.Tensor:
    return MoEFFNTriton.apply(x, tok, counts, gate, W1, b1, W2, b2)
