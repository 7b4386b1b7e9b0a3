"""``racedit reproduce --scale smoke|small``: the plan (which runs) and its execution.

Plan (a pure function of the scale and the base-grid results):

1. the base grid: a learning-rate grid for the dense and the Race arm (seed 0);
2. the LR with the lowest mean held-out loss over those two arms (decided from the base-grid records
   only, so resuming never changes the set of runs) is used for every arm: token choice (softmax +
   Switch balance loss), expert choice, Race, Race + RSL, Race + PLR and Race + both, with extra
   seeds for TC, EC and Race.

Every run is trained (``train.train``), reloaded from its own folder (``train.load_run``) and
evaluated; its record (run name carrying every varying key, e.g. ``race_lr0.002_s1``, arm, lr, seed,
the evaluation metrics and the logged training curve) is appended to ``runs.jsonl`` as soon as it
finishes. A record already there is never recomputed: an interrupted reproduction resumes with the
missing runs. ``report.py`` turns the records into results.json, tables, claims, figures and (small
only) the README.

Where things go: ``small`` writes ``results/small/`` (results.json, runs.jsonl, figures; committed)
and the run folders (checkpoints) to ``runs/small/<run name>/``; ``smoke`` writes everything to
``runs/smoke/`` (ignored) and always starts from scratch; ``--out-dir X`` puts everything under X.
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


def _losses(rsl: float = 0.0, plr: float = 0.0, bal: float = 0.0) -> list[str]:
    return [f"loss.rsl_weight={rsl}", f"loss.plr_weight={plr}", f"loss.balance_weight={bal}"]


_RACE = ["model.moe.enabled=true", "model.moe.routing=race", "model.moe.gating=identity"]
ARMS: dict[str, list[str]] = {
    "dense": ["model.moe.enabled=false", *_losses()],
    "tc": ["model.moe.enabled=true", "model.moe.routing=tc", "model.moe.gating=softmax", *_losses(bal=0.01)],
    "ec": ["model.moe.enabled=true", "model.moe.routing=ec", "model.moe.gating=identity", *_losses()],
    "race": [*_RACE, *_losses()],
    "race_rsl": [*_RACE, *_losses(rsl=0.01)],
    "race_plr": [*_RACE, *_losses(plr=0.1)],
    "race_full": [*_RACE, *_losses(rsl=0.01, plr=0.1)],
}
PLANS = {
    "smoke": {"lr_grid": [1e-3], "grid_arms": ["dense", "race"], "extra_seeds": {"race": [1]}},
    "small": {"lr_grid": [5e-4, 1e-3, 2e-3, 4e-3, 8e-3], "grid_arms": ["dense", "race"],
              "extra_seeds": {"tc": [1], "ec": [1], "race": [1]}},
}


@dataclass(frozen=True)
class RunSpec:
    arm: str
    lr: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.arm}_lr{self.lr:g}_s{self.seed}"

    def overrides(self) -> list[str]:
        return [*ARMS[self.arm], f"train.lr={self.lr}", f"train.seed={self.seed}"]


def grid_runs(scale: str) -> list[RunSpec]:
    p = PLANS[scale]
    return [RunSpec(arm, lr, 0) for lr in p["lr_grid"] for arm in p["grid_arms"]]


def chosen_lr(scale: str, records: dict[str, dict]) -> float:
    """The grid LR with the lowest mean held-out loss over the grid arms (base-grid records only)."""
    p = PLANS[scale]

    def mean_loss(lr: float) -> float:
        return sum(records[RunSpec(a, lr, 0).name]["heldout_loss"] for a in p["grid_arms"]) / len(p["grid_arms"])

    return min(p["lr_grid"], key=mean_loss)


def arm_runs(scale: str, lr: float) -> list[RunSpec]:
    extra = PLANS[scale]["extra_seeds"]
    return [RunSpec(arm, lr, seed) for arm in ARMS for seed in [0, *extra.get(arm, [])]]


def run_one(cfg_path: str, spec: RunSpec, run_dir: str) -> dict:
    """Train one run, reload it from its folder and evaluate it; returns its runs.jsonl record."""
    from reprokit.results import environment_info

    from .evaluate import evaluate
    from .train import load_run, train

    run_dir = Path(run_dir)
    cfg = load_config(Cfg, cfg_path, spec.overrides())
    final = train(cfg, run_dir)
    t0 = time.time()
    run = load_run(run_dir)
    ev = evaluate(run.model, run.diffusion, run.cfg, grid_path=run_dir / "samples_grid.png")
    curve = [{"step": r["step"], "loss": r["loss"]} for r in read_jsonl(run_dir / "metrics.jsonl")
             if r.get("split") == "train"]
    return {"run": spec.name, "arm": spec.arm, "lr": spec.lr, "seed": spec.seed, **ev,
            "final_train_loss": final.get("loss"), "train_seconds": final["train_seconds"],
            "eval_seconds": round(time.time() - t0, 1), "steps": cfg.train.steps,
            "provenance": f"racedit template code, git {environment_info()['git_commit']}", "curve": curve}


def _execute(cfg_path: Path, specs: list[RunSpec], runs_dir: Path, workers: int, log: Path,
             records: dict[str, dict]) -> None:
    """Run the specs without a record, in ``workers`` processes (one torch thread each) when > 1;
    each finished record is appended to ``log`` at once."""
    todo = [s for s in dict.fromkeys(specs) if s.name not in records]
    if not todo:
        return

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
    if scale == "smoke":  # seconds: always from scratch (only the long scales resume from runs.jsonl)
        log.unlink(missing_ok=True)
        for s in [*grid_runs(scale), *arm_runs(scale, PLANS[scale]["lr_grid"][0])]:
            shutil.rmtree(runs_dir / s.name, ignore_errors=True)
    records = {r["run"]: r for r in read_jsonl(log)} if log.is_file() else {}

    _execute(cfg_path, grid_runs(scale), runs_dir, workers, log, records)
    lr = chosen_lr(scale, records)
    _execute(cfg_path, arm_runs(scale, lr), runs_dir, workers, log, records)

    plan = {**PLANS[scale], "chosen_lr": lr,
            "runs": [s.name for s in dict.fromkeys([*grid_runs(scale), *arm_runs(scale, lr)])]}
    return write_report(scale, out, runs_dir, [records[n] for n in plan["runs"]], plan, base, ARMS,
                        wall_time_s=time.time() - t_start, render=scale == "small" and out_dir is None)
