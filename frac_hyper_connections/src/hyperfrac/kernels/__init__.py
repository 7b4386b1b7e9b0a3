"""Dispatch of the connection ops: ``impl`` = auto | triton | torch (reprokit.kernels.resolve_impl).

Asking for ``triton`` where it cannot run raises ``KernelUnavailable`` — never a silent fallback.
"""

from __future__ import annotations

import torch

from reprokit.kernels import resolve_impl

from . import reference

__all__ = ["conn_pre", "conn_post", "reference", "set_compiled"]

_COMPILED: dict[str, object] = {}
_USE_COMPILED = False


def set_compiled(flag: bool) -> None:
    """CPU option: run the torch path as ``torch.compile`` of the reference ops (Inductor fuses the element-wise
    chain, the CPU analogue of the Triton fusion). Off by default (compiling costs ~1 min per shape)."""
    global _USE_COMPILED
    _USE_COMPILED = bool(flag)


def _compiled(name: str):
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(getattr(reference, name), dynamic=False)
    return _COMPILED[name]


def conn_pre(H: torch.Tensor, static_alpha, static_beta, W, norm_w, s_alpha, s_beta, r: int,
             use_tanh: bool = True, eps: float = 1e-5, impl: str = "torch"):
    if resolve_impl(impl, H.device) == "triton":
        from .conn_triton import conn_pre_triton
        return conn_pre_triton(H, static_alpha, static_beta, W, norm_w, s_alpha, s_beta, r, use_tanh, eps)
    if _USE_COMPILED:
        return _compiled("conn_pre_naive")(H, static_alpha, static_beta, W, norm_w, s_alpha, s_beta, r, use_tanh, eps)
    return reference.conn_pre(H, static_alpha, static_beta, W, norm_w, s_alpha, s_beta, r, use_tanh, eps)


def conn_post(H: torch.Tensor, y: torch.Tensor, mix: torch.Tensor, beta: torch.Tensor, impl: str = "torch"):
    if resolve_impl(impl, H.device) == "triton":
        from .conn_triton import conn_post_triton
        return conn_post_triton(H, y, mix, beta)
    if _USE_COMPILED:
        return _compiled("conn_post_naive")(H, y, mix, beta)
    return reference.conn_post(H, y, mix, beta)
