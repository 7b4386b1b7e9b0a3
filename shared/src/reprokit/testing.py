"""Test helpers: small synthetic data sets with learnable structure, and dtype-aware tolerances."""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "parabola_record",
    "check_results_rebuilt",
    "check_stopped_reproduction_wall_time",
    "GOLDEN_ENV",
    "unshadow_package",
    "assert_close",
    "check_golden",
    "markov_chain",
    "markov_entropy_rate",
    "synthetic_images",
    "synthetic_tokens",
    "tolerance",
]


def _class_templates(num_classes: int, channels: int, size: int, pattern_seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(10_007 + pattern_seed)
    # each class: a stripe orientation, a spatial frequency and a colour / brightness offset
    angle = (torch.arange(num_classes, dtype=torch.float64) * math.pi / num_classes
             + 0.3 * torch.rand(num_classes, generator=g, dtype=torch.float64))
    freq = 1.5 + (torch.arange(num_classes) % 3).double() + 0.5 * torch.rand(num_classes, generator=g,
                                                                               dtype=torch.float64)
    colour = 0.5 * (2 * torch.rand(num_classes, channels, generator=g, dtype=torch.float64) - 1)
    return {"angle": angle, "freq": freq, "colour": colour}


def synthetic_images(
    n: int,
    channels: int = 1,
    size: int = 16,
    num_classes: int = 4,
    seed: int = 0,
    noise: float = 0.15,
    pattern_seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class is visible: ``(float32 images (n, C, size, size) in [-1, 1], int64 labels)``.

    Class ``c`` is a sinusoidal stripe pattern with a class-specific orientation and frequency and a
    class-specific per-channel offset; each image gets a random phase, a random amplitude in
    [0.4, 0.6] and Gaussian noise. The class templates depend only on ``pattern_seed`` (so a train
    set with ``seed=0`` and a test set with ``seed=1`` share classes); ``seed`` draws labels (balanced,
    shuffled), phases, amplitudes and noise.
    """
    if num_classes < 1 or n < 0:
        raise ValueError("need num_classes >= 1 and n >= 0")
    tpl = _class_templates(num_classes, channels, size, pattern_seed)
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    coords = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    ang, fr = tpl["angle"][labels], tpl["freq"][labels]
    proj = (torch.cos(ang)[:, None, None] * xx + torch.sin(ang)[:, None, None] * yy)  # (n, H, W)
    phase = 2 * math.pi * torch.rand(n, 1, 1, generator=g, dtype=torch.float64)
    amp = 0.4 + 0.2 * torch.rand(n, 1, 1, generator=g, dtype=torch.float64)
    wave = amp * torch.sin(2 * math.pi * fr[:, None, None] * proj + phase)
    img = wave[:, None] + tpl["colour"][labels][:, :, None, None]
    img = img + noise * torch.randn(n, channels, size, size, generator=g, dtype=torch.float64)
    return img.clamp(-1.0, 1.0).float(), labels.long()


def markov_chain(vocab: int, chain_seed: int = 0, branching: int = 3) -> np.ndarray:
    """A random sparse transition matrix ``(vocab, vocab)`` (float64, rows sum to 1): each token has
    ``branching`` likely successors (Dirichlet weights) plus a little uniform mass."""
    rng = np.random.default_rng(20_011 + chain_seed)
    p = np.full((vocab, vocab), 0.02 / vocab)
    k = min(branching, vocab)
    for i in range(vocab):
        succ = rng.choice(vocab, size=k, replace=False)
        p[i, succ] += 0.98 * rng.dirichlet(np.ones(k))
    return p / p.sum(axis=1, keepdims=True)


def markov_entropy_rate(p: np.ndarray) -> float:
    """Entropy rate (nats/token) of the stationary chain with transitions ``p`` -- the best NLL a
    model of :func:`synthetic_tokens` can reach."""
    w, v = np.linalg.eig(p.T)
    pi = np.real(v[:, np.argmin(np.abs(w - 1.0))])
    pi = pi / pi.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.nansum(p * np.log(p), axis=1)
    return float(pi @ h)


def synthetic_tokens(n: int, vocab: int = 64, seed: int = 0, chain_seed: int = 0, branching: int = 3) -> torch.Tensor:
    """A token stream (int64 ``(n,)``) sampled from :func:`markov_chain` ``(vocab, chain_seed)``.

    The chain depends only on ``chain_seed``; ``seed`` draws the start token and the transitions, so
    streams with different seeds are train/validation splits of the same process. The achievable
    NLL is :func:`markov_entropy_rate` (well below ``log(vocab)``).
    """
    p = markov_chain(vocab, chain_seed, branching)
    cdf = np.cumsum(p, axis=1)
    cdf[:, -1] = 1.0
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    out = np.empty(n, dtype=np.int64)
    tok = int(rng.integers(vocab))
    for i in range(n):
        out[i] = tok
        tok = int(np.searchsorted(cdf[tok], u[i], side="right"))
        tok = min(tok, vocab - 1)
    return torch.from_numpy(out)


_TOL: dict[str, tuple[float, float]] = {
    "float64": (1e-7, 1e-9),
    "float32": (1e-5, 1e-6),
    "tf32": (5e-3, 1e-3),
    "float16": (5e-3, 1e-3),
    "bfloat16": (3e-2, 1e-2),
}
_ALIASES = {
    "fp64": "float64", "double": "float64", "f64": "float64",
    "fp32": "float32", "float": "float32", "f32": "float32",
    "fp16": "float16", "half": "float16", "f16": "float16",
    "bf16": "bfloat16",
}


def _dtype_key(dtype: Any) -> str:
    if isinstance(dtype, torch.dtype):
        key = str(dtype).removeprefix("torch.")
    elif isinstance(dtype, np.dtype) or (isinstance(dtype, type) and issubclass(dtype, np.generic)):
        key = np.dtype(dtype).name
    else:
        key = str(dtype).lower().removeprefix("torch.")
    key = _ALIASES.get(key, key)
    if key not in _TOL:
        raise ValueError(f"no tolerance for dtype {dtype!r}; known: {sorted(_TOL)} (+ aliases {sorted(_ALIASES)})")
    return key


def tolerance(dtype: Any) -> tuple[float, float]:
    """``(rtol, atol)`` for comparing a result computed in ``dtype`` against a reference.

    ``dtype``: a torch/NumPy dtype or a name -- float64, float32, tf32 (float32 with TF32 matmuls),
    float16 / fp16, bfloat16 / bf16. Values suit outputs of moderate-size ops (a matmul, a layer)
    compared against a float32/float64 reference.
    """
    return _TOL[_dtype_key(dtype)]


_RANK = {"float64": 0, "float32": 1, "tf32": 2, "float16": 3, "bfloat16": 4}


def assert_close(a: Any, b: Any, dtype: Any = None, msg: str = "") -> None:
    """Assert ``|a - b| <= atol + rtol * |b|`` elementwise, with tolerances from :func:`tolerance`.

    ``a``/``b``: tensors, arrays or numbers (compared in float64 on CPU; shapes must match).
    ``dtype=None`` uses the less precise floating dtype of the two inputs (float64 if neither is a
    floating tensor/array). On failure, raises AssertionError with the max abs/rel error and the
    worst index, prefixed by ``msg``.
    """
    def _key(x: Any) -> str | None:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return _dtype_key(x.dtype)
        if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating):
            return _dtype_key(x.dtype) if x.dtype.name in _TOL else "float64"
        return None

    if dtype is None:
        keys = [k for k in (_key(a), _key(b)) if k is not None]
        key = max(keys, key=_RANK.__getitem__) if keys else "float64"
    else:
        key = _dtype_key(dtype)
    rtol, atol = _TOL[key]
    ta = torch.as_tensor(np.asarray(a.detach().cpu().double() if isinstance(a, torch.Tensor) else a,
                                    dtype=np.float64))
    tb = torch.as_tensor(np.asarray(b.detach().cpu().double() if isinstance(b, torch.Tensor) else b,
                                    dtype=np.float64))
    prefix = f"{msg}: " if msg else ""
    if ta.shape != tb.shape:
        raise AssertionError(f"{prefix}shape mismatch {tuple(ta.shape)} vs {tuple(tb.shape)}")
    nan_a, nan_b = torch.isnan(ta), torch.isnan(tb)
    if not torch.equal(nan_a, nan_b):
        raise AssertionError(f"{prefix}NaN pattern differs")
    diff = (ta - tb).abs().nan_to_num(0.0)
    bound = atol + rtol * tb.abs().nan_to_num(0.0)
    bad = diff > bound
    if bool(bad.any()):
        idx = int(torch.argmax((diff - bound).reshape(-1)))
        rel = diff / tb.abs().clamp_min(1e-300)
        raise AssertionError(
            f"{prefix}{int(bad.sum())}/{bad.numel()} elements differ beyond rtol={rtol}, atol={atol} "
            f"({key}): max abs err {float(diff.max()):.3e}, max rel err {float(rel.max()):.3e}; worst at flat "
            f"index {idx}: {float(ta.reshape(-1)[idx])!r} vs {float(tb.reshape(-1)[idx])!r}"
        )


GOLDEN_ENV = "REPROKIT_UPDATE_GOLDEN"


def check_golden(path: str | Path, values: list[float], rtol: float = 1e-4, atol: float = 1e-6,
                 note: str = "") -> None:
    """Compare a loss sequence with the committed golden file ``path`` (JSON).

    A drift fails the test unless the file is updated on purpose: run the test with
    ``REPROKIT_UPDATE_GOLDEN=1`` (it rewrites the file and passes) and commit the new file with the
    change that explains it. A missing golden file fails too (it is never created silently).
    """
    path = Path(path)
    vals = [float(v) for v in values]
    if os.environ.get(GOLDEN_ENV) == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"note": note, "rtol": rtol, "atol": atol, "values": vals}, indent=1) + "\n")
        return
    if not path.is_file():
        raise AssertionError(f"golden file {path} is missing; create it on purpose with {GOLDEN_ENV}=1")
    gold = json.loads(path.read_text())["values"]
    if len(gold) != len(vals):
        raise AssertionError(f"{path}: {len(vals)} values, the golden file has {len(gold)}")
    bad = [(i, g, v) for i, (g, v) in enumerate(zip(gold, vals)) if not math.isclose(v, g, rel_tol=rtol, abs_tol=atol)]
    if bad:
        i, g, v = bad[0]
        raise AssertionError(f"{path}: value {i} drifted: golden {g!r}, now {v!r} ({len(bad)} of {len(vals)} differ); "
                             f"if intended, rerun with {GOLDEN_ENV}=1 and commit the file")


def unshadow_package(name: str) -> None:
    """Make ``name`` the installed package again inside a member's test session.

    When a member folder has its package's name (``ugan/`` holding ``src/ugan``), pytest's importlib
    import mode names the test modules ``<name>.tests.*`` and registers the *folder* as the module
    ``<name>`` (a namespace without ``__file__``), which hides the installed package. Call this at the top
    of the member's ``tests/conftest.py``, before anything imports the package.
    """
    mod = sys.modules.get(name)
    if mod is None or getattr(mod, "__file__", None) is not None:
        return
    tests = sys.modules.get(f"{name}.tests")
    del sys.modules[name]
    real = importlib.import_module(name)
    if tests is not None:
        real.tests = tests  # type: ignore[attr-defined]


# optimum LR per arm of :func:`parabola_record` (arms not listed: 2e-3)
PARABOLA_OPTIMA = {"base": 2e-3, "main": 8e-3, "edge": 32e-3, "side": 1e-3, "diverge": 8e-3}


def parabola_record(job: Any) -> dict:
    """A fake training run for the tests of :mod:`reprokit.plan` (module-level, so worker processes can
    unpickle it): ``val_loss = 1 + (log2 lr - log2 optimum(arm))^2 + 0.001 * seed``; arm ``crash`` raises a
    RuntimeError at seed 2, arm ``diverge`` a FloatingPointError (a non-finite loss) at every LR >= 4e-3."""
    opt = PARABOLA_OPTIMA.get(job.arm, 2e-3)
    loss = 1.0 + (math.log2(job.lr) - math.log2(opt)) ** 2 + 0.001 * job.seed
    if job.arm == "crash" and job.seed == 2:
        raise RuntimeError("boom")
    if job.arm == "diverge" and job.lr >= 4e-3:
        raise FloatingPointError(f"non-finite loss nan at step 7 (lr {job.lr:g})")
    return {"run": job.name, "arm": job.arm, "lr": job.lr, "seed": job.seed, "val_loss": loss}


@dataclass(frozen=True)
class NamedJob:
    """A job that is only its name, for the tests of ``reprokit.plan.run_jobs(planner=...)``."""

    name: str


def named_record(job: Any) -> dict:
    """A fake run for those tests (module-level, so worker processes can unpickle it; a test module's own function
    is not importable in a spawned worker when pytest runs as a console script). By the job's name: ``stop...``
    raises KeyboardInterrupt (a worker hit by Ctrl-C), ``long...`` sleeps 60 s (a run still in flight when the
    plan is stopped), any other sleeps 0.2 s. Returns ``{"run": name}``."""
    import time

    if job.name.startswith("stop"):
        raise KeyboardInterrupt
    time.sleep(60.0 if job.name.startswith("long") else 0.2)
    return {"run": job.name}


def check_stopped_reproduction_wall_time(reproduce_module: Any, fake_run_one: Any, calls: list, out_dir: str | Path,
                                         monkeypatch: Any, stop_after: int = 3) -> None:
    """The Ctrl-C contract of a member's ``reproduce`` (``reprokit.plan.run_plan_timed``), asserted.

    The test patches ``reproduce_module.run_one`` with a wrapper around ``fake_run_one``; the fake appends to
    ``calls`` once per run. The wrapper raises KeyboardInterrupt once ``stop_after`` runs have finished.
    The stopped invocation must be kept in ``wall_time.json``: marked interrupted, from scratch, with its
    finished runs counted. Then ``run_reproduce("small", ...)`` is resumed with the plain fake. The resumed
    invocation must be added after it, and results.json's wall time must be the sum of both."""
    import pytest

    from .results import load_results

    out = Path(out_dir)

    def stop(*args, **kwargs):
        if len(calls) == stop_after:
            raise KeyboardInterrupt
        return fake_run_one(*args, **kwargs)

    monkeypatch.setattr(reproduce_module, "run_one", stop)
    with pytest.raises(KeyboardInterrupt):
        reproduce_module.run_reproduce("small", out_dir=str(out))
    inv = json.loads((out / "wall_time.json").read_text())["invocations"]
    assert len(inv) == 1 and inv[0]["interrupted"] and inv[0]["from_scratch"]
    assert inv[0]["runs_recorded"] == stop_after
    monkeypatch.setattr(reproduce_module, "run_one", fake_run_one)
    reproduce_module.run_reproduce("small", out_dir=str(out))
    inv = json.loads((out / "wall_time.json").read_text())["invocations"]
    assert [i.get("interrupted", False) for i in inv] == [True, False] and not inv[1]["from_scratch"]
    assert load_results(out / "results.json")["wall_time_s"] == pytest.approx(sum(i["elapsed_s"] for i in inv),
                                                                               abs=0.2)


REBUILT_KEYS = ("arms", "tables", "claims", "floors", "seeds", "config", "wall_time_s")


def check_results_rebuilt(results_dir: str | Path, rebuild: Any) -> tuple[dict, list[dict]]:
    """Assert that a committed ``results.json`` is what its report code makes of the committed ``runs.jsonl``.

    ``rebuild(records, res)`` writes a results.json from the records (``res``: the committed results, for the
    config and wall time they store) somewhere else and returns its path. Every key of :data:`REBUILT_KEYS`
    must come back equal. The committed wall time must be the sum of ``wall_time.json``'s invocations. Returns
    ``(committed results, records)`` for the member's own checks (plan complete, verdicts)."""
    from .results import load_results
    from .runs import read_jsonl

    d = Path(results_dir)
    res = load_results(d / "results.json")
    records = read_jsonl(d / "runs.jsonl")
    new = load_results(rebuild(records, res))
    for key in REBUILT_KEYS:
        assert new[key] == res[key], f"{d / 'results.json'}: {key} is not what the report makes of runs.jsonl"
    inv = json.loads((d / "wall_time.json").read_text())["invocations"]
    assert math.isclose(res["wall_time_s"], sum(i["elapsed_s"] for i in inv), abs_tol=0.2), "wall time"
    return res, records
