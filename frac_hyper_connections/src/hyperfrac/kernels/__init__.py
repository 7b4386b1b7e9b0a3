"""Dispatch of the connection ops: ``impl`` = auto | triton | torch (reprokit.kernels.resolve_impl).

Asking for ``triton`` where it cannot run raises ``KernelUnavailable`` — never a silent fallback.
"""

from __future__ import annotations

import torch
from reprokit.kernels import resolve_impl

from . import reference

__all__ = ["conn_pre", "conn_post", "reference"]


def conn_pre(H: torch.Tensor, static_alpha, static_beta, W, norm_w, s_alpha, s_beta, r: int,
             use_tanh: bool = True, eps: float = 1e-5, impl: str = "torch"):
    if resolve_impl(impl, H.device) == "triton":
        from .conn_triton import conn_pre_triton
        return conn_pre_triton(H, static_alpha, static_beta, W, norm_w, s_alpha, s_beta, r, use_tanh, eps)
    return reference.conn_pre(H, static_alpha, static_beta, W, norm_w, s_alpha, s_beta, r, use_tanh, eps)


def conn_post(H: torch.Tensor, y: torch.Tensor, mix: torch.Tensor, beta: torch.Tensor, impl: str = "torch"):
    if resolve_impl(impl, H.device) == "triton":
        from .conn_triton import conn_post_triton
        return conn_post_triton(H, y, mix, beta)
    return reference.conn_post(H, y, mix, beta)
