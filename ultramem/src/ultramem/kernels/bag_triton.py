"""Triton kernels of the weighted gather with IVE pooling (semantics: ``reference.weighted_bag_reference``).

Forward: the slots are sorted by bag (stable ``torch.sort``) into CSR segments; one program per
(bag, BLOCK_D column tile) walks its segment, loads each row, scales it by its weight and accumulates in
fp32 (no atomics, deterministic).

Backward:
  * d weights: one program per (slot, column tile) computes its share of <dout[bag], table[row]> and the
    tiles are summed (a (K, n_tiles) buffer, so no atomics);
  * d table: sort-and-segment. Slots are sorted by row; one program per (distinct row, column tile) sums
    weights[k] dout[bags[k]] over its segment and writes that row once. Rows never touched stay zero.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _segment_kernel(src_ptr, idx_ptr, w_ptr, order_ptr, seg_ptr, seg_id_ptr, out_ptr, D,
                    BLOCK_D: tl.constexpr):
    """out[seg_id[s]] = sum_{p in segment s} w[order[p]] * src[idx[order[p]]] (a (BLOCK_D,) column tile)."""
    s = tl.program_id(0)
    pd = tl.program_id(1)
    cols = pd * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    start = tl.load(seg_ptr + s)
    end = tl.load(seg_ptr + s + 1)
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for p in range(start, end):
        k = tl.load(order_ptr + p)
        r = tl.load(idx_ptr + k)
        w = tl.load(w_ptr + k).to(tl.float32)
        acc += w * tl.load(src_ptr + r * D + cols, mask=cmask, other=0.0).to(tl.float32)
    dst = tl.load(seg_id_ptr + s)
    tl.store(out_ptr + dst * D + cols, acc.to(out_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def _dweight_kernel(table_ptr, g_ptr, rows_ptr, bags_ptr, part_ptr, D, NT, BLOCK_D: tl.constexpr):
    k = tl.program_id(0)
    pd = tl.program_id(1)
    cols = pd * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    r = tl.load(rows_ptr + k)
    b = tl.load(bags_ptr + k)
    a = tl.load(table_ptr + r * D + cols, mask=cmask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + b * D + cols, mask=cmask, other=0.0).to(tl.float32)
    tl.store(part_ptr + k * NT + pd, tl.sum(a * g, axis=0))


def _segments(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stable sort of ``keys`` -> (order, segment starts (S+1,), key of each segment (S,))."""
    sk, order = torch.sort(keys, stable=True)
    uniq, counts = torch.unique_consecutive(sk, return_counts=True)
    seg = torch.zeros(uniq.numel() + 1, dtype=torch.int64, device=keys.device)
    seg[1:] = counts.cumsum(0)
    return order.contiguous(), seg, uniq.contiguous()


def _segment_sum(src: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, keys: torch.Tensor,
                 n_out: int) -> torch.Tensor:
    """out[key] = sum over the slots k with keys[k] = key of w[k] src[idx[k]]."""
    D = src.shape[1]
    out = torch.zeros(n_out, D, dtype=src.dtype, device=src.device)
    if keys.numel() == 0:
        return out
    order, seg, uniq = _segments(keys)
    BLOCK_D = min(128, triton.next_power_of_2(D))
    grid = (uniq.numel(), triton.cdiv(D, BLOCK_D))
    _segment_kernel[grid](src.contiguous(), idx.contiguous(), w.contiguous(), order, seg, uniq, out, D,
                          BLOCK_D=BLOCK_D)
    return out


class _WeightedBag(torch.autograd.Function):
    @staticmethod
    def forward(ctx, table, rows, weights, bags, n_bags):
        rows, bags = rows.long().contiguous(), bags.long().contiguous()
        w = weights.contiguous()
        ctx.save_for_backward(table, rows, w, bags)
        return _segment_sum(table.contiguous(), rows, w, bags, n_bags)      # (n_bags, D)

    @staticmethod
    def backward(ctx, g):
        table, rows, w, bags = ctx.saved_tensors
        g = g.contiguous()
        d_table = d_w = None
        if ctx.needs_input_grad[0]:
            d_table = _segment_sum(g, bags, w, rows, table.shape[0])        # rows sorted, one write per row
        if ctx.needs_input_grad[2]:
            D = table.shape[1]
            BLOCK_D = min(128, triton.next_power_of_2(D))
            nt = triton.cdiv(D, BLOCK_D)
            part = torch.zeros(rows.numel(), nt, dtype=torch.float32, device=g.device)
            if rows.numel():
                _dweight_kernel[(rows.numel(), nt)](table.contiguous(), g, rows, bags, part, D, nt,
                                                    BLOCK_D=BLOCK_D)
            d_w = part.sum(1).to(w.dtype)
        return d_table, None, d_w, None, None


def weighted_bag_triton(table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor, bags: torch.Tensor,
                        n_bags: int) -> torch.Tensor:
    return _WeightedBag.apply(table, rows, weights, bags, n_bags)
