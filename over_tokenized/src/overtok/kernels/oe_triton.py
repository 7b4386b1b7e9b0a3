"""Triton kernels of the Over-Encoding embedding (semantics: ``reference.oe_embed_reference``; notes Sec. 4.1).

Forward, one gather-GEMM per [BLOCK_T tokens x BLOCK_N output columns] tile:
  1. the n-gram rows of the S tables are hashed in registers from the token window (``_hash_rows``:
     modular sum with the precomputed powers V^j mod m_s, the window cut by the history length h);
  2. the K = S w reduction streams over the slices; each BLOCK_K chunk lies inside one slice, so its A
     operand is gathered row by row from that slice's table and multiplied with the matching rows of the
     stacked projection W_stack (S w, D);
  3. the epilogue adds the 1-gram row wte[x_t] and multiplies by 1 / (1 + k(n-1)).
  No (T, S w) gathered tensor is ever written.

Backward:
  * dW_stack = A^T g, A recomputed by the same gather inside the kernel (``_oe_dproj_kernel``), one
    program per (K, N) tile looping over the tokens: deterministic, no atomics;
  * the table rows: dA = g W_stack^T (one GEMM), then sort-and-segment: the (row, token slice) pairs are
    sorted by row (stable ``torch.sort``) and ``_segment_sum_kernel`` sums each row's slices in sorted
    order; the result is a coalesced sparse (rows, values) gradient (dense only on request), never a dense
    index_add over all the table's rows;
  * wte (tied with the output head, dense): the same segment sum keyed by the token id.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _hash_rows(ids_ptr, t, tmask, hist, s, orders_ptr, moduli_ptr, offsets_ptr, powers_ptr,
               NMAX: tl.constexpr):
    """Concatenated-table row of table ``s`` for the tokens ``t`` (BLOCK_T,), int64."""
    acc = tl.zeros(t.shape, dtype=tl.int64)
    order = tl.load(orders_ptr + s) + acc        # broadcast to a block (the interpreter wants block masks)
    mod = tl.load(moduli_ptr + s)
    for j in tl.static_range(NMAX):
        use = tmask & (hist >= j) & (order > j)
        x = tl.load(ids_ptr + t - j, mask=use, other=0).to(tl.int64)   # x_{t-j}, 0 outside the window
        p = tl.load(powers_ptr + s * NMAX + j)
        acc = (acc + (x % mod) * p % mod) % mod
    return tl.load(offsets_ptr + s) + acc


@triton.jit
def _oe_fwd_kernel(ids_ptr, hist_ptr, wte_ptr, table_ptr, proj_ptr, out_ptr,
                   orders_ptr, moduli_ptr, offsets_ptr, powers_ptr,
                   N, D, W, scale,
                   S: tl.constexpr, NMAX: tl.constexpr, UNIGRAM: tl.constexpr,
                   BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   PRECISION: tl.constexpr):
    pid_t = tl.program_id(0)
    pid_n = tl.program_id(1)
    t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    tmask = t < N
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = cols < D
    hist = tl.load(hist_ptr + t, mask=tmask, other=0)
    acc = tl.zeros((BLOCK_T, BLOCK_N), dtype=tl.float32)
    for s in tl.static_range(S):
        rows = _hash_rows(ids_ptr, t, tmask, hist, s, orders_ptr, moduli_ptr, offsets_ptr, powers_ptr, NMAX)
        for k0 in range(0, W, BLOCK_K):
            kc = k0 + tl.arange(0, BLOCK_K)
            kmask = kc < W
            a = tl.load(table_ptr + rows[:, None] * W + kc[None, :], mask=tmask[:, None] & kmask[None, :],
                        other=0.0)                                               # (BLOCK_T, BLOCK_K) gathered
            b = tl.load(proj_ptr + (s * W + kc)[:, None] * D + cols[None, :],
                        mask=kmask[:, None] & nmask[None, :], other=0.0)          # (BLOCK_K, BLOCK_N)
            acc += tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision=PRECISION)
    omask = tmask[:, None] & nmask[None, :]
    if UNIGRAM:
        x0 = tl.load(ids_ptr + t, mask=tmask, other=0).to(tl.int64)
        acc += tl.load(wte_ptr + x0[:, None] * D + cols[None, :], mask=omask, other=0.0).to(tl.float32)
    acc = acc * scale
    tl.store(out_ptr + t[:, None] * D + cols[None, :], acc.to(out_ptr.dtype.element_ty), mask=omask)


@triton.jit
def _oe_dproj_kernel(ids_ptr, hist_ptr, table_ptr, g_ptr, dproj_ptr,
                     orders_ptr, moduli_ptr, offsets_ptr, powers_ptr,
                     N, D, W, NKB,
                     NMAX: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """dW_stack[s w + kc, cols] = sum_t A[t, s, kc] g[t, cols], A re-gathered (no stored activations)."""
    pid_k = tl.program_id(0)
    pid_n = tl.program_id(1)
    s = pid_k // NKB
    kc = (pid_k % NKB) * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = kc < W
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = cols < D
    acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    for t0 in range(0, N, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        tmask = t < N
        hist = tl.load(hist_ptr + t, mask=tmask, other=0)
        rows = _hash_rows(ids_ptr, t, tmask, hist, s, orders_ptr, moduli_ptr, offsets_ptr, powers_ptr, NMAX)
        a = tl.load(table_ptr + rows[:, None] * W + kc[None, :], mask=tmask[:, None] & kmask[None, :],
                    other=0.0).to(tl.float32)                                     # (BLOCK_T, BLOCK_K)
        g = tl.load(g_ptr + t[:, None] * D + cols[None, :], mask=tmask[:, None] & nmask[None, :],
                    other=0.0).to(tl.float32)                                     # (BLOCK_T, BLOCK_N)
        acc += tl.dot(tl.trans(a), g, input_precision=PRECISION)
    tl.store(dproj_ptr + (s * W + kc)[:, None] * D + cols[None, :], acc,
             mask=kmask[:, None] & nmask[None, :])


@triton.jit
def _oe_rows_kernel(ids_ptr, hist_ptr, rows_ptr, orders_ptr, moduli_ptr, offsets_ptr, powers_ptr, N,
                    S: tl.constexpr, NMAX: tl.constexpr, BLOCK_T: tl.constexpr):
    """rows[t, s] for the backward scatter (N x S int64: small next to any activation)."""
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    tmask = t < N
    hist = tl.load(hist_ptr + t, mask=tmask, other=0)
    for s in tl.static_range(S):
        rows = _hash_rows(ids_ptr, t, tmask, hist, s, orders_ptr, moduli_ptr, offsets_ptr, powers_ptr, NMAX)
        tl.store(rows_ptr + t * S + s, rows, mask=tmask)


@triton.jit
def _segment_sum_kernel(src_ptr, perm_ptr, seg_ptr, out_ptr, W, BLOCK_W: tl.constexpr):
    """out[u] = sum_{i in [seg[u], seg[u+1])} src[perm[i]], summed in sorted (deterministic) order."""
    u = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    cmask = cols < W
    start = tl.load(seg_ptr + u)
    end = tl.load(seg_ptr + u + 1)
    acc = tl.zeros((BLOCK_W,), dtype=tl.float32)
    for i in range(start, end):
        p = tl.load(perm_ptr + i)
        acc += tl.load(src_ptr + p * W + cols, mask=cmask, other=0.0).to(tl.float32)
    tl.store(out_ptr + u.to(tl.int64) * W + cols, acc, mask=cmask)


def _pow2(x: int, lo: int = 16, hi: int = 128) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(x), 1))))


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def segment_sum(src: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort-and-segment: (unique keys (U,), per-key sums of the rows of ``src`` (U, W), float32).

    ``src`` (P, W), ``keys`` (P,) int64; deterministic (stable sort, sums in sorted order)."""
    sorted_keys, perm = torch.sort(keys, stable=True)
    uniq, counts = torch.unique_consecutive(sorted_keys, return_counts=True)
    seg = torch.zeros(uniq.numel() + 1, dtype=torch.int64, device=keys.device)
    seg[1:] = torch.cumsum(counts, 0)
    W = src.shape[1]
    out = torch.empty(uniq.numel(), W, dtype=torch.float32, device=src.device)
    if uniq.numel():
        BLOCK_W = _pow2(W, lo=16, hi=256)
        _segment_sum_kernel[(uniq.numel(), triton.cdiv(W, BLOCK_W))](src.contiguous(), perm, seg, out, W,
                                                                     BLOCK_W=BLOCK_W)
    return uniq, out


class OEEmbedFunction(torch.autograd.Function):
    """Autograd wrapper of the fused forward and the sparse backward (see the module docstring)."""

    @staticmethod
    def forward(ctx, ids, hist, wte, table, proj, orders, moduli, offsets, powers, scale, unigram, sparse):
        B, T = ids.shape
        N, D, W = B * T, proj.shape[1], table.shape[1]
        S, NMAX = moduli.numel(), powers.shape[1]
        ids_f = ids.reshape(-1).contiguous().to(torch.int64)
        hist_f = hist.reshape(-1).contiguous().to(torch.int32)
        out = torch.empty(N, D, dtype=table.dtype, device=table.device)
        BLOCK_T, BLOCK_N, BLOCK_K = 32, _pow2(D, hi=64), _pow2(W, hi=64)
        grid = (triton.cdiv(N, BLOCK_T), triton.cdiv(D, BLOCK_N))
        _oe_fwd_kernel[grid](ids_f, hist_f, wte.contiguous(), table.contiguous(), proj.contiguous(), out,
                             orders, moduli, offsets, powers, N, D, W, float(scale),
                             S=S, NMAX=NMAX, UNIGRAM=bool(unigram), BLOCK_T=BLOCK_T, BLOCK_N=BLOCK_N,
                             BLOCK_K=BLOCK_K, PRECISION=_precision(table.dtype))
        ctx.save_for_backward(ids_f, hist_f, table, proj, orders, moduli, offsets, powers)
        ctx.meta = (B, T, float(scale), bool(unigram), bool(sparse), tuple(wte.shape), wte.dtype)
        return out.view(B, T, D)

    @staticmethod
    def backward(ctx, grad_out):
        ids_f, hist_f, table, proj, orders, moduli, offsets, powers = ctx.saved_tensors
        B, T, scale, unigram, sparse, wte_shape, wte_dtype = ctx.meta
        N, D, W = B * T, proj.shape[1], table.shape[1]
        S, NMAX = moduli.numel(), powers.shape[1]
        g = (grad_out.reshape(N, D).to(torch.float32) * scale).contiguous()      # (N, D)
        d_wte = d_table = d_proj = None
        if ctx.needs_input_grad[4]:
            d_proj = torch.empty(S * W, D, dtype=torch.float32, device=g.device)
            BLOCK_T, BLOCK_N, BLOCK_K = 32, _pow2(D, hi=64), _pow2(W, hi=64)
            nkb = triton.cdiv(W, BLOCK_K)
            _oe_dproj_kernel[(S * nkb, triton.cdiv(D, BLOCK_N))](
                ids_f, hist_f, table, g, d_proj, orders, moduli, offsets, powers, N, D, W, nkb,
                NMAX=NMAX, BLOCK_T=BLOCK_T, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, PRECISION=_precision(table.dtype))
            d_proj = d_proj.to(proj.dtype)
        if ctx.needs_input_grad[3]:
            d_slices = (g @ proj.to(torch.float32).t()).view(N * S, W)           # (N S, w): dA per (token, table)
            rows = torch.empty(N, S, dtype=torch.int64, device=g.device)
            _oe_rows_kernel[(triton.cdiv(N, 64),)](ids_f, hist_f, rows, orders, moduli, offsets, powers, N,
                                                   S=S, NMAX=NMAX, BLOCK_T=64)
            uniq, vals = segment_sum(d_slices, rows.view(-1))                     # (U,), (U, w)
            vals = vals.to(table.dtype)
            if sparse:
                d_table = torch.sparse_coo_tensor(uniq[None], vals, table.shape, is_coalesced=True,
                                                  check_invariants=False)
            else:
                d_table = torch.zeros_like(table).index_copy_(0, uniq, vals)     # unique rows: a copy, no sum
        if unigram and ctx.needs_input_grad[2]:
            uniq, vals = segment_sum(g, ids_f)
            d_wte = torch.zeros(wte_shape, dtype=wte_dtype, device=g.device).index_copy_(0, uniq, vals.to(wte_dtype))
        return None, None, d_wte, d_table, d_proj, None, None, None, None, None, None, None


def oe_embed_triton(ids, hist, wte, table, proj, spec_tensors, scale, unigram=True, sparse=True):
    """Same signature and semantics as ``reference.oe_embed_reference``."""
    return OEEmbedFunction.apply(ids, hist, wte, table, proj, spec_tensors["orders"], spec_tensors["moduli"],
                                 spec_tensors["offsets"], spec_tensors["powers"], scale, unigram, sparse)
