"""Triton kernels for the two connection ops per sublayer (HC and FC), forward and backward.

``pre``  (one program per token): per-stream LayerNorm, dynamic coefficients (projection, tanh, scale, static
add), read mix ``x = alpha_read^T H``; emits the per-token fp32 mixing matrix and write weights for ``post``.
Backward (one program per block of tokens): recomputes the norm and coefficients from ``H`` (nothing but ``H``
and the parameters is saved), returns ``dH`` per token and per-program partial sums of the parameter
gradients (two-stage reduction, summed in PyTorch).
``post`` (one program per token): ``H'_j = sum_i mix_ij h_i + beta_j y_(j|0)``; backward gives dH, dy, dmix, dbeta.

Semantics are those of :mod:`hyperfrac.kernels.reference` (tested for parity under ``TRITON_INTERPRET=1``).
Static variants run the same kernels with ``DYN=False`` (coefficients = the static matrices for every token).
The loads use broadcast-and-reduce instead of ``tl.dot`` (the stream counts are far below the 16x16 MMA tile).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["conn_pre_triton", "conn_post_triton"]


@triton.jit
def _tanh(x):
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _load_coef_cols(ptr, ld, col0, ncol, offs_s, offs_c, s):
    m = (offs_s[:, None] < s) & (offs_c[None, :] < ncol)
    return tl.load(ptr + offs_s[:, None] * ld + col0 + offs_c[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _load_w_cols(ptr, ld, col0, ncol, offs_w, offs_c, w):
    m = (offs_w[:, None] < w) & (offs_c[None, :] < ncol)
    return tl.load(ptr + offs_w[:, None] * ld + col0 + offs_c[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _pre_fwd(H, SA, SB, W, G, SAL, SBE, X, MIX, BETA, s, w, r, eps,
             SP: tl.constexpr, RP: tl.constexpr, BW: tl.constexpr,
             DYN: tl.constexpr, TANH: tl.constexpr, HAS_G: tl.constexpr):
    n = tl.program_id(0)
    offs_s = tl.arange(0, SP)
    offs_r = tl.arange(0, RP)
    offs_w = tl.arange(0, BW)
    k = r + s
    hm = (offs_s[:, None] < s) & (offs_w[None, :] < w)
    h = tl.load(H + n * s * w + offs_s[:, None] * w + offs_w[None, :], mask=hm, other=0.0).to(tl.float32)
    a_read = _load_coef_cols(SA, k, 0, r, offs_s, offs_r, s)            # (SP, RP)
    a_mix = _load_coef_cols(SA, k, r, s, offs_s, offs_s, s)             # (SP, SP)
    beta = tl.load(SB + offs_s, mask=offs_s < s, other=0.0).to(tl.float32)
    if DYN:
        mu = tl.sum(h, axis=1) / w
        diff = tl.where(hm, h - mu[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(diff * diff, axis=1) / w + eps)
        hn = diff * rstd[:, None]
        if HAS_G:
            hn = hn * tl.load(G + offs_w, mask=offs_w < w, other=0.0).to(tl.float32)[None, :]
        w_read = _load_w_cols(W, k + 1, 0, r, offs_w, offs_r, w)        # (BW, RP)
        w_mix = _load_w_cols(W, k + 1, r, s, offs_w, offs_s, w)         # (BW, SP)
        w_beta = tl.load(W + offs_w * (k + 1) + k, mask=offs_w < w, other=0.0).to(tl.float32)
        p_read = tl.sum(hn[:, :, None] * w_read[None, :, :], axis=1)    # (SP, RP)
        p_mix = tl.sum(hn[:, :, None] * w_mix[None, :, :], axis=1)      # (SP, SP)
        p_beta = tl.sum(hn * w_beta[None, :], axis=1)                   # (SP,)
        if TANH:
            p_read = _tanh(p_read)
            p_mix = _tanh(p_mix)
            p_beta = _tanh(p_beta)
        sal = tl.load(SAL).to(tl.float32)
        sbe = tl.load(SBE).to(tl.float32)
        a_read = a_read + sal * p_read
        a_mix = a_mix + sal * p_mix
        beta = beta + sbe * p_beta
    x = tl.sum(a_read[:, :, None] * h[:, None, :], axis=0)              # (RP, BW)
    xm = (offs_r[:, None] < r) & (offs_w[None, :] < w)
    tl.store(X + n * r * w + offs_r[:, None] * w + offs_w[None, :], x, mask=xm)
    mm = (offs_s[:, None] < s) & (offs_s[None, :] < s)
    tl.store(MIX + n * s * s + offs_s[:, None] * s + offs_s[None, :], a_mix, mask=mm)
    tl.store(BETA + n * s + offs_s, beta, mask=offs_s < s)


@triton.jit
def _pre_bwd(H, SA, SB, W, G, SAL, SBE, DX, DMIX, DBETA, DH,
             P_SA, P_SB, P_W, P_G, P_SAL, P_SBE, N, s, w, r, eps, TOK: tl.constexpr,
             SP: tl.constexpr, RP: tl.constexpr, BW: tl.constexpr,
             DYN: tl.constexpr, TANH: tl.constexpr, HAS_G: tl.constexpr):
    pid = tl.program_id(0)
    offs_s = tl.arange(0, SP)
    offs_r = tl.arange(0, RP)
    offs_w = tl.arange(0, BW)
    k = r + s
    hm = (offs_s[:, None] < s) & (offs_w[None, :] < w)
    xm = (offs_r[:, None] < r) & (offs_w[None, :] < w)
    mm = (offs_s[:, None] < s) & (offs_s[None, :] < s)
    sa_read = _load_coef_cols(SA, k, 0, r, offs_s, offs_r, s)
    acc_read = tl.zeros((SP, RP), dtype=tl.float32)
    acc_mix = tl.zeros((SP, SP), dtype=tl.float32)
    acc_beta = tl.zeros((SP,), dtype=tl.float32)
    acc_wr = tl.zeros((BW, RP), dtype=tl.float32)
    acc_wm = tl.zeros((BW, SP), dtype=tl.float32)
    acc_wb = tl.zeros((BW,), dtype=tl.float32)
    acc_g = tl.zeros((BW,), dtype=tl.float32)
    acc_sal = tl.zeros((SP,), dtype=tl.float32)
    acc_sbe = tl.zeros((SP,), dtype=tl.float32)
    if DYN:
        w_read = _load_w_cols(W, k + 1, 0, r, offs_w, offs_r, w)
        w_mix = _load_w_cols(W, k + 1, r, s, offs_w, offs_s, w)
        w_beta = tl.load(W + offs_w * (k + 1) + k, mask=offs_w < w, other=0.0).to(tl.float32)
        sal = tl.load(SAL).to(tl.float32)
        sbe = tl.load(SBE).to(tl.float32)
        if HAS_G:
            g = tl.load(G + offs_w, mask=offs_w < w, other=0.0).to(tl.float32)
    for t in range(TOK):
        n = pid * TOK + t
        if n < N:
            h = tl.load(H + n * s * w + offs_s[:, None] * w + offs_w[None, :], mask=hm, other=0.0).to(tl.float32)
            dx = tl.load(DX + n * r * w + offs_r[:, None] * w + offs_w[None, :], mask=xm, other=0.0).to(tl.float32)
            dmix = tl.load(DMIX + n * s * s + offs_s[:, None] * s + offs_s[None, :], mask=mm, other=0.0)
            dbeta = tl.load(DBETA + n * s + offs_s, mask=offs_s < s, other=0.0).to(tl.float32)
            a_read = sa_read
            if DYN:
                mu = tl.sum(h, axis=1) / w
                diff = tl.where(hm, h - mu[:, None], 0.0)
                rstd = 1.0 / tl.sqrt(tl.sum(diff * diff, axis=1) / w + eps)
                xhat = diff * rstd[:, None]
                hn = xhat
                if HAS_G:
                    hn = xhat * g[None, :]
                p_read = tl.sum(hn[:, :, None] * w_read[None, :, :], axis=1)
                p_mix = tl.sum(hn[:, :, None] * w_mix[None, :, :], axis=1)
                p_beta = tl.sum(hn * w_beta[None, :], axis=1)
                if TANH:
                    p_read = _tanh(p_read)
                    p_mix = _tanh(p_mix)
                    p_beta = _tanh(p_beta)
                a_read = sa_read + sal * p_read
            da_read = tl.sum(h[:, None, :] * dx[None, :, :], axis=2)        # (SP, RP)
            dh = tl.sum(a_read[:, :, None] * dx[None, :, :], axis=1)        # (SP, BW)
            acc_read += da_read
            acc_mix += dmix
            acc_beta += dbeta
            if DYN:
                acc_sal += tl.sum(da_read * p_read, axis=1) + tl.sum(dmix * p_mix, axis=1)
                acc_sbe += dbeta * p_beta
                dp_read = sal * da_read
                dp_mix = sal * dmix
                dp_beta = sbe * dbeta
                if TANH:
                    dp_read = dp_read * (1.0 - p_read * p_read)
                    dp_mix = dp_mix * (1.0 - p_mix * p_mix)
                    dp_beta = dp_beta * (1.0 - p_beta * p_beta)
                acc_wr += tl.sum(hn[:, :, None] * dp_read[:, None, :], axis=0)
                acc_wm += tl.sum(hn[:, :, None] * dp_mix[:, None, :], axis=0)
                acc_wb += tl.sum(hn * dp_beta[:, None], axis=0)
                dhn = (tl.sum(dp_read[:, None, :] * w_read[None, :, :], axis=2)
                       + tl.sum(dp_mix[:, None, :] * w_mix[None, :, :], axis=2)
                       + dp_beta[:, None] * w_beta[None, :])
                dxhat = dhn
                if HAS_G:
                    acc_g += tl.sum(dhn * xhat, axis=0)
                    dxhat = dhn * g[None, :]
                dxhat = tl.where(hm, dxhat, 0.0)
                m1 = tl.sum(dxhat, axis=1) / w
                m2 = tl.sum(dxhat * xhat, axis=1) / w
                dh += tl.where(hm, rstd[:, None] * (dxhat - m1[:, None] - xhat * m2[:, None]), 0.0)
            tl.store(DH + n * s * w + offs_s[:, None] * w + offs_w[None, :], dh, mask=hm)
    k1 = k + 1
    base_sa = P_SA + pid * s * k
    tl.store(base_sa + offs_s[:, None] * k + offs_r[None, :], acc_read,
             mask=(offs_s[:, None] < s) & (offs_r[None, :] < r))
    tl.store(base_sa + offs_s[:, None] * k + r + offs_s[None, :], acc_mix, mask=mm)
    tl.store(P_SB + pid * s + offs_s, acc_beta, mask=offs_s < s)
    if DYN:
        base_w = P_W + pid * w * k1
        tl.store(base_w + offs_w[:, None] * k1 + offs_r[None, :], acc_wr,
                 mask=(offs_w[:, None] < w) & (offs_r[None, :] < r))
        tl.store(base_w + offs_w[:, None] * k1 + r + offs_s[None, :], acc_wm,
                 mask=(offs_w[:, None] < w) & (offs_s[None, :] < s))
        tl.store(base_w + offs_w * k1 + k, acc_wb, mask=offs_w < w)
        tl.store(P_SAL + pid, tl.sum(acc_sal, axis=0))
        tl.store(P_SBE + pid, tl.sum(acc_sbe, axis=0))
        if HAS_G:
            tl.store(P_G + pid * w + offs_w, acc_g, mask=offs_w < w)


@triton.jit
def _post_fwd(H, Y, MIX, BETA, OUT, s, w, ys, SP: tl.constexpr, YP: tl.constexpr, BW: tl.constexpr):
    n = tl.program_id(0)
    offs_s = tl.arange(0, SP)
    offs_y = tl.arange(0, YP)
    offs_w = tl.arange(0, BW)
    hm = (offs_s[:, None] < s) & (offs_w[None, :] < w)
    mm = (offs_s[:, None] < s) & (offs_s[None, :] < s)
    h = tl.load(H + n * s * w + offs_s[:, None] * w + offs_w[None, :], mask=hm, other=0.0).to(tl.float32)
    mix = tl.load(MIX + n * s * s + offs_s[:, None] * s + offs_s[None, :], mask=mm, other=0.0).to(tl.float32)
    beta = tl.load(BETA + n * s + offs_s, mask=offs_s < s, other=0.0).to(tl.float32)
    out = tl.sum(mix[:, :, None] * h[:, None, :], axis=0)              # (SP, BW)
    ym = (offs_y[:, None] < ys) & (offs_w[None, :] < w)
    y = tl.load(Y + n * ys * w + offs_y[:, None] * w + offs_w[None, :], mask=ym, other=0.0).to(tl.float32)
    if YP == 1:
        out += beta[:, None] * y                                        # HC: broadcast to every stream
    else:
        out += beta[:, None] * y                                        # FC: fraction j -> fraction j
    tl.store(OUT + n * s * w + offs_s[:, None] * w + offs_w[None, :], out, mask=hm)


@triton.jit
def _post_bwd(H, Y, MIX, BETA, DOUT, DH, DY, DMIX, DBETA, s, w, ys,
              SP: tl.constexpr, YP: tl.constexpr, BW: tl.constexpr):
    n = tl.program_id(0)
    offs_s = tl.arange(0, SP)
    offs_y = tl.arange(0, YP)
    offs_w = tl.arange(0, BW)
    hm = (offs_s[:, None] < s) & (offs_w[None, :] < w)
    mm = (offs_s[:, None] < s) & (offs_s[None, :] < s)
    ym = (offs_y[:, None] < ys) & (offs_w[None, :] < w)
    h = tl.load(H + n * s * w + offs_s[:, None] * w + offs_w[None, :], mask=hm, other=0.0).to(tl.float32)
    d = tl.load(DOUT + n * s * w + offs_s[:, None] * w + offs_w[None, :], mask=hm, other=0.0).to(tl.float32)
    mix = tl.load(MIX + n * s * s + offs_s[:, None] * s + offs_s[None, :], mask=mm, other=0.0).to(tl.float32)
    beta = tl.load(BETA + n * s + offs_s, mask=offs_s < s, other=0.0).to(tl.float32)
    y = tl.load(Y + n * ys * w + offs_y[:, None] * w + offs_w[None, :], mask=ym, other=0.0).to(tl.float32)
    dh = tl.sum(mix[:, :, None] * d[None, :, :], axis=1)               # (SP, BW)
    dmix = tl.sum(h[:, None, :] * d[None, :, :], axis=2)               # (SP, SP)
    if YP == 1:
        dbeta = tl.sum(y * d, axis=1)                                  # y (1, BW) broadcast
        dy = tl.sum(beta[:, None] * d, axis=0)[None, :]
    else:
        dbeta = tl.sum(y * d, axis=1)
        dy = beta[:, None] * d
    tl.store(DH + n * s * w + offs_s[:, None] * w + offs_w[None, :], dh, mask=hm)
    tl.store(DY + n * ys * w + offs_y[:, None] * w + offs_w[None, :], dy, mask=ym)
    tl.store(DMIX + n * s * s + offs_s[:, None] * s + offs_s[None, :], dmix, mask=mm)
    tl.store(DBETA + n * s + offs_s, dbeta, mask=offs_s < s)


def _p2(x: int) -> int:
    return triton.next_power_of_2(max(int(x), 1))


_TOK = 16  # tokens per program in the pre backward (partial sums per program)


class _PreFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, H, SA, SB, W, g, sal, sbe, r, use_tanh, eps):
        N, s, w = H.shape
        H = H.contiguous()
        dyn = W is not None
        dummy = H.new_zeros(1)
        x = torch.empty(N, r, w, device=H.device, dtype=H.dtype)
        mix = torch.empty(N, s, s, device=H.device, dtype=torch.float32)
        beta = torch.empty(N, s, device=H.device, dtype=torch.float32)
        _pre_fwd[(N,)](H, SA.contiguous(), SB.contiguous(), W.contiguous() if dyn else dummy,
                       g if g is not None else dummy, sal if dyn else dummy, sbe if dyn else dummy,
                       x, mix, beta, s, w, r, eps, SP=_p2(s), RP=_p2(r), BW=_p2(w),
                       DYN=dyn, TANH=bool(use_tanh), HAS_G=g is not None)
        ctx.save_for_backward(H, SA, SB, W if dyn else dummy, g if g is not None else dummy,
                              sal if dyn else dummy, sbe if dyn else dummy)
        ctx.cfg = (r, bool(use_tanh), float(eps), dyn, g is not None)
        return x, mix, beta

    @staticmethod
    def backward(ctx, dx, dmix, dbeta):
        H, SA, SB, W, g, sal, sbe = ctx.saved_tensors
        r, use_tanh, eps, dyn, has_g = ctx.cfg
        N, s, w = H.shape
        k = r + s
        f32 = dict(device=H.device, dtype=torch.float32)
        dx = dx.contiguous() if dx is not None else torch.zeros(N, r, w, **f32)
        dmix = dmix.contiguous().float() if dmix is not None else torch.zeros(N, s, s, **f32)
        dbeta = dbeta.contiguous().float() if dbeta is not None else torch.zeros(N, s, **f32)
        P = triton.cdiv(N, _TOK)
        dH = torch.empty_like(H)
        p_sa, p_sb = torch.zeros(P, s, k, **f32), torch.zeros(P, s, **f32)
        p_w = torch.zeros(P, w, k + 1, **f32) if dyn else torch.zeros(1, **f32)
        p_g = torch.zeros(P, w, **f32) if has_g else torch.zeros(1, **f32)
        p_sal, p_sbe = torch.zeros(P, **f32), torch.zeros(P, **f32)
        _pre_bwd[(P,)](H, SA.contiguous(), SB, W.contiguous(), g, sal, sbe, dx, dmix, dbeta, dH,
                       p_sa, p_sb, p_w, p_g, p_sal, p_sbe, N, s, w, r, eps, TOK=_TOK,
                       SP=_p2(s), RP=_p2(r), BW=_p2(w), DYN=dyn, TANH=use_tanh, HAS_G=has_g)
        dSA, dSB = p_sa.sum(0).to(SA.dtype), p_sb.sum(0).to(SB.dtype)
        if not dyn:
            return dH, dSA, dSB, None, None, None, None, None, None, None
        dW = p_w.sum(0).to(W.dtype)
        dg = p_g.sum(0).to(g.dtype) if has_g else None
        return (dH, dSA, dSB, dW, dg, p_sal.sum().reshape(sal.shape).to(sal.dtype),
                p_sbe.sum().reshape(sbe.shape).to(sbe.dtype), None, None, None)


class _PostFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, H, y, mix, beta):
        H, y, mix, beta = H.contiguous(), y.contiguous(), mix.contiguous(), beta.contiguous()
        N, s, w = H.shape
        out = torch.empty_like(H)
        _post_fwd[(N,)](H, y, mix, beta, out, s, w, y.shape[1], SP=_p2(s), YP=_p2(y.shape[1]), BW=_p2(w))
        ctx.save_for_backward(H, y, mix, beta)
        return out

    @staticmethod
    def backward(ctx, dout):
        H, y, mix, beta = ctx.saved_tensors
        N, s, w = H.shape
        dH, dy = torch.empty_like(H), torch.empty_like(y)
        dmix = torch.empty(N, s, s, device=H.device, dtype=torch.float32)
        dbeta = torch.empty(N, s, device=H.device, dtype=torch.float32)
        _post_bwd[(N,)](H, y, mix, beta, dout.contiguous(), dH, dy, dmix, dbeta, s, w, y.shape[1],
                        SP=_p2(s), YP=_p2(y.shape[1]), BW=_p2(w))
        return dH, dy, dmix.to(mix.dtype), dbeta.to(beta.dtype)


def conn_pre_triton(H, static_alpha, static_beta, W, norm_w, s_alpha, s_beta, r, use_tanh=True, eps=1e-5):
    """Triton ``pre``; per-token (N, s, s) mix and (N, s) beta even for static variants."""
    if (W is None) != (s_alpha is None):
        raise ValueError("dynamic connections need W, s_alpha and s_beta together")
    return _PreFn.apply(H, static_alpha, static_beta, W, norm_w, s_alpha, s_beta, r, use_tanh, eps)


def conn_post_triton(H, y, mix, beta):
    if mix.dim() == 2:  # static coefficients from the torch path: broadcast them per token
        mix = mix.expand(H.shape[0], *mix.shape)
        beta = beta.expand(H.shape[0], *beta.shape)
    return _PostFn.apply(H, y, mix, beta)
