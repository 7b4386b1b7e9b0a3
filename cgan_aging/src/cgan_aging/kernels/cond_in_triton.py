"""Triton age map + InstanceNorm + affine + ReLU (+ residual add): one program per (sample, channel) row.

Forward: pass 1 accumulates the sum and sum of squares of z = x + M[g] over the row; pass 2 writes
``y = act((z - mean) * rstd * w + b) (+ skip)``; the row's (mean, rstd) are kept for backward. The
affine (w, b) is read per row, so a per-sample (B, C) affine (age-conditional IN) costs nothing extra.
Backward recomputes z_hat, masks by the ReLU and writes
``dz = rstd * w * (g - mean(g) - z_hat * mean(g * z_hat))`` plus the per-row sums that give dw, db;
dx = dz, dM = index_add over samples of dz (PyTorch), d skip = dy.
Once differentiable: used in G only (the discriminators stay in PyTorch for the gradient penalty).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _fwd(X, A, G, S, Y, W, B, MEAN, RSTD, L, C, eps, HAS_MAP: tl.constexpr, RELU: tl.constexpr,
         HAS_SKIP: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    n = row // C
    c = row % C
    base = row.to(tl.int64) * L
    offs = tl.arange(0, BLOCK)
    if HAS_MAP:
        abase = (tl.load(G + n).to(tl.int64) * C + c) * L
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, L, BLOCK):
        m = start + offs < L
        z = tl.load(X + base + start + offs, mask=m, other=0.0).to(tl.float32)
        if HAS_MAP:
            z += tl.load(A + abase + start + offs, mask=m, other=0.0).to(tl.float32)
        acc += z
        acc2 += z * z
    mean = tl.sum(acc, 0) / L
    var = tl.maximum(tl.sum(acc2, 0) / L - mean * mean, 0.0)
    rstd = 1.0 / tl.sqrt(var + eps)
    tl.store(MEAN + row, mean)
    tl.store(RSTD + row, rstd)
    w = tl.load(W + row).to(tl.float32)
    b = tl.load(B + row).to(tl.float32)
    for start in range(0, L, BLOCK):
        m = start + offs < L
        z = tl.load(X + base + start + offs, mask=m, other=0.0).to(tl.float32)
        if HAS_MAP:
            z += tl.load(A + abase + start + offs, mask=m, other=0.0).to(tl.float32)
        y = (z - mean) * rstd * w + b
        if RELU:
            y = tl.maximum(y, 0.0)
        if HAS_SKIP:
            y += tl.load(S + base + start + offs, mask=m, other=0.0).to(tl.float32)
        tl.store(Y + base + start + offs, y, mask=m)


@triton.jit
def _bwd(X, A, G, DY, DZ, W, B, MEAN, RSTD, DW_ROW, DB_ROW, L, C, HAS_MAP: tl.constexpr, RELU: tl.constexpr,
         BLOCK: tl.constexpr):
    row = tl.program_id(0)
    n = row // C
    c = row % C
    base = row.to(tl.int64) * L
    offs = tl.arange(0, BLOCK)
    if HAS_MAP:
        abase = (tl.load(G + n).to(tl.int64) * C + c) * L
    mean = tl.load(MEAN + row)
    rstd = tl.load(RSTD + row)
    w = tl.load(W + row).to(tl.float32)
    b = tl.load(B + row).to(tl.float32)
    sg = tl.zeros([BLOCK], dtype=tl.float32)
    sgx = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, L, BLOCK):
        m = start + offs < L
        z = tl.load(X + base + start + offs, mask=m, other=0.0).to(tl.float32)
        if HAS_MAP:
            z += tl.load(A + abase + start + offs, mask=m, other=0.0).to(tl.float32)
        g = tl.load(DY + base + start + offs, mask=m, other=0.0).to(tl.float32)
        zh = (z - mean) * rstd
        if RELU:
            g = tl.where(zh * w + b > 0, g, 0.0)
        g = tl.where(m, g, 0.0)
        sg += g
        sgx += g * zh
    sum_g = tl.sum(sg, 0)
    sum_gx = tl.sum(sgx, 0)
    tl.store(DB_ROW + row, sum_g)
    tl.store(DW_ROW + row, sum_gx)
    for start in range(0, L, BLOCK):
        m = start + offs < L
        z = tl.load(X + base + start + offs, mask=m, other=0.0).to(tl.float32)
        if HAS_MAP:
            z += tl.load(A + abase + start + offs, mask=m, other=0.0).to(tl.float32)
        g = tl.load(DY + base + start + offs, mask=m, other=0.0).to(tl.float32)
        zh = (z - mean) * rstd
        if RELU:
            g = tl.where(zh * w + b > 0, g, 0.0)
        dz = rstd * w * (g - sum_g / L - zh * (sum_gx / L))
        tl.store(DZ + base + start + offs, dz, mask=m)


def _block(L: int) -> int:
    return min(1024, triton.next_power_of_2(L))


class _CondINAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, amap, group, w_rows, b_rows, skip, eps, relu):
        N, C, H, W_ = x.shape
        L = H * W_
        xc = x.contiguous()
        y = torch.empty_like(xc)
        mean = torch.empty(N * C, device=x.device, dtype=torch.float32)
        rstd = torch.empty_like(mean)
        has_map = amap is not None
        a = amap.contiguous() if has_map else xc
        g = group.contiguous() if has_map else torch.zeros(1, dtype=torch.int64, device=x.device)
        s = skip.contiguous() if skip is not None else xc
        _fwd[(N * C,)](xc, a, g, s, y, w_rows, b_rows, mean, rstd, L, C, eps, HAS_MAP=has_map, RELU=relu,
                       HAS_SKIP=skip is not None, BLOCK=_block(L))
        ctx.save_for_backward(xc, a, g, w_rows, b_rows, mean, rstd)
        ctx.has_map, ctx.relu, ctx.has_skip = has_map, relu, skip is not None
        ctx.map_shape = amap.shape if has_map else None
        return y

    @staticmethod
    def backward(ctx, dy):
        xc, a, g, w_rows, b_rows, mean, rstd = ctx.saved_tensors
        N, C, H, W_ = xc.shape
        L = H * W_
        dy = dy.contiguous()
        dz = torch.empty_like(xc)
        dw_row = torch.empty(N * C, device=xc.device, dtype=torch.float32)
        db_row = torch.empty_like(dw_row)
        _bwd[(N * C,)](xc, a, g, dy, dz, w_rows, b_rows, mean, rstd, dw_row, db_row, L, C, HAS_MAP=ctx.has_map,
                       RELU=ctx.relu, BLOCK=_block(L))
        da = None
        if ctx.has_map and ctx.needs_input_grad[1]:
            da = torch.zeros(ctx.map_shape, device=dz.device, dtype=dz.dtype).index_add_(0, g, dz)
        return (dz, da, None, dw_row.to(w_rows.dtype), db_row.to(b_rows.dtype),
                (dy if ctx.has_skip else None), None, None)


def cond_in_act_triton(x, amap, group, weight, bias, relu=True, skip=None, eps=1e-5):
    """Same contract as ``reference.cond_in_act``."""
    N, C = x.shape[:2]
    w = weight if weight.dim() == 2 else weight[None].expand(N, C)
    b = bias if bias.dim() == 2 else bias[None].expand(N, C)
    return _CondINAct.apply(x, amap, group, w.reshape(N * C).contiguous(), b.reshape(N * C).contiguous(), skip,
                            eps, relu)
