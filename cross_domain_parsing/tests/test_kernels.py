"""Both fused kernels against their PyTorch references (forward and backward) under TRITON_INTERPRET=1
at tiny shapes, the chunked torch variant, and the ``impl`` dispatch."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from crossparse.kernels import select_impl, upsample_argmax_confusion, upsample_ce, upsample_ce_reference
from reprokit.config import ConfigError
from reprokit.kernels import interpreter_enabled, triton_available

needs_interp = pytest.mark.skipif(not (triton_available() and interpreter_enabled()),
                                  reason="needs triton with TRITON_INTERPRET=1 (set in conftest.py)")
SHAPES = [((2, 5, 4, 3), (9, 7)), ((1, 12, 5, 3), (17, 9)), ((2, 3, 6, 6), (6, 6)), ((1, 4, 7, 5), (5, 4))]


def _inputs(ls, hw, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*ls, generator=g, dtype=torch.float64).float().requires_grad_(True)
    t = torch.randint(0, ls[1], (ls[0], *hw), generator=g)
    t[0, 0, : hw[1] // 2] = 255
    return x, t


def test_reference_is_interpolate_then_cross_entropy():
    x, t = _inputs(*SHAPES[0])
    s, n = upsample_ce_reference(x, t)
    up = F.interpolate(x, size=t.shape[-2:], mode="bilinear", align_corners=False)
    assert torch.allclose(s / n, F.cross_entropy(up, t, ignore_index=255))


@pytest.mark.parametrize("ls, hw", SHAPES)
def test_chunked_torch_matches_reference(ls, hw):
    x, t = _inputs(ls, hw)
    a, na = upsample_ce(x, t, impl="torch")
    b, nb = upsample_ce(x, t, impl="torch", chunk_rows=3)
    assert torch.allclose(a, b, rtol=1e-5) and na == nb
    ga, = torch.autograd.grad(a, x)
    gb, = torch.autograd.grad(b, x)
    assert torch.allclose(ga, gb, atol=1e-5)


@needs_interp
@pytest.mark.parametrize("ls, hw", SHAPES)
def test_upsample_ce_triton_forward_backward(ls, hw):
    x, t = _inputs(ls, hw, seed=1)
    a, na = upsample_ce(x, t, impl="torch")
    b, nb = upsample_ce(x, t, impl="triton")
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-4) and int(na) == int(nb)
    g = torch.tensor(0.7)
    ga, = torch.autograd.grad(a, x, g)
    gb, = torch.autograd.grad(b, x, g)
    assert gb.shape == x.shape and torch.allclose(ga, gb, atol=1e-5)


@needs_interp
@pytest.mark.parametrize("ls, hw", SHAPES)
def test_confusion_triton_matches_reference(ls, hw):
    x, t = _inputs(ls, hw, seed=2)
    ref = upsample_argmax_confusion(x.detach(), t, ls[1], impl="torch")
    tri = upsample_argmax_confusion(x.detach(), t, ls[1], impl="triton")
    assert torch.equal(ref, tri) and int(ref.sum()) == int((t != 255).sum())


def test_dispatch():
    assert select_impl("torch", "cpu") == "torch" and select_impl("auto", "cpu") == "torch"
    with pytest.raises(ValueError):
        select_impl("fast", "cpu")


def test_triton_without_cuda_or_interpreter_is_a_clear_error():
    code = ("from crossparse.kernels import select_impl\n"
            "try:\n    select_impl('triton', 'cpu')\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "ConfigError" in r.stdout and "model.impl=triton" in r.stdout
    assert ConfigError
