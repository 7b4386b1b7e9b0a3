"""Triton: bilinear upsample (align_corners=False) + log-softmax + NLL with ignore index (notes §5).

One program handles BLOCK output pixels of one image and all C classes (C <= BLOCK_C). Forward: for
every output pixel, interpolate the C logits from the 4 low-resolution neighbours, take a stable
log-softmax and the target's NLL; the program writes its partial loss sum and valid count (reduced in
PyTorch). The per-pixel log-sum-exp is saved (N*H*W floats) for the backward.

Backward: recompute the interpolated logits, form g * (softmax - onehot) for valid pixels and
scatter it with the bilinear weights into the *low-resolution* gradient (N, C, h, w) by atomic adds:
the full-resolution logits / probabilities / gradient are never materialised. (The notes suggest a
deterministic gather formulation; atomics are simpler and make float summation order vary on GPU.)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _coords(offs, H, W, h, w, scale_h, scale_w):
    oy = offs // W
    ox = offs % W
    sy = tl.maximum((oy.to(tl.float32) + 0.5) * scale_h - 0.5, 0.0)
    sx = tl.maximum((ox.to(tl.float32) + 0.5) * scale_w - 0.5, 0.0)
    y0 = tl.minimum(sy.to(tl.int32), h - 1)
    x0 = tl.minimum(sx.to(tl.int32), w - 1)
    ly = sy - y0.to(tl.float32)
    lx = sx - x0.to(tl.float32)
    y1 = tl.minimum(y0 + 1, h - 1)
    x1 = tl.minimum(x0 + 1, w - 1)
    return y0, y1, x0, x1, ly, lx


@triton.jit
def _fwd(L, T, LSE, PART_LOSS, PART_CNT, C, H, W, h, w, scale_h, scale_w, ignore, n_blocks,
         BLOCK: tl.constexpr, BLOCK_C: tl.constexpr):
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
    v00 = tl.load(base + (y0 * w + x0)[:, None], mask=m2, other=0.0).to(tl.float32)
    v01 = tl.load(base + (y0 * w + x1)[:, None], mask=m2, other=0.0).to(tl.float32)
    v10 = tl.load(base + (y1 * w + x0)[:, None], mask=m2, other=0.0).to(tl.float32)
    v11 = tl.load(base + (y1 * w + x1)[:, None], mask=m2, other=0.0).to(tl.float32)
    lyc, lxc = ly[:, None], lx[:, None]
    z = (1 - lyc) * ((1 - lxc) * v00 + lxc * v01) + lyc * ((1 - lxc) * v10 + lxc * v11)     # (BLOCK, BLOCK_C)
    z = tl.where(cm[None, :], z, float("-inf"))
    mx = tl.max(z, 1)
    lse = mx + tl.log(tl.sum(tl.exp(z - mx[:, None]), 1))
    t = tl.load(T + n.to(tl.int64) * H * W + offs, mask=pm, other=ignore).to(tl.int32)
    valid = pm & (t != ignore)
    zt = tl.sum(tl.where(cs[None, :] == t[:, None], z, 0.0), 1)
    loss = tl.where(valid, lse - zt, 0.0)
    tl.store(LSE + n.to(tl.int64) * H * W + offs, lse, mask=pm)
    tl.store(PART_LOSS + pid, tl.sum(loss, 0))
    tl.store(PART_CNT + pid, tl.sum(valid.to(tl.int32), 0))


@triton.jit
def _bwd(L, T, LSE, G, DL, C, H, W, h, w, scale_h, scale_w, ignore, n_blocks,
         BLOCK: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    n = pid // n_blocks
    b = pid % n_blocks
    offs = b * BLOCK + tl.arange(0, BLOCK)
    pm = offs < H * W
    y0, y1, x0, x1, ly, lx = _coords(offs, H, W, h, w, scale_h, scale_w)
    cs = tl.arange(0, BLOCK_C)
    cm = cs < C
    off_n = n.to(tl.int64) * C * h * w
    base = L + off_n + cs[None, :] * (h * w)
    m2 = pm[:, None] & cm[None, :]
    i00, i01 = (y0 * w + x0)[:, None], (y0 * w + x1)[:, None]
    i10, i11 = (y1 * w + x0)[:, None], (y1 * w + x1)[:, None]
    lyc, lxc = ly[:, None], lx[:, None]
    z = ((1 - lyc) * ((1 - lxc) * tl.load(base + i00, mask=m2, other=0.0).to(tl.float32)
                      + lxc * tl.load(base + i01, mask=m2, other=0.0).to(tl.float32))
         + lyc * ((1 - lxc) * tl.load(base + i10, mask=m2, other=0.0).to(tl.float32)
                  + lxc * tl.load(base + i11, mask=m2, other=0.0).to(tl.float32)))
    lse = tl.load(LSE + n.to(tl.int64) * H * W + offs, mask=pm, other=0.0)
    t = tl.load(T + n.to(tl.int64) * H * W + offs, mask=pm, other=ignore).to(tl.int32)
    valid = pm & (t != ignore)
    g = tl.load(G)
    d = tl.exp(z - lse[:, None]) - (cs[None, :] == t[:, None]).to(tl.float32)
    d = tl.where(valid[:, None] & cm[None, :], d * g, 0.0)
    out = DL + off_n + cs[None, :] * (h * w)
    tl.atomic_add(out + i00, d * (1 - lyc) * (1 - lxc), mask=m2)
    tl.atomic_add(out + i01, d * (1 - lyc) * lxc, mask=m2)
    tl.atomic_add(out + i10, d * lyc * (1 - lxc), mask=m2)
    tl.atomic_add(out + i11, d * lyc * lxc, mask=m2)


BLOCK = 128


class _UpsampleCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, ignore_index):
        logits = logits.contiguous()
        target = target.contiguous()
        N, C, h, w = logits.shape
        H, W = target.shape[-2:]
        nb = triton.cdiv(H * W, BLOCK)
        lse = torch.empty(N, H, W, device=logits.device, dtype=torch.float32)
        part_loss = torch.empty(N * nb, device=logits.device, dtype=torch.float32)
        part_cnt = torch.empty(N * nb, device=logits.device, dtype=torch.int32)
        bc = triton.next_power_of_2(C)
        _fwd[(N * nb,)](logits, target, lse, part_loss, part_cnt, C, H, W, h, w, h / H, w / W, ignore_index, nb,
                        BLOCK=BLOCK, BLOCK_C=bc)
        ctx.save_for_backward(logits, target, lse)
        ctx.ignore = ignore_index
        return part_loss.sum().to(logits.dtype), part_cnt.sum().long()

    @staticmethod
    def backward(ctx, g_loss, _g_cnt):
        logits, target, lse = ctx.saved_tensors
        N, C, h, w = logits.shape
        H, W = target.shape[-2:]
        nb = triton.cdiv(H * W, BLOCK)
        dl = torch.zeros(N, C, h, w, device=logits.device, dtype=torch.float32)
        g = g_loss.reshape(1).float().contiguous()
        _bwd[(N * nb,)](logits, target, lse, g, dl, C, H, W, h, w, h / H, w / W, ctx.ignore, nb,
                        BLOCK=BLOCK, BLOCK_C=triton.next_power_of_2(C))
        return dl.to(logits.dtype), None, None


def upsample_ce_triton(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255):
    return _UpsampleCE.apply(logits, target, ignore_index)
