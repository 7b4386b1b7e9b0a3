"""Kernel dispatch on ``model.impl`` (reprokit.kernels.resolve_impl).

``torch``: the references (``reference.py``; with ``chunk_rows > 0`` the memory-saving chunked
upsample+CE); ``triton``: the fused kernels (CUDA, or the interpreter when ``TRITON_INTERPRET=1`` is
set before triton is imported; anywhere else a ConfigError, never a silent fallback); ``auto``:
Triton for CUDA tensors, the reference otherwise. The choice is made per call from the tensor's device.
"""

from __future__ import annotations

import torch

from reprokit.config import ConfigError
from reprokit.kernels import KernelUnavailable, resolve_impl

from .reference import upsample_argmax_confusion as upsample_argmax_confusion_reference
from .reference import upsample_ce as upsample_ce_reference
from .reference import upsample_ce_chunked

__all__ = ["upsample_ce", "upsample_argmax_confusion", "upsample_ce_reference", "upsample_ce_chunked",
           "upsample_argmax_confusion_reference", "select_impl"]


def select_impl(impl: str, device: torch.device | str | None = None) -> str:
    try:
        return resolve_impl(impl, device)
    except KernelUnavailable as e:
        raise ConfigError(f"model.impl={impl}: {e}") from e


def upsample_ce(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255, impl: str = "torch",
                chunk_rows: int = 0):
    """(loss_sum, n_valid) of bilinear-upsampled logits against ``target`` (N, H, W)."""
    if select_impl(impl, logits.device) == "triton":
        from .upsample_ce_triton import upsample_ce_triton

        return upsample_ce_triton(logits, target, ignore_index)
    if chunk_rows > 0:
        return upsample_ce_chunked(logits, target, ignore_index, chunk_rows)
    return upsample_ce_reference(logits, target, ignore_index)


def upsample_argmax_confusion(logits: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255,
                              impl: str = "torch") -> torch.Tensor:
    """(C, C) int64 confusion matrix m[t, p] of the upsampled argmax predictions."""
    if select_impl(impl, logits.device) == "triton":
        from .confusion_triton import upsample_argmax_confusion_triton

        return upsample_argmax_confusion_triton(logits, target, num_classes, ignore_index)
    return upsample_argmax_confusion_reference(logits, target, num_classes, ignore_index)
