"""Timing of training steps on the CPU (no argparse): the calibration behind configs/small.yaml and
the README's Performance profile (torch.profiler, self CPU time by operator)."""

from __future__ import annotations

import json
import time
from pathlib import Path

MEMBER = Path(__file__).resolve().parents[2]


def profile_step(config: str | None = None, steps: int = 2, threads: int = 1, out: str | None = None) -> dict:
    """Time ``steps`` training steps (after one warm-up step) of ``config`` and profile the last one."""
    import tempfile

    import torch
    from torch.profiler import ProfilerActivity, profile

    from reprokit.config import load_config

    from .config import Cfg
    from .train import train

    torch.set_num_threads(threads)
    cfg_path = config or str(MEMBER / "configs" / "small.yaml")
    res: dict = {"config": cfg_path, "threads": threads}
    with tempfile.TemporaryDirectory() as d:
        base = ["train.log_every=1", "train.ckpt_every=0", f"train.threads={threads}"]
        cfg = load_config(Cfg, cfg_path, [*base, "train.steps=1"])
        t0 = time.perf_counter()
        train(cfg, Path(d) / "warm")
        res["first_step_s_incl_data"] = round(time.perf_counter() - t0, 3)
        cfg = load_config(Cfg, cfg_path, [*base, f"train.steps={1 + steps}"])
        train(load_config(Cfg, cfg_path, [*base, "train.steps=1"]), Path(d) / "t")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            r = train(cfg, Path(d) / "t")
        res["step_s"] = round(r["train_seconds"] / steps, 3)
        rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        res["profile_self_cpu_top"] = [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3)} for e in rows]
    path = Path(out) if out else MEMBER / "runs" / "bench.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1) + "\n")
    return res
