"""PyTorch references (the semantics) of the two fused kernels (notes §5).

* ``upsample_ce(logits, target, ignore_index)``: bilinear upsampling (align_corners=False) of
  low-resolution logits (N, C, h, w) to the target's (H, W), log-softmax over C and the NLL of the
  target class summed over valid pixels; returns (loss_sum, n_valid). ``upsample_ce_chunked`` is the
  same value computed a band of output rows at a time with activation checkpointing, so neither the
  forward nor the backward holds the (N, C, H, W) tensors: the memory-saving torch path.
* ``upsample_argmax_confusion(logits, target, num_classes, ignore_index)``: upsample, argmax, and the
  (C, C) int64 confusion matrix ``m[t, p]`` over pixels whose target is not ``ignore_index``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def upsample_ce(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255):
    up = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)   # (N, C, H, W)
    loss = F.cross_entropy(up, target.long(), ignore_index=ignore_index, reduction="sum")
    return loss, (target != ignore_index).sum()


def source_index(out_size: int, in_size: int, device=None):
    """align_corners=False source coordinates: (i0, i1, lambda) per output index (PyTorch's rule)."""
    scale = in_size / out_size
    src = ((torch.arange(out_size, device=device, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=in_size - 1)
    i1 = (i0 + 1).clamp(max=in_size - 1)
    return i0, i1, src - i0


def _band_loss(logits, target, y0, y1, wy, x0, x1, wx, ignore_index):
    rows = logits[:, :, y0] * (1 - wy)[:, None] + logits[:, :, y1] * wy[:, None]          # (N, C, r, w)
    up = rows[..., x0] * (1 - wx) + rows[..., x1] * wx                                       # (N, C, r, W)
    return F.cross_entropy(up, target.long(), ignore_index=ignore_index, reduction="sum")


def upsample_ce_chunked(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255, rows: int = 16):
    H, W = target.shape[-2:]
    y0, y1, wy = source_index(H, logits.shape[-2], logits.device)
    x0, x1, wx = source_index(W, logits.shape[-1], logits.device)
    total = logits.new_zeros(())
    for s in range(0, H, rows):
        sl = slice(s, min(H, s + rows))
        total = total + checkpoint(_band_loss, logits, target[:, sl], y0[sl], y1[sl], wy[sl], x0, x1, wx,
                                   ignore_index, use_reentrant=False)
    return total, (target != ignore_index).sum()


@torch.no_grad()
def upsample_argmax_confusion(logits: torch.Tensor, target: torch.Tensor, num_classes: int,
                              ignore_index: int = 255) -> torch.Tensor:
    pred = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False).argmax(1)
    t = target.reshape(-1).long()
    keep = t != ignore_index
    k = num_classes
    return torch.bincount(t[keep] * k + pred.reshape(-1)[keep], minlength=k * k).reshape(k, k)
