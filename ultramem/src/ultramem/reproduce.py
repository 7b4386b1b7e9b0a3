"""``reproduce --scale smoke|small``: the plan (which runs) and its execution.

Plan (``plan.GROUPS``, a ``reprokit.plan.Group`` per scale; sizes in ``plan.PLANS``), every run at identical
tokens and data order per seed:

* the LR grid: dense and UltraMem at every LR of the group's ``lr_grid``, seed 0;
* extensions: an arm whose best validation loss sits at an edge of the LRs it tried gets one more LR beyond
  that edge (x2 or /2), at most twice, decided from its own seed-0 runs only;
* at each family's chosen LR: dense and UltraMem seeds 1-2, PKM and MoE every seed (PKM and the ladder use
  UltraMem's LR, MoE the dense LR), and the two mini-ladder steps (seed 0).

The plan is a pure function of the plan's own finished records (their names carry the budget tag, e.g.
``ultramem_st1000_lr0.006_s1``), re-derived after every finished run (``reprokit.plan.run_jobs``): a run
that a result calls for starts as soon as a worker is free, with no barrier between the grid and the seeds.
``results/<scale>/runs.jsonl`` gets one record per finished run (name, every varying key, final metrics,
logged curves); a recorded run is never recomputed. Unfinished runs resume from their own checkpoints under
``runs/<scale>/<run name>/``. ``smoke`` (synthetic tokens, seconds) always starts from scratch, writes only
to ``runs/smoke/`` and never touches ``results/`` or the README; ``small`` ends with ``report.build_report``
(results.json, figures, README re-render).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import time
from pathlib import Path

from reprokit.config import to_dict
from reprokit.plan import Group, Job, planned_jobs, run_jobs
from reprokit.runs import read_jsonl

from .plan import GROUPS, PKG_DIR, PLANS, job_config, plan_arms


# ------------------------------------------------------------------------------------------- execution
def _read_curve(run_dir: Path) -> tuple[list, list]:
    """(train curve [(step, loss)], val curve [(step, loss)]) from metrics.jsonl, the last record per step
    (a resumed run logs the steps after its checkpoint again)."""
    train, val = {}, {}
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            if r.get("split") == "train" and "loss" in r:
                train[r["step"]] = r["loss"]
            elif r.get("split") == "val" and "loss" in r:
                val[r["step"]] = r["loss"]
    return sorted(train.items()), sorted(val.items())


def run_job(plan: dict, job: Job, runs_dir: str, threads: int = 1, quiet: bool = True) -> dict:
    """Train one run of the plan (resuming its own checkpoint) and return its runs.jsonl record. ``plan``
    (the sizes) travels with the job, so a worker process trains exactly what the parent planned."""
    import torch

    from .train import train

    torch.set_num_threads(threads)
    arm = plan_arms(plan)[job.arm]
    cfg = job_config(plan, arm, job.lr, job.seed)
    cfg.train.threads = threads
    out = Path(runs_dir) / job.name
    t0 = time.perf_counter()
    metrics = train(cfg, out, quiet=quiet)
    wall = time.perf_counter() - t0
    ckpts = sorted((out / "ckpt").glob("step_*"))
    for old in ckpts[:-1]:  # finished: the newest checkpoint is all that is worth keeping
        shutil.rmtree(old, ignore_errors=True)
    tr, va = _read_curve(out)
    return {"run": job.name, "key": job.arm, "arm": arm.name, "role": arm.role, "family": arm.family,
            "lr": job.lr, "seed": job.seed, "tag": job.tag, "val_loss": metrics["val_loss"],
            "varying": {**{k: v for k, v in arm.keys}, "train.lr": job.lr, "train.seed": job.seed},
            "metrics": metrics, "curve": tr, "val_curve": va, "wall_s": wall, "config": to_dict(cfg)}


def _run_planned(plan: dict, runs_dir: str, quiet: bool, job: Job) -> dict:
    rec = run_job(plan, job, runs_dir, 1, quiet=quiet)
    m = rec["metrics"]
    print(f"[reproduce] {rec['run']}: val {m['val_loss']:.4f} test {m['test_loss']:.4f} ({rec['wall_s']:.0f} s)",
          flush=True)
    return rec


def job_runner(scale: str, runs_dir: Path):
    """The picklable ``run_fn`` of ``reprokit.plan.run_jobs`` for ``scale``."""
    return functools.partial(_run_planned, PLANS[scale], str(runs_dir), scale == "smoke")


def starts_from_scratch(group: Group, log: Path, runs_dir: Path) -> bool:
    """True when none of the plan's runs is recorded in ``log`` and none has a checkpoint under ``runs_dir``
    (so the invocation's wall time is the whole plan's, not a resumed remainder)."""
    records = read_jsonl(log) if log.is_file() else []
    jobs = planned_jobs([group], records)
    names = {j.name for j in jobs}
    if any(r["run"] in names for r in records):
        return False
    return not any((runs_dir / j.name / "ckpt").is_dir() for j in jobs)


def execute(scale: str, out: Path, runs_dir: Path, workers: int = 1) -> list[dict]:
    """Run the missing runs of the plan (``reprokit.plan.run_jobs``: re-planned after every finished run),
    appending each finished record to runs.jsonl at once; returns the plan's records. A failed run stops new
    submissions; the running ones finish and are recorded, then the failure is re-raised."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    return run_jobs([GROUPS[scale]], out / "runs.jsonl", job_runner(scale, runs_dir), workers=max(1, int(workers)))


def run_reproduce(scale: str, out_dir: str | None = None, workers: int = 1) -> Path:
    """Run (or resume) the plan of ``scale`` and write its results.json; returns that path."""
    from .report import build_report

    if scale not in GROUPS:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(GROUPS)}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if scale == "smoke":
        out = Path(out_dir) if out_dir else PKG_DIR / "runs" / "smoke"
        runs_dir = out / "runs"
        # seconds: always from scratch (only the long scale resumes)
        (out / "runs.jsonl").unlink(missing_ok=True)
        shutil.rmtree(runs_dir, ignore_errors=True)
    else:
        out = Path(out_dir) if out_dir else PKG_DIR / "results" / scale
        runs_dir = (Path(out_dir) / "runs") if out_dir else PKG_DIR / "runs" / scale
    out.mkdir(parents=True, exist_ok=True)
    from_scratch = starts_from_scratch(GROUPS[scale], out / "runs.jsonl", runs_dir)
    t0 = time.perf_counter()
    records = execute(scale, out, runs_dir, workers)
    elapsed = time.perf_counter() - t0
    path = build_report(scale, records, out, runs_dir, elapsed_s=elapsed, from_scratch=from_scratch,
                        render=(scale == "small" and out_dir is None))
    print(f"[{scale}] results: {path} ({elapsed:.0f} s this invocation"
          f"{', from scratch' if from_scratch else ', resumed'})", file=sys.stderr, flush=True)
    return path
