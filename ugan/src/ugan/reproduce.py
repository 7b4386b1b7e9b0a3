"""``ugan reproduce --scale smoke|small``: the plan (which runs) and its execution.

Arms (notes §6.2): ``stargan`` (lambda_tr = 0), ``ugan_v1`` (trace head, G variant A "untranslated",
lambda_tr = 1), ``ugan_v2`` (v1 + pixel target prototype, the main UGAN arm). The plan is fixed by
the scale (no grid, so resuming never changes the set of runs): ``small`` trains 3 seeds of StarGAN
and of UGAN v2 and 3 of UGAN v1 as well (paired comparisons need common seeds).

Each run is trained (``train.train``), reloaded from its own folder (``train.load_run``) and evaluated
with frozen evaluators (trained once per process from ``eval.seed``); its record (run name
``<arm>_s<seed>``, arm, seed, metrics, training curve) is appended to ``runs.jsonl`` as soon as it
finishes; a record already there is never recomputed. ``smoke`` writes only to ``runs/smoke/`` and
starts from scratch; ``small`` writes results/small/ (results.json, runs.jsonl, grid figures) and the
run folders to runs/small/<run>/.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from reprokit.config import load_config
from reprokit.runs import read_jsonl

from .config import Cfg

MEMBER = Path(__file__).resolve().parents[2]

ARMS: dict[str, list[str]] = {
    "stargan": ["ugan.lambda_tr=0.0", "ugan.prototype=none"],
    "ugan_v1": ["ugan.lambda_tr=1.0", "ugan.prototype=none", "ugan.g_variant=untranslated"],
    "ugan_v2": ["ugan.lambda_tr=1.0", "ugan.prototype=pixel", "ugan.g_variant=untranslated"],
}
PLANS = {
    "smoke": {"seeds": {"stargan": [0], "ugan_v1": [0], "ugan_v2": [0]}},
    "small": {"seeds": {"stargan": [0, 1, 2], "ugan_v1": [0, 1, 2], "ugan_v2": [0, 1, 2]}},
}


@dataclass(frozen=True)
class RunSpec:
    arm: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.arm}_s{self.seed}"

    def overrides(self) -> list[str]:
        return [*ARMS[self.arm], f"train.seed={self.seed}"]


def plan(scale: str) -> list[RunSpec]:
    return [RunSpec(a, s) for a, seeds in PLANS[scale]["seeds"].items() for s in seeds]


_EVALUATORS: dict[str, dict] = {}


def run_one(cfg_path: str, spec: RunSpec, run_dir: str) -> dict:
    """Train one run, reload it from its folder and evaluate it; returns its runs.jsonl record."""
    from reprokit.config import to_dict

    from .evaluate import evaluate, train_evaluators
    from .train import load_run, train

    run_dir = Path(run_dir)
    cfg = load_config(Cfg, cfg_path, spec.overrides())
    final = train(cfg, run_dir)
    t0 = time.time()
    run = load_run(run_dir)
    key = json.dumps([to_dict(run.cfg)["eval"], to_dict(run.cfg)["model"], to_dict(run.cfg)["data"]], sort_keys=True)
    if key not in _EVALUATORS:
        _EVALUATORS[key] = train_evaluators(run.cfg)
    ev = evaluate(run, run.cfg, grid_path=run_dir / "grid.png", evaluators=_EVALUATORS[key])
    curve = [{"step": r["step"], "loss": r["loss"], "d_loss": r.get("d_loss")}
             for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("split") == "train"]
    return {"run": spec.name, "arm": spec.arm, "seed": spec.seed, **ev, "final_g_loss": final.get("loss"),
            "train_seconds": final["train_seconds"], "eval_seconds": round(time.time() - t0, 1),
            "steps": cfg.train.steps, "curve": curve}


def _execute(cfg_path: Path, specs: list[RunSpec], runs_dir: Path, workers: int, log: Path,
             records: dict[str, dict]) -> None:
    todo = [s for s in specs if s.name not in records]

    def done(rec: dict) -> None:
        records[rec["run"]] = rec
        with open(log, "a") as fh:
            fh.write(json.dumps(rec) + "\n")

    if workers <= 1:
        for s in todo:
            done(run_one(str(cfg_path), s, str(runs_dir / s.name)))
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        futs = [ex.submit(run_one, str(cfg_path), s, str(runs_dir / s.name)) for s in todo]
        for f in as_completed(futs):
            done(f.result())


def run_reproduce(scale: str, out_dir: str | None = None, workers: int = 1) -> Path:
    """Run (or resume) the reproduction at ``scale``; returns the results.json it wrote."""
    from .report import write_report

    if scale not in PLANS:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(PLANS)}")
    t_start = time.time()
    cfg_path = MEMBER / "configs" / f"{scale}.yaml"
    base = load_config(Cfg, str(cfg_path), [])
    if out_dir is not None:
        out = runs_dir = Path(out_dir)
    elif scale == "small":
        out, runs_dir = MEMBER / "results" / "small", MEMBER / "runs" / "small"
    else:
        out = runs_dir = MEMBER / "runs" / scale
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.jsonl"
    specs = plan(scale)
    if scale == "smoke":
        log.unlink(missing_ok=True)
        for s in specs:
            shutil.rmtree(runs_dir / s.name, ignore_errors=True)
    records = {r["run"]: r for r in read_jsonl(log)} if log.is_file() else {}
    _execute(cfg_path, specs, runs_dir, workers, log, records)
    return write_report(scale, out, runs_dir, [records[s.name] for s in specs], base,
                        wall_time_s=time.time() - t_start, render=scale == "small" and out_dir is None)
