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

import os
import statistics
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


def _row(name: str, ms: list[float], base_ms: float | None):
    import numpy as np

    from reprokit.bench import BenchRow

    t = np.asarray(ms)
    med = float(np.median(t))
    return BenchRow(name=name, median_ms=med, p25_ms=float(np.percentile(t, 25)), p75_ms=float(np.percentile(t, 75)),
                    peak_mem_mb=None, ratio=med / base_ms if base_ms else 1.0, saved_mb=None)


def latency_bench(batches: list[int], min_runs: int = 30, threads: int = 1) -> dict:
    """Median decode-step time (ms) of each layer kind at each batch, with the analytic bytes touched.
    -> {"cases": {"B = b": [BenchRow dense, moe, memory]} (ratio: against dense), "extra": {...}}."""
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
    cases, mb_read, runs = {}, {}, {}
    load_before = os.getloadavg()
    with torch.no_grad():
        for B in batches:
            x = torch.randn(B, 1, LATENCY_D)
            times = {}
            for kind, (layer, cfg) in layers.items():
                t = benchmark.Timer("layer(x)", globals={"layer": layer, "x": x}, num_threads=threads)
                ms = []
                while len(ms) < min_runs:
                    ms.extend(1000 * v for v in t.blocked_autorange(min_run_time=0.05).times)
                times[kind] = ms
                mb_read.setdefault(kind, {})[B] = bytes_touched(kind, cfg, B) / 2**20
                runs.setdefault(kind, {})[B] = len(ms)
            base = statistics.median(times["dense"])
            cases[f"B = {B}"] = [_row(kind, times[kind], base) for kind in layers]
            print(f"B={B}: " + ", ".join(f"{r.name} {r.median_ms:.3f} ms" for r in cases[f"B = {B}"]), flush=True)
    params = {k: sum(p.numel() for p in layer.parameters()) for k, (layer, _) in layers.items()}
    extra = {"d": LATENCY_D, "threads": threads, "min_runs": min_runs, "params": params, "mb_read": mb_read,
             "runs": runs, "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
             "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    extra["claim"] = latency_claim(cases)
    return {"cases": cases, "extra": extra}


def latency_claim(cases: dict, b_moe: int = 64, b_max: int = 256, moe_min: float = 2.0, mem_max: float = 1.5
                  ) -> dict:
    """The issue's B2 claim: MoE / memory >= 2 at B = 64, and memory / dense <= 1.5 for every B <= 256
    (medians). -> {"verdict": "reproduced" | "not reproduced" | "not measured", the ratios}."""
    med = {int(k.split("=")[1]): {r.name: r.median_ms for r in rows} for k, rows in cases.items()}
    if b_moe not in med or not any(b <= b_max for b in med):
        return {"verdict": "not measured", "reason": f"needs B = {b_moe} and batches <= {b_max}"}
    moe_over_mem = med[b_moe]["moe"] / med[b_moe]["memory"]
    mem_over_dense = {b: m["memory"] / m["dense"] for b, m in sorted(med.items()) if b <= b_max}
    ok = moe_over_mem >= moe_min and max(mem_over_dense.values()) <= mem_max
    return {"verdict": "reproduced" if ok else "not reproduced",
            "statement": f"MoE/memory >= {moe_min:g} at B = {b_moe} while memory/dense <= {mem_max:g} up to B = {b_max}",
            f"moe_over_memory_at_{b_moe}": moe_over_mem,
            "memory_over_dense": mem_over_dense, "max_memory_over_dense": max(mem_over_dense.values())}


def plot_latency(cases: dict, extra: dict, out: Path) -> Path:
    """Two panels: median decode-step time and the analytic MB read, against the batch (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bs = [int(k.split("=")[1]) for k in cases]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for kind in ("dense", "moe", "memory"):
        med = [next(r.median_ms for r in rows if r.name == kind) for rows in cases.values()]
        ax[0].plot(bs, med, "o-", label=kind)
        ax[1].plot(bs, [extra["mb_read"][kind][b] for b in bs], "o-", label=kind)
    for a, lab in zip(ax, ("median ms per decode step", "MB read (analytic)")):
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.set_xlabel("batch B (sequence length 1)")
        a.set_ylabel(lab)
        a.grid(alpha=0.3)
        a.legend()
    fig.suptitle(f"B2: one layer at d = {extra['d']}, CPU, {extra['threads']} thread(s)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def peer_bench(dim: int = 256, heads: int = 4, num_keys: int = 128, topk: int = 32, dim_head: int = 64,
               batch: tuple[int, int] = (8, 128), repeats: int = 15, threads: int = 1) -> dict:
    """Our memory layer (PKM arm, ``impl=torch``) against lucidrains' ``product-key-memory`` ``PKM`` at the
    same configuration, forward + backward (``reprokit.bench.compare``, interleaved).

    The match: H query heads of width 2 dim_head (ours ``k_dim``), n sub-keys per half, top-m, softmax
    scores, one shared n^2 x dim value table summed over heads (theirs an ``nn.EmbeddingBag``), query
    LayerNorm (theirs over each half, ours over the whole query: the only difference, same cost)."""
    try:
        from product_key_memory import PKM
    except ImportError as e:
        from reprokit.errors import UserError

        raise UserError("--peer needs lucidrains' product-key-memory: uv sync --all-packages --group bench") from e
    from reprokit.bench import compare

    from .memory import MemoryLayer
    from .model import build_model

    torch.set_num_threads(threads)
    over = ["model.depth=1", f"model.hidden={dim}", "model.heads=4", "model.vocab_size=64", "model.impl=torch",
            "model.arch=memory", f"model.mem.n_keys={num_keys}", f"model.mem.heads={heads}",
            f"model.mem.topm={topk}", f"model.mem.k_dim={2 * dim_head}", "model.mem.softmax=true",
            "model.mem.value_proj=false", "model.mem.ive=1", "model.mem.tucker_rank=0", "model.mem.cores=1",
            "model.mem.share_query=false", "model.mem.key_norm=false", "model.mem.query_conv=0",
            "model.mem.init=pkm", 'model.mem.placement="0:0"']
    cfg = load_config(Cfg, PKG_DIR / "configs" / "smoke.yaml", over)
    ours = next(m for m in build_model(cfg.model).modules() if isinstance(m, MemoryLayer)).train()
    theirs = PKM(dim, heads=heads, num_keys=num_keys, topk=topk, dim_head=dim_head, use_layernorm=True).train()
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*batch, dim, generator=g)
    gy = torch.randn(*batch, dim, generator=g)

    def step(mod):
        def run():
            mod.zero_grad(set_to_none=True)
            y = mod(x)
            (y * gy).sum().backward()
            return y
        return run

    load_before = os.getloadavg()
    rows = compare({"ultramem (ours, torch)": step(ours), "product-key-memory PKM": step(theirs)},
                   baseline="product-key-memory PKM", warmup=3, repeats=repeats)
    case = (f"PKM fwd+bwd: {batch[0]}x{batch[1]} tokens, d {dim}, {heads} heads, {num_keys}^2 values, top-{topk}, "
            f"k_dim {2 * dim_head}")
    extra = {"params": {"ours": n_ours, "theirs": n_theirs}, "threads": threads, "repeats": repeats,
             "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
             "ratio_ours_over_theirs": rows[0].ratio}
    return {"cases": {case: rows}, "extra": extra}


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
