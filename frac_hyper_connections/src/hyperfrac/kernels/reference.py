"""PyTorch reference semantics of the two connection ops per sublayer (HC and FC share them).

State layout: ``H`` of shape ``(N, s, w)`` — N tokens, ``s`` streams (HC: ``s = n`` copies of width
``w = d``; FC: ``s = m`` fractions of width ``w = d / m``). ``r`` is the number of read columns: 1 for HC
(one sublayer input of width d), ``m`` for FC (the sublayer input is the m mixed fractions, concatenated).

Coefficients per token (HC Eqs. 10-13, FC Eqs. 11-14, restated)::

    Hn     = LayerNorm(H) over w, per stream (optional gain ``norm_w``)
    P      = Hn @ W                              # W: (w, r + s + 1), one row of P per stream
    P      = tanh(P)            (if use_tanh)
    alpha  = static_alpha + s_alpha * P[..., :r+s]    # (N, s, r+s): read columns then mixing columns
    beta   = static_beta  + s_beta  * P[..., r+s]     # (N, s): write weight of stream j

``pre``:  x[j] = sum_i alpha[i, j] h_i  for j < r                  -> (N, r, w)
``post``: H'[j] = sum_i alpha[i, r + j] h_i + beta[j] * y[j or 0]  -> (N, s, w)
(HC broadcasts the single output ``y`` of width d to every stream; FC writes fraction j to fraction j.)

Static variants (SHC/SFC) pass ``W=None``: the coefficients are the static matrices for every token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["coefficients", "conn_pre", "conn_post", "conn_pre_naive", "conn_post_naive"]


def coefficients(H: torch.Tensor, static_alpha: torch.Tensor, static_beta: torch.Tensor,
                 W: torch.Tensor | None, norm_w: torch.Tensor | None, s_alpha: torch.Tensor | None,
                 s_beta: torch.Tensor | None, use_tanh: bool = True, eps: float = 1e-5
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha (N, s, r+s) or (s, r+s) when static, beta (N, s) or (s,))."""
    if W is None:
        return static_alpha, static_beta
    w = H.shape[-1]
    Hn = F.layer_norm(H, (w,), norm_w, None, eps)
    P = Hn @ W
    if use_tanh:
        P = torch.tanh(P)
    k = static_alpha.shape[-1]
    alpha = static_alpha + s_alpha * P[..., :k]
    beta = static_beta + s_beta * P[..., k]
    return alpha, beta


def _mix(coef: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """out[..., j, :] = sum_i coef[..., i, j] * H[..., i, :] (coef per token (N, s, k) or shared (s, k)).

    Per-token coefficients: one batched matmul (on CPU ~2x faster than a broadcast loop over streams).
    Shared (static) coefficients: one GEMM over all tokens with the stream axis contracted."""
    if coef.dim() == 2:
        return torch.einsum("ij,niw->njw", coef, H)
    return coef.transpose(-1, -2) @ H


def conn_pre_naive(H: torch.Tensor, static_alpha: torch.Tensor, static_beta: torch.Tensor, W: torch.Tensor | None,
             norm_w: torch.Tensor | None, s_alpha: torch.Tensor | None, s_beta: torch.Tensor | None,
             r: int, use_tanh: bool = True, eps: float = 1e-5
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fused "pre": per-stream norm, dynamic coefficients, read mix.

    Returns ``x (N, r, w)``, ``mix (N, s, s)`` (or ``(s, s)`` static) and ``beta (N, s)`` (or ``(s,)``).
    """
    alpha, beta = coefficients(H, static_alpha, static_beta, W, norm_w, s_alpha, s_beta, use_tanh, eps)
    x = _mix(alpha[..., :r], H)
    return x, alpha[..., r:], beta


def conn_post_naive(H: torch.Tensor, y: torch.Tensor, mix: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Fused "post": stream mixing + write-back + merge. ``y`` is (N, 1, w) (HC) or (N, s, w) (FC)."""
    return _mix(mix, H) + beta[..., None] * y


# ---------------------------------------------------------------------------------------------------------
# The same ops with hand-written backward passes (what the Triton kernels implement too). On CPU this avoids
# autograd's per-token clones in batched-matmul backward and keeps only H, the row statistics and the small
# coefficient tensors for the backward. ``conn_pre_naive`` / ``conn_post_naive`` above are the ground truth.
# ---------------------------------------------------------------------------------------------------------

class _PreDyn(torch.autograd.Function):
    """Dynamic ``pre`` with the LayerNorm folded into the projection (the normalised streams are never
    materialised): ``P = rstd * (H @ W' - mu * colsum(W'))`` with ``W' = diag(g) W``; the backward uses the same
    identities, so H is read a few times instead of being rewritten as mean-centred / normalised copies."""

    @staticmethod
    def forward(ctx, H, SA, SB, W, g, sa, sb, r: int, use_tanh: bool, eps: float):
        w = H.shape[-1]
        Wg = W * g[:, None] if g is not None else W
        # one GEMM gives H W' and the row means (extra column 1/w); one fused pass gives sum h^2
        HWm = H @ torch.cat([Wg, Wg.new_full((w, 1), 1.0 / w)], dim=1)
        mu = HWm[..., -1:]
        var = torch.linalg.vector_norm(H, dim=-1, keepdim=True).square_().div_(w).sub_(mu * mu).clamp_(min=0.0)
        rstd = torch.rsqrt(var + eps)
        P = rstd * (HWm[..., :-1] - mu * Wg.sum(0))
        T = torch.tanh(P) if use_tanh else P
        k = SA.shape[-1]
        alpha = SA + sa * T[..., :k]
        beta = SB + sb * T[..., k]
        x = torch.bmm(alpha[..., :r].transpose(1, 2).contiguous(), H)
        ctx.save_for_backward(H, mu, rstd, P, T, alpha, W, g if g is not None else torch.empty(0), sa, sb)
        ctx.cfg = (r, use_tanh, g is not None)
        return x, alpha[..., r:], beta

    @staticmethod
    def backward(ctx, dx, dmix, dbeta):
        H, mu, rstd, P, T, alpha, W, g, sa, sb = ctx.saved_tensors
        r, use_tanh, has_g = ctx.cfg
        k = alpha.shape[-1]
        w = H.shape[-1]
        dx = dx.contiguous()
        da_read = torch.einsum("niw,njw->nij", H, dx)
        dmix = dmix if dmix is not None else torch.zeros_like(alpha[..., r:])
        dbeta = dbeta if dbeta is not None else torch.zeros_like(alpha[..., 0])
        dH = torch.bmm(alpha[..., :r].contiguous(), dx)
        dalpha = torch.cat([da_read, dmix], dim=-1)
        dSA = dalpha.sum(0)
        dSB = dbeta.sum(0)
        dsa = (dalpha * T[..., :k]).sum().reshape(sa.shape)
        dsb = (dbeta * T[..., k]).sum().reshape(sb.shape)
        dT = torch.cat([sa * dalpha, (sb * dbeta)[..., None]], dim=-1)
        dP = dT * (1 - T * T) if use_tanh else dT
        Wg = W * g[:, None] if has_g else W
        rdP = rstd * dP
        # xhat^T dP without xhat: H^T (rstd dP) - 1 (sum mu rstd dP)
        dXW = H.reshape(-1, w).t() @ rdP.reshape(-1, k + 1) - (mu * rdP).sum((0, 1))[None, :]
        dW = dXW * g[:, None] if has_g else dXW
        dg = (W * dXW).sum(1) if has_g else None
        # LayerNorm backward with dhn = dP Wg^T: mean_w(dhn) = dP . mean_w(Wg); mean_w(dhn xhat) = (dP . P) / w
        m1 = dP @ Wg.mean(0)[:, None]
        m2 = (dP * P).sum(-1, keepdim=True) / w
        c = rstd * rstd * m2
        t = (dP @ Wg.t()).mul_(rstd).add_(c * mu - rstd * m1)
        dH.add_(t.addcmul_(c, H, value=-1.0))
        return dH, dSA, dSB, dW, dg, dsa, dsb, None, None, None


class _Post(torch.autograd.Function):
    @staticmethod
    def forward(ctx, H, y, mix, beta):
        ctx.save_for_backward(H, y, mix, beta)
        return torch.bmm(mix.transpose(1, 2).contiguous(), H).add_(beta[..., None] * y)

    @staticmethod
    def backward(ctx, d):
        H, y, mix, beta = ctx.saved_tensors
        d = d.contiguous()
        dH = torch.bmm(mix.contiguous(), d)
        dmix = torch.einsum("niw,njw->nij", H, d)
        if y.shape[1] == 1:   # HC: the output is broadcast to every stream
            dbeta = torch.einsum("nw,njw->nj", y[:, 0], d)
            dy = torch.bmm(beta[:, None, :], d)
        else:                 # FC: output fraction j goes to fraction j
            dbeta = (y * d).sum(-1)
            dy = beta[..., None] * d
        return dH, dy, dmix, dbeta


def conn_pre(H: torch.Tensor, static_alpha: torch.Tensor, static_beta: torch.Tensor, W: torch.Tensor | None,
             norm_w: torch.Tensor | None, s_alpha: torch.Tensor | None, s_beta: torch.Tensor | None,
             r: int, use_tanh: bool = True, eps: float = 1e-5):
    """Same result as :func:`conn_pre_naive`, with a hand-written backward for the dynamic case."""
    if W is None:
        x = torch.einsum("ir,niw->nrw", static_alpha[:, :r], H)
        return x, static_alpha[:, r:], static_beta
    return _PreDyn.apply(H.contiguous(), static_alpha, static_beta, W, norm_w, s_alpha, s_beta, r, use_tanh, eps)


def conn_post(H: torch.Tensor, y: torch.Tensor, mix: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Same result as :func:`conn_post_naive`, with a hand-written backward for per-token coefficients."""
    if mix.dim() == 2:
        return torch.einsum("ij,niw->njw", mix, H) + beta[:, None] * y
    return _Post.apply(H.contiguous(), y.contiguous(), mix, beta)
