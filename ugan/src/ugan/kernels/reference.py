"""PyTorch reference of the fused InstanceNorm + affine + ReLU (+ residual add) of G.

    y = act(gamma * (x - mu) / sqrt(var + eps) + beta) (+ skip)

with (mu, var) the per-(sample, channel) statistics over H x W in training mode (biased variance for
the normalisation; the running estimates use the *unbiased* variance and ``momentum``, exactly as
``nn.InstanceNorm2d(track_running_stats=True)``: running statistics are the batch mean of the per-instance
statistics), and the running estimates in eval mode when ``track_running_stats``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def in_affine_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor | None,
                  running_var: torch.Tensor | None, training: bool, momentum: float = 0.1, eps: float = 1e-5,
                  relu: bool = True, skip: torch.Tensor | None = None) -> torch.Tensor:
    """x (B, C, H, W); weight/bias (C,); running_* (C,) updated in place when training."""
    use_running = running_mean is not None and not training
    y = F.instance_norm(x, running_mean, running_var, weight, bias, use_input_stats=not use_running,
                        momentum=momentum, eps=eps)
    if relu:
        y = F.relu(y)
    if skip is not None:
        y = y + skip
    return y
