"""Timing functions (no argparse; ``overtok bench`` calls ``run_bench``).

Cases, each timed side by side and interleaved in one process (``reprokit.bench.compare``):

* ``train step, small config``: one full training step (forward, backward, optimiser) of the small
  reproduction's model (d = 64, 2 blocks, V = 2048, batch 32 x 128) for the baseline and OE n = 3 at equal
  dense FLOPs (OE adds only the D x D projection), with sparse tables (SparseAdam) and dense ones (AdamW);
  the target is OE/baseline <= 1.25x with sparse updates;
* ``tables m = 2^p``: OE n = 2, k = 1 with a (2^p + 1)-row table, sparse (nn.Embedding(sparse=True) +
  SparseAdam) against dense (AdamW over the whole table), p = 16, 18, 20: step time and peak memory.

``calibrate`` measures the seconds per step of every kind of run of the small plan on the real data, the
measurement the small-run sizing (configs/small.yaml, README) is computed from.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from reprokit.bench import compare, write_bench
from reprokit.config import load_config

from .config import Cfg
from .data import LMData, train_batch
from .model import build_model, lm_losses
from .train import clip_gradients, make_optimizers

PKG_DIR = Path(__file__).resolve().parents[2]


def _synthetic_data(vocab: int, n: int = 200_000) -> LMData:
    import numpy as np

    g = np.random.default_rng(0)
    toks = g.integers(0, vocab, size=n)
    starts = np.zeros(n, dtype=np.uint8)
    starts[::512] = 1
    return LMData(vocab, {"train": toks}, {"train": starts}, None, "bench")


def make_step(cfg: Cfg, data: LMData):
    """A zero-argument callable doing one training step of ``cfg`` (fresh batch each call)."""
    model = build_model(cfg.model, seed=0, sparse_tables=cfg.train.sparse_tables)
    opts = make_optimizers(model, cfg)
    params = list(model.parameters())
    state = {"step": 0}
    mtp = cfg.model.mtp.heads > 0

    def step():
        x, y, ds = train_batch(data, cfg.train.seq_len, cfg.train.batch_size, 0, 0, state["step"])
        state["step"] += 1
        out = model(x, ds, return_mtp=True) if mtp else (model(x, ds), None)
        loss, _, _ = lm_losses(out[0], y, out[1], cfg.model.mtp.weight)
        for o in opts:
            if o is not None:
                o.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(params, cfg.train.grad_clip)
        for o in opts:
            if o is not None:
                o.step()
        return loss.detach()

    return step


def _cfg(over: list[str], batch: int | None = None) -> Cfg:
    cfg = load_config(Cfg, PKG_DIR / "configs" / "small.yaml", ["data.source=synthetic", "model.vocab_size=2048",
                                                                 *over])
    if batch:
        cfg.train.batch_size = batch
    return cfg


def run_bench(out: str | Path | None = None, reduced: bool = False, repeats: int = 0, threads: int = 1,
              render: bool = True) -> Path:
    """All cases into ``results/bench.json`` (or ``out``); re-renders the README's bench block."""
    torch.set_num_threads(threads)
    reps = repeats or (5 if reduced else 10)
    batch = 16 if reduced else None
    data = _synthetic_data(2048)
    cases = {}
    oe3 = ["model.oe.enabled=true", "model.oe.n=3", "model.oe.k=1", "model.oe.m=65537"]
    cands = {
        "baseline": make_step(_cfg([], batch), data),
        "OE n=3 m=65537 sparse": make_step(_cfg(oe3, batch), data),
        "OE n=3 m=65537 dense": make_step(_cfg(oe3 + ["train.sparse_tables=false"], batch), data),
        "2x-deeper baseline": make_step(_cfg(["model.depth=4"], batch), data),
    }
    cases["train step, small config (d=64, 2 blocks, V=2048)"] = compare(cands, "baseline", warmup=2, repeats=reps)
    del cands
    extra = {"optimizer_state_mb": {}}
    for p in ((16, 18) if reduced else (16, 18, 20)):
        m = 2**p + 1
        oe2 = ["model.oe.enabled=true", "model.oe.n=2", "model.oe.k=1", f"model.oe.m={m}"]
        cands = {f"sparse m=2^{p}+1": make_step(_cfg(oe2, batch), data),
                 f"dense m=2^{p}+1": make_step(_cfg(oe2 + ["train.sparse_tables=false"], batch), data)}
        cases[f"tables m = 2^{p}+1 (OE n=2, k=1): sparse vs dense"] = compare(
            cands, f"sparse m=2^{p}+1", warmup=2, repeats=max(3, reps // 2))
        extra["optimizer_state_mb"][f"2^{p}+1"] = {"table_mb": m * 64 * 4 / 2**20,
                                                   "adam_state_mb (both paths)": 2 * m * 64 * 4 / 2**20}
        del cands
    extra["notes"] = ("CPU, fp32, 1 thread unless --threads; each candidate times forward + backward + optimiser "
                      "step of one batch; 'ratio' is against the case's first row. Both Adam variants keep a full-size "
                      "state; the sparse path reads and writes only the touched rows.")
    extra["reduced"] = reduced
    path = Path(out) / "bench.json" if out else PKG_DIR / "results" / "bench.json"
    cmd = "uv run overtok bench" + (" --reduced" if reduced else "") + (f" --threads {threads}" if threads != 1 else "")
    write_bench(path, cases, command=cmd, extra=extra, packages=("triton",))
    if render and out is None:
        from reprokit.results import render_readme

        render_readme(PKG_DIR, write=True)
    return path


def calibrate(arms: dict[str, list[str]] | None = None, steps: int = 40, warmup: int = 5, threads: int = 1,
              eval_tokens: int = 32768) -> dict:
    """Seconds per training step of each kind of small-plan run on the real data (median of ``steps``
    after ``warmup``), and the evaluation throughput; the input of the small-run sizing."""
    from .evaluate import evaluate_lm
    from .train import prepare_data

    torch.set_num_threads(threads)
    arms = arms or {
        "baseline": [],
        "OE n=3 k=1 m=65537": ["model.oe.enabled=true", "model.oe.n=3", "model.oe.k=1", "model.oe.m=65537"],
        "OE n=2 k=1 m=262145": ["model.oe.enabled=true", "model.oe.n=2", "model.oe.k=1", "model.oe.m=262145"],
        "baseline depth 4": ["model.depth=4"],
        "OT n=3 k=1 m=65537": ["model.oe.enabled=true", "model.oe.n=3", "model.oe.k=1", "model.oe.m=65537",
                               "model.mtp.heads=1"],
    }
    base = load_config(Cfg, PKG_DIR / "configs" / "small.yaml")
    data = prepare_data(base)
    out = {"threads": threads, "steps": steps, "warmup": warmup, "batch_size": base.train.batch_size,
           "seq_len": base.train.seq_len, "arms": {}}
    for name, over in arms.items():
        cfg = load_config(Cfg, PKG_DIR / "configs" / "small.yaml", over)
        cfg.model.vocab_size = data.vocab_size
        step = make_step(cfg, data)
        times = []
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            step()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        model = build_model(cfg.model, seed=0, sparse_tables=cfg.train.sparse_tables)
        t0 = time.perf_counter()
        evaluate_lm(model, data, "val", cfg.train.seq_len, cfg.eval.batch_size, max_tokens=eval_tokens)
        ev = time.perf_counter() - t0
        out["arms"][name] = {"s_per_step_median": statistics.median(times), "s_per_step_mean": statistics.fmean(times),
                             "eval_tokens_per_s": eval_tokens / ev,
                             "params_non_embedding": model.param_counts()["non_embedding"]}
        print(f"{name}: {statistics.median(times) * 1000:.0f} ms/step (median), eval {eval_tokens / ev:.0f} tok/s",
              flush=True)
    return out
