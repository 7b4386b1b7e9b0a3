"""``reproduce --scale smoke|small``: the plan (which runs, decided from the base grid) and its execution.

Plan (``plan.py``; sizes in ``PLANS``), every run at identical tokens and data order per seed:

* stage 0, the base grid: dense and UltraMem at every LR of ``lr_grid``, seed 0;
* stage 1, edge extensions, decided from stage 0 only: an arm whose best validation loss sits at an edge
  of the grid gets one more LR beyond that edge (the grid's ratio), so the optimum is bracketed;
* stage 2, at each family's chosen LR: dense and UltraMem seeds 1-2, PKM and MoE seeds 0-2 (PKM and the
  ladder use UltraMem's LR, MoE the dense LR), and the two mini-ladder steps (seed 0).

The plan is a pure function of the recorded base-grid results, so resuming never changes the run set.
``results/<scale>/runs.jsonl`` gets one record per finished run (name, every varying key, final metrics,
logged curves); a recorded run is never recomputed. Unfinished runs resume from their own checkpoints under
``runs/<scale>/<run name>/``. ``smoke`` (synthetic tokens, seconds) writes only to ``runs/smoke/`` and never
touches ``results/`` or the README; ``small`` ends with ``report.build_report`` (results.json, figures,
README re-render).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from reprokit.config import to_dict

from .plan import PKG_DIR, PLANS, Arm, job_config, run_name, stage_jobs


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


def run_job(plan: dict, arm: Arm, lr: float, seed: int, runs_dir: str, threads: int = 1, quiet: bool = True) -> dict:
    """Train one run (resuming its own checkpoint) and return its runs.jsonl record. ``plan`` travels with
    the job, so a worker process trains exactly what the parent planned."""
    import torch

    from .train import train

    torch.set_num_threads(threads)
    cfg = job_config(plan, arm, lr, seed)
    cfg.train.threads = threads
    name = run_name(arm, lr, seed)
    out = Path(runs_dir) / name
    t0 = time.perf_counter()
    metrics = train(cfg, out, quiet=quiet)
    wall = time.perf_counter() - t0
    ckpts = sorted((out / "ckpt").glob("step_*"))
    for old in ckpts[:-1]:  # finished: the newest checkpoint is all that is worth keeping
        shutil.rmtree(old, ignore_errors=True)
    tr, va = _read_curve(out)
    return {"run": name, "arm": arm.name, "role": arm.role, "family": arm.family, "lr": lr, "seed": seed,
            "varying": {**{k: v for k, v in arm.keys}, "train.lr": lr, "train.seed": seed},
            "metrics": metrics, "curve": tr, "val_curve": va, "wall_s": wall, "config": to_dict(cfg)}


def _job_entry(args: tuple) -> dict:
    return run_job(*args)


def _load_records(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out[r["run"]] = r
    return out


def execute(scale: str, out: Path, runs_dir: Path, workers: int = 1) -> list[dict]:
    """Run the plan stage by stage (missing runs only), appending each finished record to runs.jsonl."""
    log = out / "runs.jsonl"
    done = _load_records(log)
    runs_dir.mkdir(parents=True, exist_ok=True)
    workers = max(1, int(workers))
    for stage in (0, 1, 2):
        jobs = [j for j in stage_jobs(scale, stage, list(done.values())) if run_name(*j) not in done]
        if not jobs:
            continue
        print(f"[{scale}] stage {stage}: {len(jobs)} runs ({workers} worker{'s' * (workers > 1)})", flush=True)
        # longest first: the memory arms
        jobs.sort(key=lambda j: j[0].role not in ("ultramem", "ladder", "pkm"))

        def record(rec: dict) -> None:
            with open(log, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            done[rec["run"]] = rec
            m = rec["metrics"]
            print(f"[{scale}] {rec['run']}: val {m['val_loss']:.4f} test {m['test_loss']:.4f} "
                  f"({rec['wall_s']:.0f} s)", flush=True)

        failed = []
        if workers == 1:
            for arm, lr, seed in jobs:
                record(run_job(PLANS[scale], arm, lr, seed, str(runs_dir), 1, quiet=scale == "smoke"))
        else:
            import multiprocessing as mp

            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
                futs = {ex.submit(_job_entry, (PLANS[scale], arm, lr, seed, str(runs_dir), 1, True)): run_name(arm, lr, seed)
                        for arm, lr, seed in jobs}
                for f in as_completed(futs):
                    try:
                        record(f.result())
                    except Exception as e:  # keep the other workers' runs; fail after the stage
                        failed.append(f"{futs[f]}: {type(e).__name__}: {e}")
                        print(f"[{scale}] FAILED {failed[-1]}", flush=True)
        if failed:
            raise RuntimeError(f"{len(failed)} run(s) of stage {stage} failed (the finished ones are recorded; "
                               "rerun to resume): " + "; ".join(failed))
    return list(done.values())


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
    records = execute(scale, out, runs_dir, workers)
    elapsed = time.perf_counter() - t0
    path = build_report(scale, records, out, runs_dir, elapsed_s=elapsed,
                        render=(scale == "small" and out_dir is None))
    print(f"[{scale}] results: {path} ({elapsed:.0f} s this invocation)", file=sys.stderr, flush=True)
    return path
