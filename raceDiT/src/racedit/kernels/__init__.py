"""MoE FFN hot path, dispatched on ``impl`` = auto | triton | torch (reprokit.kernels.resolve_impl):
asking for triton where it cannot run raises KernelUnavailable, never a silent fallback."""

from __future__ import annotations

import torch

from reprokit.kernels import resolve_impl

from .reference import masked_loop_moe, moe_ffn_naive, moe_ffn_torch

__all__ = ["moe_ffn", "moe_ffn_torch", "moe_ffn_naive", "masked_loop_moe", "resolve_impl"]


def moe_ffn(x: torch.Tensor, tok: torch.Tensor, counts: torch.Tensor, gate: torch.Tensor, W1, b1, W2, b2,
            impl: str = "auto") -> torch.Tensor:
    """y[t] = sum over pairs (t, e, g) of g * expert_e(x[t]); pairs sorted by expert, counts per expert."""
    if resolve_impl(impl, x.device) == "triton":
        from .moe_triton import moe_ffn_triton

        return moe_ffn_triton(x, tok, counts, gate, W1, b1, W2, b2)
    return moe_ffn_torch(x, tok, counts, gate, W1, b1, W2, b2)
