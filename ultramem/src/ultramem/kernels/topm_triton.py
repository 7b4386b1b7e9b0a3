"""Triton kernel (a): key scoring + rank combination + top-m selection (semantics: ``reference.key_topm_reference``).

One program per (token, head): the n coarse scores c[j] = sum_r w[h, r] <q[token, h], K[h, r, j]> are built
tile by tile over the key width (BLOCK_N = next power of two >= n, so the n scores live in registers and
the T x H x r x n score tensor is never written), then the top-m are extracted by m rounds of argmax +
masking. Only the m indices are written; the differentiable scores of the winners are recomputed by a
small gather in PyTorch (``key_topm``), so the kernel needs no backward. Ties pick the lowest index.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _key_topm_kernel(q_ptr, k_ptr, w_ptr, out_ptr, H, N, DK, R,
                     M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)                      # token * H + head
    h = pid % H
    j = tl.arange(0, BLOCK_N)
    jmask = j < N
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for r in range(0, R):
        wr = tl.load(w_ptr + h * R + r).to(tl.float32)
        part = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for d0 in range(0, DK, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            dmask = d < DK
            q = tl.load(q_ptr + pid * DK + d, mask=dmask, other=0.0).to(tl.float32)          # (BLOCK_D,)
            kk = tl.load(k_ptr + ((h * R + r) * N + j[:, None]) * DK + d[None, :],
                         mask=jmask[:, None] & dmask[None, :], other=0.0).to(tl.float32)   # (BLOCK_N, BLOCK_D)
            part += tl.sum(kk * q[None, :], axis=1)
        acc += wr * part
    acc = tl.where(jmask, acc, float("-inf"))
    for i in range(0, M):
        best = tl.max(acc, axis=0)
        idx = tl.min(tl.where(acc == best, j, BLOCK_N), axis=0)
        tl.store(out_ptr + pid * M + i, idx.to(tl.int64))
        acc = tl.where(j == idx, float("-inf"), acc)


def key_topm_indices_triton(q: torch.Tensor, keys: torch.Tensor, w: torch.Tensor, m: int) -> torch.Tensor:
    """q (N, H, D), keys (H, r, n, D), w (H, r) -> indices (N, H, m) of the top-m coarse scores."""
    Nt, H, D = q.shape
    _, R, n, _ = keys.shape
    out = torch.empty(Nt, H, m, dtype=torch.int64, device=q.device)
    if Nt == 0:
        return out
    _key_topm_kernel[(Nt * H,)](q.detach().contiguous(), keys.detach().contiguous(), w.detach().contiguous(), out,
                                H, n, D, R, M=m, BLOCK_N=triton.next_power_of_2(n),
                                BLOCK_D=min(64, triton.next_power_of_2(D)))
    return out
