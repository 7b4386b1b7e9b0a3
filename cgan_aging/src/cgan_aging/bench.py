"""Timing of training steps on the CPU (no argparse): the calibration behind configs/small.yaml and
the README's Performance profile (torch.profiler, self CPU time by operator); and the kernel's
side-by-side timing (reference vs Triton) where a CUDA device exists."""

from __future__ import annotations

import json
import time
from pathlib import Path

MEMBER = Path(__file__).resolve().parents[2]


def profile_step(config: str | None = None, steps: int = 2, threads: int = 1, out: str | None = None,
                 overrides: list[str] | None = None) -> dict:
    """Time ``steps`` training steps (after one warm-up step) of ``config`` and profile them."""
    import tempfile

    import torch
    from torch.profiler import ProfilerActivity, profile

    from reprokit.config import load_config

    from .config import Cfg
    from .train import train

    torch.set_num_threads(threads)
    cfg_path = config or str(MEMBER / "configs" / "small.yaml")
    res: dict = {"config": cfg_path, "threads": threads, "overrides": list(overrides or [])}
    with tempfile.TemporaryDirectory() as d:
        base = ["train.log_every=1", "train.ckpt_every=0", f"train.threads={threads}", *(overrides or [])]
        t0 = time.perf_counter()
        train(load_config(Cfg, cfg_path, [*base, "train.steps=1"]), Path(d) / "t")
        res["first_step_s_incl_data"] = round(time.perf_counter() - t0, 3)
        cfg = load_config(Cfg, cfg_path, [*base, f"train.steps={1 + steps}"])
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            r = train(cfg, Path(d) / "t")
        res["step_s"] = round(r["train_seconds"] / steps, 3)
        rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:14]
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        res["profile_self_cpu_top"] = [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3)} for e in rows]
    path = Path(out) if out else MEMBER / "runs" / "bench.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1) + "\n")
    return res


def _step(case, impl: str):
    """forward + backward of one block epilogue (age map from the conv weights, fused IN, ReLU, skip)."""
    from .kernels import age_map, cond_in_act

    x, wt, g, w, b, C, K, S = case

    def f():
        y = cond_in_act(x, age_map(wt, C, K, S, S, 1), g, w, b, True, x, impl=impl)
        y.sum().backward()
        return y
    return f


def kernel_bench(out: str | None = None) -> dict:
    """Age-map + IN + ReLU (+ skip) fused kernel vs the PyTorch reference (forward + backward), CUDA only."""
    import torch

    from reprokit.bench import compare, format_table, write_bench

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device: the Triton kernel is timed on a GPU only (parity runs on CPU in tests)"}
    rows = {}
    for B, C, S, K in ((16, 64, 32, 5), (16, 256, 32, 7), (8, 256, 64, 7)):
        x = torch.randn(B, C, S, S, device="cuda", requires_grad=True)
        wt = torch.randn(C, C + K, 3, 3, device="cuda", requires_grad=True)
        g = torch.randint(0, K, (B,), device="cuda")
        w, b = torch.ones(C, device="cuda", requires_grad=True), torch.zeros(C, device="cuda", requires_grad=True)

        case = (x, wt, g, w, b, C, K, S)
        rows[f"B{B} C{C} S{S} K{K}"] = compare({"torch": _step(case, "torch"), "triton": _step(case, "triton")},
                                               baseline="torch")
    print(format_table([r for rs in rows.values() for r in rs]))
    path = Path(out) if out else MEMBER / "results" / "bench.json"
    write_bench(path, rows, command="cgan-aging bench --kernel")
    return {"written": str(path)}
