"""Triton InstanceNorm + affine + ReLU (+ residual add): one program per (sample, channel) row.

Forward: pass 1 accumulates sum and sum of squares of the row (training / no running stats) or takes
the given (mean, rstd) (eval with running statistics); pass 2 writes
``y = act((x - mean) * rstd * gamma + beta) (+ skip)`` and the row's (mean, rstd) are kept for backward.
Backward recomputes x_hat, masks by the ReLU, and writes
``dx = rstd * gamma * (g - mean(g) - x_hat * mean(g * x_hat))`` (instance statistics) or
``dx = rstd * gamma * g`` (fixed running statistics), plus per-row sums for d gamma / d beta that
are reduced over the batch in PyTorch. The running-statistics update (batch mean of the per-instance
mean and *unbiased* variance, momentum) is done in PyTorch exactly as nn.InstanceNorm2d does.
Once differentiable (G only; D keeps PyTorch because of the gradient penalty's double backward).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _fwd(X, S, Y, W, B, MEAN, RSTD, L, C, eps, COMPUTE: tl.constexpr, RELU: tl.constexpr,
         HAS_SKIP: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    c = row % C
    base = row.to(tl.int64) * L
    offs = tl.arange(0, BLOCK)
    if COMPUTE:
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        acc2 = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, L, BLOCK):
            m = start + offs < L
            x = tl.load(X + base + start + offs, mask=m, other=0.0).to(tl.float32)
            acc += x
            acc2 += x * x
        mean = tl.sum(acc, 0) / L
        var = tl.maximum(tl.sum(acc2, 0) / L - mean * mean, 0.0)
        rstd = 1.0 / tl.sqrt(var + eps)
        tl.store(MEAN + row, mean)
        tl.store(RSTD + row, rstd)
    else:
        mean = tl.load(MEAN + row)
        rstd = tl.load(RSTD + row)
    w = tl.load(W + c).to(tl.float32)
    b = tl.load(B + c).to(tl.float32)
    for start in range(0, L, BLOCK):
        m = start + offs < L
        x = tl.load(X + base + start + offs, mask=m, other=0.0).to(tl.float32)
        y = (x - mean) * rstd * w + b
        if RELU:
            y = tl.maximum(y, 0.0)
        if HAS_SKIP:
            y += tl.load(S + base + start + offs, mask=m, other=0.0).to(tl.float32)
        tl.store(Y + base + start + offs, y, mask=m)


@triton.jit
def _bwd(X, DY, DX, W, B, MEAN, RSTD, DW_ROW, DB_ROW, L, C, INSTANCE: tl.constexpr, RELU: tl.constexpr,
         BLOCK: tl.constexpr):
    row = tl.program_id(0)
    c = row % C
    base = row.to(tl.int64) * L
    offs = tl.arange(0, BLOCK)
    mean = tl.load(MEAN + row)
    rstd = tl.load(RSTD + row)
    w = tl.load(W + c).to(tl.float32)
    b = tl.load(B + c).to(tl.float32)
    sg = tl.zeros([BLOCK], dtype=tl.float32)
    sgx = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, L, BLOCK):
        m = start + offs < L
        x = tl.load(X + base + start + offs, mask=m, other=0.0).to(tl.float32)
        g = tl.load(DY + base + start + offs, mask=m, other=0.0).to(tl.float32)
        xh = (x - mean) * rstd
        if RELU:
            g = tl.where(xh * w + b > 0, g, 0.0)
        g = tl.where(m, g, 0.0)
        sg += g
        sgx += g * xh
    sum_g = tl.sum(sg, 0)
    sum_gx = tl.sum(sgx, 0)
    tl.store(DB_ROW + row, sum_g)
    tl.store(DW_ROW + row, sum_gx)
    for start in range(0, L, BLOCK):
        m = start + offs < L
        x = tl.load(X + base + start + offs, mask=m, other=0.0).to(tl.float32)
        g = tl.load(DY + base + start + offs, mask=m, other=0.0).to(tl.float32)
        xh = (x - mean) * rstd
        if RELU:
            g = tl.where(xh * w + b > 0, g, 0.0)
        if INSTANCE:
            dx = rstd * w * (g - sum_g / L - xh * (sum_gx / L))
        else:
            dx = rstd * w * g
        tl.store(DX + base + start + offs, dx, mask=m)


def _block(L: int) -> int:
    return min(1024, triton.next_power_of_2(L))


class _INAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, skip, mean_in, rstd_in, eps, relu):
        N, C, H, W_ = x.shape
        L = H * W_
        xc = x.contiguous()
        y = torch.empty_like(xc)
        instance = mean_in is None
        mean = torch.empty(N * C, device=x.device, dtype=torch.float32) if instance else mean_in.contiguous()
        rstd = torch.empty(N * C, device=x.device, dtype=torch.float32) if instance else rstd_in.contiguous()
        s = skip.contiguous() if skip is not None else xc
        _fwd[(N * C,)](xc, s, y, weight, bias, mean, rstd, L, C, eps, COMPUTE=instance, RELU=relu,
                       HAS_SKIP=skip is not None, BLOCK=_block(L))
        ctx.save_for_backward(xc, weight, bias, mean, rstd)
        ctx.instance, ctx.relu, ctx.has_skip = instance, relu, skip is not None
        return y, mean, rstd

    @staticmethod
    def backward(ctx, dy, _dm, _dr):
        xc, weight, bias, mean, rstd = ctx.saved_tensors
        N, C, H, W_ = xc.shape
        L = H * W_
        dy = dy.contiguous()
        dx = torch.empty_like(xc)
        dw_row = torch.empty(N * C, device=xc.device, dtype=torch.float32)
        db_row = torch.empty_like(dw_row)
        _bwd[(N * C,)](xc, dy, dx, weight, bias, mean, rstd, dw_row, db_row, L, C, INSTANCE=ctx.instance,
                       RELU=ctx.relu, BLOCK=_block(L))
        dw = dw_row.view(N, C).sum(0).to(weight.dtype)
        db = db_row.view(N, C).sum(0).to(bias.dtype)
        return dx, dw, db, (dy if ctx.has_skip else None), None, None, None, None


def in_affine_act_triton(x, weight, bias, running_mean, running_var, training, momentum=0.1, eps=1e-5,
                         relu=True, skip=None):
    """Same contract as ``reference.in_affine_act``."""
    N, C, H, W_ = x.shape
    use_running = running_mean is not None and not training
    if use_running:
        mean_in = running_mean.float().repeat(N)
        rstd_in = torch.rsqrt(running_var.float() + eps).repeat(N)
    else:
        mean_in = rstd_in = None
    y, mean, rstd = _INAct.apply(x, weight, bias, skip, mean_in, rstd_in, eps, relu)
    if training and running_mean is not None:
        with torch.no_grad():
            L = H * W_
            var = (1.0 / rstd.view(N, C) ** 2 - eps) * L / max(L - 1, 1)          # unbiased per instance
            running_mean.mul_(1 - momentum).add_(momentum * mean.view(N, C).mean(0).to(running_mean.dtype))
            running_var.mul_(1 - momentum).add_(momentum * var.mean(0).to(running_var.dtype))
    return y
