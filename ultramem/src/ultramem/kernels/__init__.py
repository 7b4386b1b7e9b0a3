"""Dispatch of the memory-layer kernels on ``model.impl`` (``reprokit.kernels.resolve_impl``).

``torch``: the reference (always); ``triton``: the fused kernels (CUDA, or the interpreter when
``TRITON_INTERPRET=1``); ``auto``: Triton for CUDA tensors, the reference otherwise.

Kernels: (c) ``weighted_bag`` — the weighted gather with IVE group pooling (embedding-bag), forward and
backward (sort-and-segment row gradients); (a) ``key_topm`` — key scoring + rank combination + top-m
selection (stage 1 of PKM and TDQKR). Both are used by ``memory.py``. Not done: (b) the m x m Tucker grid
scoring + top-m (PyTorch einsums in ``memory.select_from_stage1``).
"""

from __future__ import annotations

import torch

from reprokit.kernels import resolve_impl

from .reference import key_topm_reference, weighted_bag_reference


def weighted_bag(table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor, bags: torch.Tensor,
                 n_bags: int, impl: str = "auto") -> torch.Tensor:
    """out[b] = sum_{k: bags[k] = b} weights[k] table[rows[k]] -> (n_bags, D); see the reference."""
    if resolve_impl(impl, table.device) == "triton":
        from .bag_triton import weighted_bag_triton

        return weighted_bag_triton(table, rows, weights, bags, n_bags)
    return weighted_bag_reference(table, rows, weights, bags, n_bags)


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


__all__ = ["key_topm", "key_topm_reference", "weighted_bag", "weighted_bag_reference"]
