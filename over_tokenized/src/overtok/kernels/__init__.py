"""Dispatch of the Over-Encoding kernel on ``model.impl`` (``reprokit.kernels.resolve_impl``).

``torch``: the reference (always); ``triton``: the fused gather-GEMM (CUDA, or the interpreter when
``TRITON_INTERPRET=1``); ``auto``: Triton for CUDA tensors, the reference otherwise.
"""

from __future__ import annotations

import torch

from reprokit.kernels import resolve_impl

from .reference import oe_embed_reference


def oe_embed(ids: torch.Tensor, hist: torch.Tensor, wte: torch.Tensor, table: torch.Tensor, proj: torch.Tensor,
             spec_tensors: dict[str, torch.Tensor], scale: float, unigram: bool = True, sparse: bool = True,
             impl: str = "auto") -> torch.Tensor:
    """(B, T) ids -> (B, T, D) over-encoded embeddings; see ``reference.oe_embed_reference``."""
    if resolve_impl(impl, table.device) == "triton":
        from .oe_triton import oe_embed_triton

        return oe_embed_triton(ids, hist, wte, table, proj, spec_tensors, scale, unigram, sparse)
    return oe_embed_reference(ids, hist, wte, table, proj, spec_tensors, scale, unigram, sparse)


__all__ = ["oe_embed", "oe_embed_reference"]
