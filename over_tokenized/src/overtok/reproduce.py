"""``reproduce --scale smoke|small``: the execution of the plan (``plan.plan_group``, a ``reprokit.plan.Group``).

Plan (both scales; sizes in ``plan.PLANS``), every run at identical tokens and data order per seed:

* the LR grid: the baseline and the main OE arm (n = 3) at every LR of ``lr_grid``, seed 0; while an arm's
  best validation loss (``val_loss``; never the test split the claims are judged on) sits at an edge of the
  LRs it tried, one more LR beyond that edge (x2 or /2), at most ``max_extensions`` (2) times;
* at each family's chosen LR (best validation loss over its seed-0 runs): the further seeds of the baseline and
  the main arm (paired claims); the A1 vocabulary-law sweep (n = 2, k = 1 at every m of ``a1_m``, OE family
  LR, the seeds of ``a1_seeds``); the 2x-deeper baseline (baseline LR); the Table 3 hierarchy row (2-gram
  without the 1-gram table, OE LR) and OT (main arm + one MTP-DS head at weight 0.1, OE LR), seed 0.

There are no stages: ``reprokit.plan.run_jobs`` re-derives the plan after every finished run, so a run that a
result calls for (an extension, the further seeds, a secondary arm once its family's LR is decided) starts as
soon as a worker is free. The plan is a pure function of the finished records of its own runs (run names carry
the arm, the budget tag ``st<steps>``, the LR and the seed: ``oe-n3k1-m65537_st2800_lr0.006_s1``), so
resuming never changes the run set. ``results/<scale>/runs.jsonl`` gets one record per finished run (name,
every varying key, ``val_loss``, final metrics, logged curves) as soon as it finishes; a recorded run is never
recomputed, and unfinished runs resume from their own checkpoints under ``runs/<scale>/<run name>/``. A failed
run stops new ones; the running ones finish and are recorded, then the error is raised. ``smoke`` (synthetic
tokens, seconds) always starts from scratch, writes only to ``runs/smoke/`` and never touches ``results/`` or
the README; ``small`` ends with ``report.build_report`` (results.json, figures, README re-render).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from reprokit.config import to_dict
from reprokit.plan import Job, is_diverged, planned_jobs, run_jobs
from reprokit.runs import read_jsonl

from .plan import PKG_DIR, PLANS, Arm, arms_by_name, job_config, plan_group


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


def run_job(plan: dict, arm: Arm, lr: float, seed: int, runs_dir: str, name: str, threads: int = 1,
            quiet: bool = True) -> dict:
    """Train one run in ``runs_dir/name`` (resuming its own checkpoint) and return its runs.jsonl record.
    ``plan`` travels with the job, so a worker process trains exactly what the parent planned."""
    import torch

    from .train import train

    torch.set_num_threads(threads)
    cfg = job_config(plan, arm, lr, seed)
    cfg.train.threads = threads
    out = Path(runs_dir) / name
    t0 = time.perf_counter()
    metrics = train(cfg, out, quiet=quiet)
    wall = time.perf_counter() - t0
    ckpts = sorted((out / "ckpt").glob("step_*"))
    for old in ckpts[:-1]:  # finished: the newest checkpoint is all that is worth keeping
        shutil.rmtree(old, ignore_errors=True)
    tr, va = _read_curve(out)
    # ``val_loss`` at top level: the key the plan chooses LRs on (reprokit.plan's ``select_by``)
    return {"run": name, "arm": arm.name, "role": arm.role, "family": arm.family, "lr": lr, "seed": seed,
            "varying": {**{k: v for k, v in arm.keys}, "train.lr": lr, "train.seed": seed},
            "val_loss": metrics["val_loss"], "metrics": metrics, "curve": tr, "val_curve": va, "wall_s": wall,
            "config": to_dict(cfg)}


def _run_job(plan: dict, runs_dir: str, quiet: bool, job: Job) -> dict:
    """``run_fn`` of ``reprokit.plan.run_jobs`` (module-level, so spawned workers can unpickle it): the job's
    arm name -> the plan's arm, trained in ``runs_dir/<run name>``; the record carries the budget tag."""
    arm = arms_by_name(plan)[job.arm]
    rec = run_job(plan, arm, job.lr, job.seed, runs_dir, job.name, threads=1, quiet=quiet)
    return {**rec, "tag": job.tag}


def job_runner(scale: str, runs_dir: Path, quiet: bool = True) -> Callable[[Job], dict]:
    """The picklable ``run_fn`` of ``scale``: ``job -> record``."""
    return functools.partial(_run_job, PLANS[scale], str(runs_dir), quiet)


def _print_record(scale: str, rec: dict) -> None:
    if is_diverged(rec):          # no metrics; run_jobs has printed it as DIVERGED with its error
        return
    m = rec["metrics"]
    print(f"[{scale}] {rec['run']}: val {m['val_loss']:.4f} test {m['test_loss']:.4f} ({rec['wall_s']:.0f} s)",
          flush=True)


def execute(scale: str, out: Path, runs_dir: Path, workers: int = 1,
            run_fn: Callable[[Job], dict] | None = None) -> tuple[list[dict], bool]:
    """Run the missing runs of the plan, appending each finished record to ``out/runs.jsonl`` at once.

    Returns ``(the plan's records, from_scratch)``; ``from_scratch``: none of the plan's runs was finished when
    this invocation started (so its wall time is the whole plan's). ``run_fn`` (default: train the job) is for
    the tests."""
    group = plan_group(scale)
    log = out / "runs.jsonl"
    before = read_jsonl(log) if log.is_file() else []
    ours = {j.name for j in planned_jobs([group], before)}
    from_scratch = not any(r["run"] in ours for r in before)
    runs_dir.mkdir(parents=True, exist_ok=True)
    workers = max(1, int(workers))
    print(f"[{scale}] plan {group.tag}: {len(ours)} runs determined so far, "
          f"{sum(r['run'] in ours for r in before)} finished ({workers} worker{'s' * (workers > 1)})", flush=True)
    run_fn = run_fn or job_runner(scale, runs_dir, quiet=scale == "smoke" or workers > 1)
    records = run_jobs([group], log, run_fn, workers=workers,
                       on_record=functools.partial(_print_record, scale))
    return records, from_scratch


def run_reproduce(scale: str, out_dir: str | None = None, workers: int = 1) -> Path:
    """Run (or resume) the plan of ``scale`` and write its results.json; returns that path."""
    from .report import build_report

    if scale not in PLANS:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(PLANS)}")
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
    t0 = time.perf_counter()
    records, from_scratch = execute(scale, out, runs_dir, workers)
    elapsed = time.perf_counter() - t0
    path = build_report(scale, records, out, runs_dir, elapsed_s=elapsed, from_scratch=from_scratch,
                        render=(scale == "small" and out_dir is None))
    print(f"[{scale}] results: {path} ({elapsed:.0f} s this invocation, "
          f"{'from scratch' if from_scratch else 'resumed'})", file=sys.stderr, flush=True)
    return path
