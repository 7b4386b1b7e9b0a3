"""Support for papers' Triton kernels: detection and the explicit ``impl`` switch.

Every kernel in this repo has a PyTorch reference and is dispatched by ``impl``:

* ``"torch"``  -> the reference, always available;
* ``"triton"`` -> the Triton kernel; raises :class:`KernelUnavailable` where it cannot run
  (no triton, or tensors not on CUDA while ``TRITON_INTERPRET`` is unset) - never a silent fallback;
* ``"auto"``   -> Triton for CUDA tensors, the reference otherwise. The interpreter never makes
  ``auto`` pick Triton: it is a testing device (NumPy emulation, orders of magnitude slower), used
  only where ``impl="triton"`` is asked for explicitly.

The interpreter (``TRITON_INTERPRET=1``) emulates kernels with NumPy on the CPU; it must be set
before ``triton`` is imported, which is why tests set it in a conftest or a subprocess.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Literal

import torch

__all__ = ["KernelUnavailable", "triton_available", "interpreter_enabled", "resolve_impl", "IMPLS"]

Impl = Literal["auto", "triton", "torch"]
IMPLS = ("auto", "triton", "torch")


class KernelUnavailable(RuntimeError):
    """The Triton implementation was requested where it cannot run."""


def triton_available() -> bool:
    """True when the ``triton`` package can be imported."""
    return importlib.util.find_spec("triton") is not None


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_impl(impl: str, device: torch.device | str | None = None) -> Literal["triton", "torch"]:
    """Resolve ``impl`` for tensors on ``device``; see the module docstring for the rules."""
    if impl not in IMPLS:
        raise ValueError(f"unknown kernel impl {impl!r}; valid: {', '.join(IMPLS)}")
    if impl == "torch":
        return "torch"
    dev = torch.device(device) if device is not None else torch.device("cpu")
    can_run = triton_available() and (dev.type == "cuda" or interpreter_enabled())
    if impl == "triton":
        if not triton_available():
            raise KernelUnavailable("impl='triton' but the triton package is not installed "
                                    "(it is Linux-only); use impl='torch'")
        if not can_run:
            raise KernelUnavailable(f"impl='triton' needs CUDA tensors (got device {dev}) or "
                                    "TRITON_INTERPRET=1 set before triton is imported; use impl='torch'")
        return "triton"
    return "triton" if (triton_available() and dev.type == "cuda") else "torch"
