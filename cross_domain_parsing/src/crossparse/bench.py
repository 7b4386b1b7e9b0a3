"""CPU timings (no argparse): the fused-vs-unfused loss comparison behind the README's Performance
table, and the training-step calibration behind configs/small.yaml.

``loss``: forward + backward of bilinear upsample + cross-entropy at the paper's shape (batch 10, 12
classes, 31x16 logits -> 241x121), unfused (``F.interpolate`` + ``F.cross_entropy``) against the chunked,
checkpointed torch variant (``model.ce_chunk_rows``), measured side by side (``reprokit.bench.compare``:
interleaved, median time, peak RSS growth). The Triton kernel needs CUDA (the interpreter is a
correctness tool, orders of magnitude slower), so it is not in the CPU table.
``step``: seconds per training iteration of configs/small.yaml for the source-only and the full arm.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

MEMBER = Path(__file__).resolve().parents[2]
COMMAND = "crossparse bench --what loss --threads 1"


def bench_loss(threads: int = 1, out: str | None = None, repeats: int = 10) -> dict:
    import torch

    from reprokit.bench import compare, format_table, write_bench

    from .kernels import upsample_ce, upsample_ce_chunked

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(10, 12, 31, 16, generator=g, requires_grad=True)
    target = torch.randint(0, 12, (10, 241, 121), generator=g)

    def run(fn):
        def call():
            loss, _ = fn(logits, target)
            loss.backward()
            logits.grad = None
            return loss.detach()
        return call

    cands = {"unfused (interpolate + cross_entropy)": run(lambda x, t: upsample_ce(x, t, impl="torch")),
             "chunked torch (16-row bands, checkpointed)": run(lambda x, t: upsample_ce_chunked(x, t, rows=16))}
    rows = compare(cands, baseline="unfused (interpolate + cross_entropy)", warmup=2, repeats=repeats)
    path = Path(out) if out else MEMBER / "results" / "bench.json"
    write_bench(path, {"upsample + CE fwd+bwd, 10x12x31x16 -> 241x121 (CPU)": rows}, command=COMMAND)
    return {"table": format_table(rows), "path": str(path)}


def bench_steps(steps: int = 20, threads: int = 1, out: str | None = None) -> dict:
    import tempfile

    import torch

    from reprokit.config import load_config

    from .config import Cfg
    from .train import train

    torch.set_num_threads(threads)
    res: dict = {"config": "configs/small.yaml", "threads": threads, "steps": steps}
    arms = {"source_only": ["adapt.feature=false", "adapt.label=false"],
            "label": ["adapt.feature=false", "adapt.label=true"],
            "feature": ["adapt.feature=true", "adapt.label=false"],
            "full": ["adapt.feature=true", "adapt.label=true"]}
    with tempfile.TemporaryDirectory() as d:
        for name, ov in arms.items():
            cfg = load_config(Cfg, str(MEMBER / "configs" / "small.yaml"),
                              [*ov, f"train.steps={steps}", "train.eval_every=0", "train.ckpt_every=0",
                               f"train.threads={threads}"])
            t0, c0 = time.perf_counter(), time.process_time()
            r = train(cfg, Path(d) / name)
            res[f"{name}_step_s"] = round(r["train_seconds"] / steps, 4)
            # CPU seconds of this process per step: what one step costs on an unloaded core (1 thread)
            res[f"{name}_step_cpu_s"] = round(r["train_cpu_seconds"] / steps, 4)
            res[f"{name}_total_s_incl_data"] = round(time.perf_counter() - t0, 1)
            res[f"{name}_total_cpu_s_incl_data"] = round(time.process_time() - c0, 1)
        # one evaluation as the runs log it every eval_every steps (source-val + every target's val and test)
        from .data import load_data
        from .evaluate import evaluate_all
        from .train import load_run

        run = load_run(Path(d) / "full")
        t0, c0 = time.perf_counter(), time.process_time()
        data = load_data(run.cfg)
        res["data_s"], res["data_cpu_s"] = round(time.perf_counter() - t0, 2), round(time.process_time() - c0, 2)
        t0, c0 = time.perf_counter(), time.process_time()
        evaluate_all(run.parser, data, run.cfg, ("val", "test"), full=False)
        res["eval_s"], res["eval_cpu_s"] = round(time.perf_counter() - t0, 2), round(time.process_time() - c0, 2)
    try:
        import os

        res["load_average"] = os.getloadavg()
    except OSError:
        pass
    path = Path(out) if out else MEMBER / "runs" / "step_bench.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1) + "\n")
    return res


def run_bench(what: str = "all", steps: int = 20, threads: int = 1, out: str | None = None) -> dict:
    res = {}
    if what in ("loss", "all"):
        res["loss"] = bench_loss(threads, out if what == "loss" else None)
    if what in ("step", "all"):
        res["step"] = bench_steps(steps, threads, out if what == "step" else None)
    return res
