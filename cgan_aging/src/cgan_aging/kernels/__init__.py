"""Kernel dispatch on ``model.impl`` (reprokit.kernels.resolve_impl).

``torch``: the reference (always); ``triton``: the fused age-map + IN + affine + ReLU (+ skip) kernel
(CUDA, or the interpreter when ``TRITON_INTERPRET=1`` is set before triton is imported); ``auto``:
Triton for CUDA tensors, the reference otherwise. The choice is made per call from the tensor's device.
"""

from __future__ import annotations

import torch

from reprokit.config import ConfigError
from reprokit.kernels import KernelUnavailable, resolve_impl, triton_available

from .reference import age_map
from .reference import cond_in_act as cond_in_act_reference

__all__ = ["age_map", "cond_in_act", "cond_in_act_reference", "check_impl", "select_impl"]


def check_impl(impl: str) -> str:
    if impl not in ("auto", "triton", "torch"):
        raise ValueError(f"unknown kernel impl {impl!r}; valid: auto, triton, torch")
    if impl == "triton" and not triton_available():
        raise ConfigError("model.impl=triton but the triton package is not installed; use model.impl=torch")
    return impl


def select_impl(impl: str, device: torch.device | str | None = None) -> str:
    try:
        return resolve_impl(impl, device)
    except KernelUnavailable as e:
        raise ConfigError(f"model.impl={impl}: {e}") from e


def cond_in_act(x, amap, group, weight, bias, relu=True, skip=None, impl: str = "torch"):
    if impl != "torch" and select_impl(impl, x.device) == "triton":
        from .cond_in_triton import cond_in_act_triton

        return cond_in_act_triton(x, amap, group, weight, bias, relu, skip)
    return cond_in_act_reference(x, amap, group, weight, bias, relu, skip)
