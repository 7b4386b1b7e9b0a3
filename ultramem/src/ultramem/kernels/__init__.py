"""Dispatch of the memory-layer kernels on ``model.impl`` (``reprokit.kernels.resolve_impl``).

``torch``: PyTorch (the references; the weighted bag through ``F.embedding_bag``, tested equal to its
reference); ``triton``: the fused kernels (CUDA, or the interpreter when
``TRITON_INTERPRET=1``); ``auto``: Triton for CUDA tensors, the reference otherwise.

Kernels: (c) ``weighted_bag`` — the weighted gather with IVE group pooling (embedding-bag), forward and
backward (sort-and-segment row gradients); (a) ``key_topm`` — key scoring + rank combination + top-m
selection (stage 1 of PKM and TDQKR); (b) ``grid_topm`` — the m x m (Tucker) grid scoring summed over the
MCS cores + top-m (stage 2). All three are used by ``memory.py``.
"""

from __future__ import annotations

import torch

from reprokit.kernels import resolve_impl

from .reference import (
    grid_scores_reference,
    grid_topm_reference,
    key_topm_reference,
    weighted_bag_reference,
    weighted_bag_torch,
)


def weighted_bag(table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor, bags: torch.Tensor,
                 n_bags: int, impl: str = "auto") -> torch.Tensor:
    """out[b] = sum_{k: bags[k] = b} weights[k] table[rows[k]] -> (n_bags, D); see the reference."""
    if resolve_impl(impl, table.device) == "triton":
        from .bag_triton import weighted_bag_triton

        return weighted_bag_triton(table, rows, weights, bags, n_bags)
    return weighted_bag_torch(table, rows, weights, bags, n_bags)


def key_topm(q: torch.Tensor, keys: torch.Tensor, w: torch.Tensor, m: int, impl: str = "auto"
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices (N, H, m), per-rank winner scores (N, H, r, m)); see ``reference.key_topm_reference``.
    The Triton path selects in the kernel and recomputes the winners' scores by a differentiable gather."""
    if resolve_impl(impl, q.device) == "triton":
        from .topm_triton import key_topm_indices_triton

        idx = key_topm_indices_triton(q, keys, w, m)                          # (N, H, m)
        H, r, n, D = keys.shape
        kh = keys[None].expand(q.shape[0], -1, -1, -1, -1)                   # (N, H, r, n, D) view
        sel = kh.gather(3, idx[:, :, None, :, None].expand(-1, -1, r, -1, D))  # (N, H, r, m, D)
        return idx, torch.einsum("bhd,bhrmd->bhrm", q, sel)
    return key_topm_reference(q, keys, w, m)


def grid_topm(sr: torch.Tensor, scol: torch.Tensor, core: torch.Tensor | None, m: int, impl: str = "auto"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat sub-grid ids (N, H, m), winners' per-core scores (N, H, h, m)); see
    ``reference.grid_topm_reference``. The Triton path selects in the kernel and recomputes the winners'
    per-core scores by a differentiable gather (gradients w.r.t. sr, scol and core as the reference's)."""
    if resolve_impl(impl, sr.device) == "triton":
        from .grid_triton import grid_topm_indices_triton

        flat = grid_topm_indices_triton(sr, scol, core, m)                    # (N, H, m)
        mm = sr.shape[-1]
        R = sr.shape[2]
        ia = (flat // mm)[:, :, None].expand(-1, -1, R, -1)                   # (N, H, r, m)
        ib = (flat % mm)[:, :, None].expand(-1, -1, R, -1)
        a, b = sr.gather(-1, ia), scol.gather(-1, ib)                          # (N, H, r, m) winners' scores
        if core is None:
            return flat, (a[:, :, 0] + b[:, :, 0])[:, :, None]                 # (N, H, 1, m)
        return flat, torch.einsum("bhrk,hcrs,bhsk->bhck", a, core, b)          # (N, H, h, m)
    return grid_topm_reference(sr, scol, core, m)


__all__ = ["grid_scores_reference", "grid_topm", "grid_topm_reference", "key_topm", "key_topm_reference",
           "weighted_bag", "weighted_bag_reference", "weighted_bag_torch"]
