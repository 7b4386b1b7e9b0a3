"""Timing functions (no argparse): the small-plan calibration and the B2 decode-latency benchmark.

B2 (paper Fig. 1 (b, c) / Fig. 7; notes Sec. 4.3): one layer's decode step (sequence length 1) at batch B for
a dense SwiGLU FFN (width 1368), an MoE (24 SwiGLU experts of width 680, top-2: ~25M sparse parameters, ~2.1M activated like
the FFN) and a memory layer (PKM-style product keys, 2 heads, top-32, 224^2 = 50,176 x 512 values = ~25.7M
sparse parameters), d = 512. Times are medians of ``torch.utils.benchmark.Timer.blocked_autorange`` with at
least ``min_runs`` measurements; the bytes each step reads are the analytic model of the notes:

* dense: all FFN weights;
* MoE: E (1 - (1 - k/E)^B) experts' weights (expected distinct experts touched) + the gate;
* memory: the keys + N (1 - (1 - m H / N)^B) value rows (expected distinct rows) + the query projection.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from reprokit.config import load_config

from .config import Cfg

PKG_DIR = Path(__file__).resolve().parents[2]
LATENCY_D = 512


def _latency_cfgs() -> dict[str, Cfg]:
    base = ["model.depth=1", f"model.hidden={LATENCY_D}", "model.heads=8", "model.vocab_size=64",
            "model.impl=torch", "model.mlp_hidden=1368"]
    mem = ["model.arch=memory", "model.mem.n_keys=224", "model.mem.heads=2", "model.mem.topm=32",
           "model.mem.k_dim=128", "model.mem.softmax=false", "model.mem.value_proj=false",
           "model.mem.ive=1", "model.mem.tucker_rank=0", "model.mem.cores=1", "model.mem.share_query=false",
           "model.mem.key_norm=false", "model.mem.query_conv=0", 'model.mem.placement="0:0"']
    moe = ["model.arch=moe", "model.moe.experts=24", "model.moe.top_k=2", "model.moe.expert_hidden=680",
           "model.moe.layers=[0]"]
    smoke = PKG_DIR / "configs" / "smoke.yaml"
    return {"dense": load_config(Cfg, smoke, base + ["model.arch=dense"]),
            "moe": load_config(Cfg, smoke, base + moe), "memory": load_config(Cfg, smoke, base + mem)}


def bytes_touched(kind: str, cfg: Cfg, B: int, elem: int = 4) -> float:
    """Expected bytes one decode step reads (weights and value rows), notes Sec. 4.3."""
    mc, D = cfg.model, cfg.model.hidden
    if kind == "dense":
        return 3 * D * mc.ffn_hidden * elem
    if kind == "moe":
        E, k, f = mc.moe.experts, mc.moe.top_k, mc.moe.expert_hidden
        return (E * (1 - (1 - k / E) ** B) * 3 * D * f + D * E) * elem
    m = mc.mem
    N = m.n_physical()
    keys = m.heads * m.n_keys * m.k_dim
    rows = N * (1 - (1 - m.topm * m.heads / N) ** B)
    return (keys + rows * m.value_width(D) + D * m.heads * m.k_dim) * elem


def latency_bench(batches: list[int], min_runs: int = 30, threads: int = 1) -> dict:
    """Median decode-step time (ms) of each layer kind at each batch, with the analytic bytes touched."""
    from torch.utils import benchmark

    from .memory import MemoryLayer, MoE
    from .model import build_model

    torch.set_num_threads(threads)
    layers = {}
    for kind, cfg in _latency_cfgs().items():
        model = build_model(cfg.model).eval()
        if kind == "dense":
            layers[kind] = (model.blocks[0].mlp, cfg)
        elif kind == "moe":
            layers[kind] = (next(m for m in model.modules() if isinstance(m, MoE)), cfg)
        else:
            layers[kind] = (next(m for m in model.modules() if isinstance(m, MemoryLayer)), cfg)
    rows = []
    with torch.no_grad():
        for B in batches:
            x = torch.randn(B, 1, LATENCY_D)
            row = {"batch": B}
            for kind, (layer, cfg) in layers.items():
                t = benchmark.Timer("layer(x)", globals={"layer": layer, "x": x}, num_threads=threads)
                ms = []
                while len(ms) < min_runs:
                    ms.extend(t.blocked_autorange(min_run_time=0.05).times)
                row[f"{kind}_ms"] = 1000 * sorted(ms)[len(ms) // 2]
                row[f"{kind}_runs"] = len(ms)
                row[f"{kind}_mb_read"] = bytes_touched(kind, cfg, B) / 2**20
            rows.append(row)
            print(row, flush=True)
    params = {k: sum(p.numel() for p in layer.parameters()) for k, (layer, _) in layers.items()}
    return {"d": LATENCY_D, "threads": threads, "params": params, "rows": rows,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def calibrate(steps: int = 20, warmup: int = 3, threads: int = 1, scale: str = "small") -> dict:
    """Seconds per training step of each small-plan arm (synthetic tokens, V = 2048, the plan's batch)."""
    import numpy as np

    from .data import LMData, train_batch
    from .model import build_model, lm_loss
    from .plan import PLANS, job_config, plan_arms
    from .train import make_optimizer

    torch.set_num_threads(threads)
    plan = PLANS[scale]
    rng = np.random.default_rng(0)
    toks = rng.integers(0, 2048, 400_000).astype(np.int64)
    data = LMData(2048, {"train": toks}, {"train": np.zeros(len(toks), np.uint8)}, None, "synthetic")
    out = {}
    for key in ("dense", "moe", "pkm", "ultramem"):
        cfg = job_config(plan, plan_arms(plan)[key], 6e-3, 0)
        cfg.model.vocab_size = 2048
        model = build_model(cfg.model)
        opt = make_optimizer(model, cfg)
        t0 = None
        for s in range(steps + warmup):
            if s == warmup:
                t0 = time.perf_counter()
            x, y, ds = train_batch(data, cfg.train.seq_len, cfg.train.batch_size, 0, 0, s)
            loss = lm_loss(model(x, ds), y) + model.aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out[key] = (time.perf_counter() - t0) / steps
        print(key, f"{out[key]:.3f} s/step", flush=True)
    return {"s_per_step": out, "steps": steps, "threads": threads, "batch": [cfg.train.batch_size, cfg.train.seq_len],
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
