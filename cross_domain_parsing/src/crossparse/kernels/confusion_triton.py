"""Triton: bilinear upsample (align_corners=False) + argmax + confusion-matrix accumulation (notes §5).

One program per BLOCK output pixels of one image: interpolate the C logits of each pixel from the 4
low-resolution neighbours, take the argmax (first maximum, as torch.argmax), read the label and
atomically add 1 to ``m[t * C + p]`` for pixels whose label is not the ignore index. The full-resolution
logits are never written. Labels outside [0, C) (other than the ignore index) are the caller's to reject.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .upsample_ce_triton import _coords


@triton.jit
def _conf(L, T, M, C, H, W, h, w, scale_h, scale_w, ignore, n_blocks, BLOCK: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    n = pid // n_blocks
    b = pid % n_blocks
    offs = b * BLOCK + tl.arange(0, BLOCK)
    pm = offs < H * W
    y0, y1, x0, x1, ly, lx = _coords(offs, H, W, h, w, scale_h, scale_w)
    cs = tl.arange(0, BLOCK_C)
    cm = cs < C
    base = L + n.to(tl.int64) * C * h * w + cs[None, :] * (h * w)
    m2 = pm[:, None] & cm[None, :]
    lyc, lxc = ly[:, None], lx[:, None]
    z = ((1 - lyc) * ((1 - lxc) * tl.load(base + (y0 * w + x0)[:, None], mask=m2, other=0.0).to(tl.float32)
                      + lxc * tl.load(base + (y0 * w + x1)[:, None], mask=m2, other=0.0).to(tl.float32))
         + lyc * ((1 - lxc) * tl.load(base + (y1 * w + x0)[:, None], mask=m2, other=0.0).to(tl.float32)
                  + lxc * tl.load(base + (y1 * w + x1)[:, None], mask=m2, other=0.0).to(tl.float32)))
    z = tl.where(cm[None, :], z, float("-inf"))
    mx = tl.max(z, 1)
    pred = tl.min(tl.where(z == mx[:, None], cs[None, :], BLOCK_C), 1)              # first maximum
    t = tl.load(T + n.to(tl.int64) * H * W + offs, mask=pm, other=ignore).to(tl.int32)
    valid = pm & (t != ignore)
    tl.atomic_add(M + tl.where(valid, t * C + pred, 0), tl.where(valid, 1, 0).to(tl.int64), mask=valid)


def upsample_argmax_confusion_triton(logits: torch.Tensor, target: torch.Tensor, num_classes: int,
                                     ignore_index: int = 255) -> torch.Tensor:
    logits = logits.float().contiguous()
    target = target.contiguous()
    N, C, h, w = logits.shape
    if num_classes != C:
        raise ValueError(f"logits have {C} classes, expected {num_classes}")
    H, W = target.shape[-2:]
    BLOCK = 128
    nb = triton.cdiv(H * W, BLOCK)
    m = torch.zeros(C * C, device=logits.device, dtype=torch.int64)
    _conf[(N * nb,)](logits, target, m, C, H, W, h, w, h / H, w / W, ignore_index, nb, BLOCK=BLOCK,
                     BLOCK_C=triton.next_power_of_2(C))
    return m.reshape(C, C)
