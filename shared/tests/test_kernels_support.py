import pytest
import torch

from reprokit.kernels import KernelUnavailable, resolve_impl, triton_available


def test_torch_always(monkeypatch):
    assert resolve_impl("torch", "cpu") == "torch"


def test_unknown_impl():
    with pytest.raises(ValueError, match="unknown kernel impl"):
        resolve_impl("cuda")


def test_triton_on_cpu_without_interpreter_is_an_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(KernelUnavailable):
        resolve_impl("triton", torch.device("cpu"))
    if not torch.cuda.is_available():
        assert resolve_impl("auto", "cpu") == "torch"


def test_interpreter_enables_triton(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    if triton_available():
        assert resolve_impl("triton", "cpu") == "triton"
        # the interpreter is only for explicit parity tests: auto stays on the fast reference path
        assert resolve_impl("auto", "cpu") == "torch"
    else:
        with pytest.raises(KernelUnavailable, match="not installed"):
            resolve_impl("triton", "cpu")


def test_missing_triton_package(monkeypatch):
    import reprokit.kernels as k

    monkeypatch.setattr(k, "triton_available", lambda: False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(KernelUnavailable, match="not installed"):
        k.resolve_impl("triton", "cpu")
    assert k.resolve_impl("auto", "cpu") == "torch"
