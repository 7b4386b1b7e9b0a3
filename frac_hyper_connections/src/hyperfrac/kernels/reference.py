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

__all__ = ["coefficients", "conn_pre", "conn_post"]


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
    """out[..., j, :] = sum_i coef[..., i, j] * H[..., i, :]; a loop over the (few) streams, not tokens."""
    s = H.shape[-2]
    out = coef[..., 0, :, None] * H[..., 0:1, :]
    for i in range(1, s):
        out = out + coef[..., i, :, None] * H[..., i:i + 1, :]
    return out


def conn_pre(H: torch.Tensor, static_alpha: torch.Tensor, static_beta: torch.Tensor, W: torch.Tensor | None,
             norm_w: torch.Tensor | None, s_alpha: torch.Tensor | None, s_beta: torch.Tensor | None,
             r: int, use_tanh: bool = True, eps: float = 1e-5
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fused "pre": per-stream norm, dynamic coefficients, read mix.

    Returns ``x (N, r, w)``, ``mix (N, s, s)`` (or ``(s, s)`` static) and ``beta (N, s)`` (or ``(s,)``).
    """
    alpha, beta = coefficients(H, static_alpha, static_beta, W, norm_w, s_alpha, s_beta, use_tanh, eps)
    x = _mix(alpha[..., :r], H)
    return x, alpha[..., r:], beta


def conn_post(H: torch.Tensor, y: torch.Tensor, mix: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Fused "post": stream mixing + write-back + merge. ``y`` is (N, 1, w) (HC) or (N, s, w) (FC)."""
    return _mix(mix, H) + beta[..., None] * y
