"""The age map is the exact contribution of the tiled one-hot code to a conv (zero padding and all);
the reference epilogue against nn.InstanceNorm2d; the Triton kernel against the reference, forward
and backward (x, map, per-channel and per-sample affine, skip) under TRITON_INTERPRET=1 at tiny
shapes; a whole G with impl=triton against impl=torch; the impl dispatch."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cgan_aging.kernels import age_map, cond_in_act_reference, select_impl
from cgan_aging.model import tile
from reprokit.config import ConfigError
from reprokit.kernels import interpreter_enabled, triton_available


@pytest.mark.parametrize("k, pad", [(3, 1), (7, 3)])
def test_age_map_is_exact(k, pad):
    torch.manual_seed(0)
    C, K, S = 4, 5, 9
    conv = nn.Conv2d(C + K, 6, k, 1, pad, bias=False)
    h, y = torch.randn(3, C, S, S), torch.tensor([0, 3, 4])
    literal = conv(torch.cat([h, tile(y, K, S)], 1))
    split = F.conv2d(h, conv.weight[:, :C], padding=pad) + age_map(conv.weight, C, K, S, S, pad)[y]
    assert torch.allclose(literal, split, atol=1e-5)
    m = age_map(conv.weight, C, K, S, S, pad)
    assert not torch.allclose(m[:, :, 0, 0], m[:, :, S // 2, S // 2])      # the border differs (zero padding)


def test_reference_matches_instance_norm():
    torch.manual_seed(0)
    x, s = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    ref = nn.InstanceNorm2d(3, affine=True)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-0.5, 0.5)
    y = cond_in_act_reference(x, None, None, ref.weight, ref.bias, relu=True, skip=s)
    assert torch.allclose(y, F.relu(ref(x)) + s, atol=1e-6)
    per_sample = cond_in_act_reference(x, None, None, ref.weight[None].expand(2, 3), ref.bias[None].expand(2, 3), True)
    assert torch.allclose(per_sample, F.relu(ref(x)), atol=1e-6)


needs_interp = pytest.mark.skipif(not (triton_available() and interpreter_enabled()),
                                  reason="needs triton with TRITON_INTERPRET=1 (set in conftest.py)")


@needs_interp
@pytest.mark.parametrize("relu, skip, use_map, per_sample", [(True, False, True, False), (False, True, True, False),
                                                             (True, True, False, False), (True, False, True, True),
                                                             (False, False, False, True)])
def test_triton_matches_reference(relu, skip, use_map, per_sample):
    from cgan_aging.kernels.cond_in_triton import cond_in_act_triton

    torch.manual_seed(1)
    B, C, H, W, K = 3, 2, 5, 7, 4                                  # L = 35: a masked tail in the row loop
    x = torch.randn(B, C, H, W, requires_grad=True)
    s = torch.randn(B, C, H, W, requires_grad=True)
    amap = torch.randn(K, C, H, W, requires_grad=True)
    g = torch.tensor([3, 0, 3])
    shape = (B, C) if per_sample else (C,)
    w = (torch.rand(shape) + 0.5).requires_grad_(True)
    b = (torch.rand(shape) - 0.5).requires_grad_(True)
    args = (amap if use_map else None, g if use_map else None, w, b, relu, s if skip else None)
    y_ref = cond_in_act_reference(x, *args)
    y = cond_in_act_triton(x, *args)
    assert torch.allclose(y, y_ref, atol=1e-5)
    gy = torch.randn_like(y)
    ins = [x, w, b] + ([amap] if use_map else []) + ([s] if skip else [])
    for a, r in zip(torch.autograd.grad(y, ins, gy), torch.autograd.grad(y_ref, ins, gy)):
        assert torch.allclose(a, r, atol=1e-4), (a - r).abs().max()


@needs_interp
@pytest.mark.parametrize("cin", [False, True])
def test_generator_with_triton_matches_torch(cin):
    from cgan_aging.config import Cfg
    from cgan_aging.model import Generator
    from reprokit.config import load_config

    cfgs = [load_config(Cfg, None, ["model.hidden=2", "model.depth=1", "model.d_depth=2", "model.image_size=8",
                                    "model.num_groups=3", f"model.age_cin={cin}", f"model.impl={i}"])
            for i in ("torch", "triton")]
    torch.manual_seed(0)
    g_ref, g_tri = Generator(cfgs[0]), Generator(cfgs[1])
    g_tri.load_state_dict(g_ref.state_dict())
    if cin:
        for m in (g_ref, g_tri):
            torch.manual_seed(3)
            for p in m.parameters():
                if p.dim() == 2:
                    p.data.normal_()
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 2])
    a, b = g_ref(x, y), g_tri(x, y)
    assert torch.allclose(a, b, atol=1e-5)
    a.sum().backward()
    b.sum().backward()
    for (n, p), q in zip(g_ref.named_parameters(), g_tri.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-4), n


def test_dispatch(monkeypatch):
    assert select_impl("auto", "cpu") == "torch" and select_impl("torch", "cpu") == "torch"
    if triton_available() and interpreter_enabled():
        assert select_impl("triton", "cpu") == "triton"
    monkeypatch.setattr("reprokit.kernels.interpreter_enabled", lambda: False)
    if triton_available():
        with pytest.raises(ConfigError, match="model.impl=triton"):
            select_impl("triton", "cpu")
