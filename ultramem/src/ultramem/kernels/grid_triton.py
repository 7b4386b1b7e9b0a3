"""Triton kernel (b): the m x m Tucker grid scoring + top-m (semantics: ``reference.grid_topm_reference``).

Stage 2 of TDQKR (paper Sec. 4.2, notes Sec. 4.2 item 2) and of PKM. One program per (token, head): the
per-rank scores of the m kept rows a[r, i] and columns b[s, j] are loaded once, and the grid summed over
the h MCS cores, G[i, j] = sum_{r, s} (sum_c C_c[r, s]) a[r, i] b[s, j] (or a[0, i] + b[0, j] for PKM's
additive keys), is built as r^2 rank-1 updates of a (BLOCK_M, BLOCK_M) register tile (BLOCK_M = next
power of two >= m); the m x m x h grid is never written to memory. The top-m are extracted by m rounds of
max + masking (ties: the lowest flat index i m + j). Only the m flat indices are written; the winners'
per-core scores (m h r^2 multiply-adds, against the grid's m^2 r) are recomputed in PyTorch by a
differentiable gather (``kernels.grid_topm``), so the kernel needs no backward: the gradients w.r.t. the
stage-1 scores and the cores are those of the reference at the selected slots.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _grid_topm_kernel(a_ptr, b_ptr, c_ptr, out_ptr, H, R, MM,
                      M: tl.constexpr, BLOCK_M: tl.constexpr, ADDITIVE: tl.constexpr):
    pid = tl.program_id(0)                      # token * H + head
    h = pid % H
    i = tl.arange(0, BLOCK_M)
    imask = i < MM
    base = pid * R * MM                         # a, b: (N H, R, m) contiguous
    grid = tl.zeros((BLOCK_M, BLOCK_M), dtype=tl.float32)
    if ADDITIVE:
        a = tl.load(a_ptr + base + i, mask=imask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + base + i, mask=imask, other=0.0).to(tl.float32)
        grid += a[:, None] + b[None, :]
    else:
        for r in range(0, R):
            a = tl.load(a_ptr + base + r * MM + i, mask=imask, other=0.0).to(tl.float32)
            for s in range(0, R):
                c = tl.load(c_ptr + (h * R + r) * R + s).to(tl.float32)          # core summed over MCS cores
                b = tl.load(b_ptr + base + s * MM + i, mask=imask, other=0.0).to(tl.float32)
                grid += c * a[:, None] * b[None, :]
    flat = i[:, None] * MM + i[None, :]                                          # (BLOCK_M, BLOCK_M)
    valid = imask[:, None] & imask[None, :]
    grid = tl.where(valid, grid, float("-inf"))
    big = BLOCK_M * BLOCK_M
    for k in range(0, M):
        best = tl.max(tl.max(grid, axis=1), axis=0)
        idx = tl.min(tl.min(tl.where(grid == best, flat, big), axis=1), axis=0)
        tl.store(out_ptr + pid * M + k, idx.to(tl.int64))
        grid = tl.where(flat == idx, float("-inf"), grid)


def grid_topm_indices_triton(sr: torch.Tensor, scol: torch.Tensor, core: torch.Tensor | None, m: int
                             ) -> torch.Tensor:
    """sr / scol (N, H, r, m), core (H, h, r, r) or None (PKM) -> flat ids (N, H, m) of the top-m of the
    core-summed sub-grid, in descending score order."""
    Nt, H, R, mm = sr.shape
    out = torch.empty(Nt, H, m, dtype=torch.int64, device=sr.device)
    if Nt == 0:
        return out
    additive = core is None
    csum = (sr.new_zeros(1) if additive else core.detach().sum(1).float().contiguous())   # (H, r, r)
    _grid_topm_kernel[(Nt * H,)](sr.detach().contiguous(), scol.detach().contiguous(), csum, out, H, R, mm,
                                 M=m, BLOCK_M=triton.next_power_of_2(mm), ADDITIVE=additive)
    return out
