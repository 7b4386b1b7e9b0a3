"""PyTorch reference of G's fused block epilogue: age map + InstanceNorm + affine + act (+ skip).

    y = act( w_n * IN(x + M[g_n]) + b_n ) (+ skip)

x (B, C, H, W) is a conv output *without* its age channels; M (K, C, H, W) is the exact
contribution of the tiled one-hot age code to that conv (``age_map``: zero padding included, so it
is not constant near the borders); g (B,) the target group of each sample; w, b either (C,) (plain
affine) or (B, C) (per-sample, e.g. an age-conditional affine). IN uses per-instance statistics
(biased variance), with no running statistics: training and evaluation normalise alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def age_map(weight: torch.Tensor, in_channels: int, K: int, H: int, W: int, padding: int) -> torch.Tensor:
    """Exact contribution of a tiled one-hot code of K groups to a stride-1 conv whose input is
    [h (in_channels), onehot tiles (K)]: (K, C_out, H, W) = conv(tile(e_k), weight[:, in_channels:])."""
    tiles = torch.eye(K, dtype=weight.dtype, device=weight.device)[:, :, None, None].expand(K, K, H, W)
    return F.conv2d(tiles, weight[:, in_channels:], padding=padding)


def cond_in_act(x: torch.Tensor, amap: torch.Tensor | None, group: torch.Tensor | None, weight: torch.Tensor,
                bias: torch.Tensor, relu: bool = True, skip: torch.Tensor | None = None,
                eps: float = 1e-5) -> torch.Tensor:
    if amap is not None:
        x = x + amap[group]                                                  # (B, C, H, W)
    y = F.instance_norm(x, eps=eps)
    if weight.dim() == 1:
        y = y * weight[None, :, None, None] + bias[None, :, None, None]
    else:
        y = y * weight[:, :, None, None] + bias[:, :, None, None]
    if relu:
        y = F.relu(y)
    if skip is not None:
        y = y + skip
    return y
