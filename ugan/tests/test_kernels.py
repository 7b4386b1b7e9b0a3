"""The IN + affine + ReLU (+ residual) reference against torch.nn.InstanceNorm2d, the Triton kernel
against the reference (forward, backward, running statistics; TRITON_INTERPRET=1 at tiny shapes),
and the ``model.impl`` dispatch."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from reprokit.config import ConfigError
from reprokit.kernels import interpreter_enabled, triton_available
from ugan.kernels import in_affine_act_reference as in_affine_act
from ugan.kernels import select_impl
from ugan.model import INAct


@pytest.mark.parametrize("relu, skip", [(True, False), (False, True), (True, True)])
def test_reference_matches_instance_norm_forward_backward(relu, skip):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 6, 6, requires_grad=True)
    s = torch.randn(3, 5, 6, 6, requires_grad=True)
    ref = nn.InstanceNorm2d(5, affine=True, track_running_stats=True)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-0.5, 0.5)
    # model.eval_norm=running: eval reads the running statistics, as nn.InstanceNorm2d(track_running_stats=True)
    ours = INAct(5, track=True, relu=relu, impl="torch", eval_stats="running")
    ours.load_state_dict(ref.state_dict())
    y_ref = ref(x)
    y_ref = F.relu(y_ref) if relu else y_ref
    y_ref = y_ref + s if skip else y_ref
    y = ours(x, skip=s if skip else None)
    assert torch.allclose(y, y_ref, atol=1e-6)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.allclose(getattr(ours, name).float(), getattr(ref, name).float(), atol=1e-7), name
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, s, ours.weight, ours.bias], g, allow_unused=True)
    grads_ref = torch.autograd.grad(y_ref, [x, s, ref.weight, ref.bias], g, allow_unused=True)
    for a, b in zip(grads, grads_ref):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-5)
    # eval mode normalises with the running statistics
    ours.eval()
    ref.eval()
    y2 = ours(x)
    y2_ref = F.relu(ref(x)) if relu else ref(x)
    assert torch.allclose(y2, y2_ref, atol=1e-6)
    # the default, eval_norm=instance: eval normalises each image with its own statistics (train-mode output)
    inst = INAct(5, track=True, relu=relu, impl="torch")
    inst.load_state_dict(ours.state_dict())
    inst.eval()
    y3 = inst(x, skip=s if skip else None)
    assert torch.allclose(y3, y, atol=1e-6) and not torch.allclose(y3[:, :, :2], (y2 + s if skip else y2)[:, :, :2])


def test_without_running_stats_eval_uses_instance_statistics():
    x = torch.randn(2, 4, 5, 5)
    y = in_affine_act(x, torch.ones(4), torch.zeros(4), None, None, training=False, relu=False)
    assert torch.allclose(y.mean((2, 3)), torch.zeros(2, 4), atol=1e-5)


needs_interp = pytest.mark.skipif(not (triton_available() and interpreter_enabled()),
                                  reason="needs triton with TRITON_INTERPRET=1 (set in conftest.py)")


@needs_interp
@pytest.mark.parametrize("relu, skip, training, track", [(True, False, True, True), (False, True, True, True),
                                                         (True, True, False, True), (True, False, False, False),
                                                         (False, False, True, False)])
def test_triton_matches_reference(relu, skip, training, track):
    from ugan.kernels.in_act_triton import in_affine_act_triton

    torch.manual_seed(1)
    x = torch.randn(2, 3, 5, 7, requires_grad=True)          # L = 35: a masked tail in the row loop
    s = torch.randn(2, 3, 5, 7, requires_grad=True)
    w = torch.rand(3, requires_grad=True)
    b = (torch.rand(3) - 0.5).requires_grad_(True)
    rm = [torch.randn(3) if track else None for _ in range(2)]
    rv = [torch.rand(3) + 0.5 if track else None for _ in range(2)]
    if track:
        rm[1], rv[1] = rm[0].clone(), rv[0].clone()
    y_ref = in_affine_act(x, w, b, rm[0], rv[0], training, 0.1, 1e-5, relu, s if skip else None)
    y = in_affine_act_triton(x, w, b, rm[1], rv[1], training, 0.1, 1e-5, relu, s if skip else None)
    assert torch.allclose(y, y_ref, atol=1e-5)
    if track:
        assert torch.allclose(rm[0], rm[1], atol=1e-6) and torch.allclose(rv[0], rv[1], atol=1e-5)
    g = torch.randn_like(y)
    ins = [x, w, b] + ([s] if skip else [])
    for a, r in zip(torch.autograd.grad(y, ins, g), torch.autograd.grad(y_ref, ins, g)):
        assert torch.allclose(a, r, atol=1e-4), (a - r).abs().max()


@needs_interp
def test_generator_with_triton_matches_torch():
    from reprokit.config import load_config
    from ugan.config import Cfg
    from ugan.model import Generator

    cfgs = [load_config(Cfg, None, ["model.hidden=4", "model.depth=1", "model.d_depth=2", "model.image_size=8",
                                    "model.num_domains=3", f"model.impl={i}"]) for i in ("torch", "triton")]
    torch.manual_seed(0)
    g_ref = Generator(cfgs[0])
    g_tri = Generator(cfgs[1])
    g_tri.load_state_dict(g_ref.state_dict())
    x, c = torch.randn(2, 3, 8, 8), torch.eye(3)[[0, 2]]
    a, b = g_ref(x, c), g_tri(x, c)
    assert torch.allclose(a, b, atol=1e-5)
    a.sum().backward()
    b.sum().backward()
    for (n, p), q in zip(g_ref.named_parameters(), g_tri.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-3), n


def test_dispatch(monkeypatch):
    assert select_impl("auto", "cpu") == "torch" and select_impl("torch", "cpu") == "torch"
    if triton_available() and interpreter_enabled():
        assert select_impl("triton", "cpu") == "triton"            # explicit request + interpreter
    monkeypatch.setattr("reprokit.kernels.interpreter_enabled", lambda: False)
    if triton_available():
        with pytest.raises(ConfigError, match="model.impl=triton"):
            select_impl("triton", "cpu")
    with pytest.raises(ValueError):
        select_impl("cuda-magic", "cpu")
