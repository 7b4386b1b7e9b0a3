"""``racedit reproduce --scale smoke|small``: the plan (which runs) and its execution.

The plan (``reprokit.plan``; root README "A judgeable small reproduction"), a pure function of the scale and
the finished records:

1. an LR grid for the dense baseline and for Race (seed 0), each extended beyond an edge until its best LR on
   the *validation* images (``val_loss``; never the test images the claims are judged on) is bracketed
   (at most ``max_extensions`` times);
2. the further seeds of the arms of the main claims (dense, token choice, expert choice, Race, Race + RSL) at
   their LR -- TC, EC and Race + RSL at Race's;
3. the secondary arms at 1 seed, at Race's LR: the rest of Table 1's routing x gating grid, the RSL and PLR
   weights on a 3-point grid each, Race + RSL + PLR.

Every run is trained (``train.train``), reloaded from its own folder (``train.load_run``) and evaluated; its
record (run name carrying every varying key and the budget tag, e.g. ``race_st1600_lr0.002_s1``, arm, lr, seed,
the evaluation metrics, the logged train and validation curves) is appended to ``runs.jsonl`` as soon as it
finishes. A record already there is never recomputed: an interrupted reproduction resumes with the missing
runs. ``report.py`` turns the records into results.json, tables, claims, figures and (small only) the README.

Where things go: ``small`` writes ``results/small/`` (results.json, runs.jsonl, figures; committed)
and the run folders (checkpoints) to ``runs/small/<run name>/``; ``smoke`` writes everything to
``runs/smoke/`` (ignored) and always starts from scratch; ``--out-dir X`` puts everything under X.
"""
from __future__ import annotations

import functools
import json
import shutil
import time
from pathlib import Path

from reprokit.config import ConfigError, load_config
from reprokit.plan import Group, Job, planned_jobs, run_jobs
from reprokit.runs import read_jsonl

from .config import Cfg

MEMBER = Path(__file__).resolve().parents[2]


def _losses(rsl: float = 0.0, plr: float = 0.0, bal: float = 0.0) -> list[str]:
    return [f"loss.rsl_weight={rsl}", f"loss.plr_weight={plr}", f"loss.balance_weight={bal}"]


def _moe(routing: str, gating: str) -> list[str]:
    return ["model.moe.enabled=true", f"model.moe.routing={routing}", f"model.moe.gating={gating}"]


_RACE = _moe("race", "identity")
ARMS: dict[str, list[str]] = {
    "dense": ["model.moe.enabled=false", *_losses()],
    # the main comparison of Table 1 (each routing with the gating the paper pairs it with)
    "tc": [*_moe("tc", "softmax"), *_losses(bal=0.01)],
    "ec": [*_moe("ec", "identity"), *_losses()],
    "race": [*_RACE, *_losses()],
    # Table 3: router similarity loss, per-layer regularisation, both
    "race_rsl": [*_RACE, *_losses(rsl=0.01)],
    "race_plr": [*_RACE, *_losses(plr=0.1)],
    "race_full": [*_RACE, *_losses(rsl=0.01, plr=0.1)],
    # the weights on a 3-point grid (the middle points are race_rsl / race_plr)
    "race_rsl0.003": [*_RACE, *_losses(rsl=0.003)],
    "race_rsl0.03": [*_RACE, *_losses(rsl=0.03)],
    "race_plr0.03": [*_RACE, *_losses(plr=0.03)],
    "race_plr0.3": [*_RACE, *_losses(plr=0.3)],
    # the rest of Table 1's routing x gating grid
    "tc_sigmoid": [*_moe("tc", "sigmoid"), *_losses(bal=0.01)],
    "tc_identity": [*_moe("tc", "identity"), *_losses(bal=0.01)],
    "ec_softmax": [*_moe("ec", "softmax"), *_losses()],
    "ec_sigmoid": [*_moe("ec", "sigmoid"), *_losses()],
    "race_softmax": [*_moe("race", "softmax"), *_losses()],
    "race_sigmoid": [*_moe("race", "sigmoid"), *_losses()],
}
SECONDARY = ["race_plr", "race_full", "race_rsl0.003", "race_rsl0.03", "race_plr0.03", "race_plr0.3",
             "tc_sigmoid", "tc_identity", "ec_softmax", "ec_sigmoid", "race_softmax", "race_sigmoid"]
PLANS = {
    "smoke": Group(name="", lr_grid=(1e-3, 2e-3), grid_arms=("dense", "race"), select_by="val_loss",
                   seeds=(0, 1), seed_arms=("race",), secondary={"tc": "race"}, max_extensions=0),
    # sized from measured step times (README "Reproduction"): ~32 runs of ~8 worker-minutes, 2 workers
    "small": Group(name="", lr_grid=(1e-3, 2e-3, 4e-3), grid_arms=("dense", "race"), select_by="val_loss",
                   seeds=(0, 1, 2), seed_arms=("dense", "race", "tc", "ec", "race_rsl"),
                   secondary={"tc": "race", "ec": "race", "race_rsl": "race", **dict.fromkeys(SECONDARY, "race")},
                   # 4 extensions: at 1600 steps the dense optimum sat above 8e-3 (1e-3 .. 1.6e-2 all improved)
                   max_extensions=4, tag="st1600"),
}


def _spec_overrides(job: Job) -> list[str]:
    return [*ARMS[job.arm], f"train.lr={job.lr}", f"train.seed={job.seed}"]


def run_one(cfg_path: str, spec: Job, run_dir: str) -> dict:
    """Train one run, reload it from its folder and evaluate it; returns its runs.jsonl record."""
    from reprokit.results import environment_info

    from .evaluate import evaluate
    from .train import load_run, train

    run_dir = Path(run_dir)
    cfg = load_config(Cfg, cfg_path, _spec_overrides(spec))
    final = train(cfg, run_dir)
    t0 = time.time()
    run = load_run(run_dir)
    ev = evaluate(run.model, run.diffusion, run.cfg, grid_path=run_dir / "samples_grid.png")
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    # a resumed run re-logs the steps it redid: the last record of a step counts
    curve = sorted({r["step"]: {"step": r["step"], "loss": r["loss"]} for r in metrics
                    if r.get("split") == "train"}.values(), key=lambda r: r["step"])
    val_curve = sorted({r["step"]: {"step": r["step"], "val_loss": r["val_loss"]} for r in metrics
                        if r.get("split") == "val"}.values(), key=lambda r: r["step"])
    return {"run": spec.name, "arm": spec.arm, "lr": spec.lr, "seed": spec.seed, "tag": spec.tag, **ev,
            "final_train_loss": final.get("loss"), "train_seconds": final["train_seconds"],
            "eval_seconds": round(time.time() - t0, 1), "steps": cfg.train.steps,
            "provenance": f"racedit template code, git {environment_info()['git_commit']}", "curve": curve,
            "val_curve": val_curve}


def _job_runner(cfg_path: str, runs_dir: str):
    return functools.partial(_run_job, cfg_path, runs_dir)


def _run_job(cfg_path: str, runs_dir: str, job: Job) -> dict:
    return run_one(cfg_path, job, str(Path(runs_dir) / job.name))


def run_reproduce(scale: str, out_dir: str | None = None, workers: int = 1) -> Path:
    """Run (or resume) the reproduction at ``scale``; returns the results.json it wrote."""
    from .report import write_report

    if scale not in PLANS:
        raise ConfigError(f"unknown scale {scale!r}; valid: {', '.join(PLANS)}")
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
        for d in runs_dir.glob("*_lr*_s*"):
            if d.is_dir():
                shutil.rmtree(d)
    group = PLANS[scale]
    group.check_budget(base.train.steps, str(cfg_path))
    before = {r["run"] for r in read_jsonl(log)} if log.is_file() else set()
    from_scratch = not before & {j.name for j in planned_jobs([group], read_jsonl(log) if log.is_file() else [])}
    records = run_jobs([group], log, _job_runner(str(cfg_path), str(runs_dir)), workers=workers)
    plan = group.summary(records)
    plan["chosen_lr"] = plan["chosen_lrs"].get("race")
    wall = record_invocation(out / "wall_time.json", time.time() - t_start, len(records), from_scratch,
                             keep=scale != "smoke")
    return write_report(scale, out, runs_dir, records, plan, base, ARMS,
                        wall_time_s=wall, render=scale == "small" and out_dir is None)


def record_invocation(path: Path, elapsed_s: float, n_runs: int, from_scratch: bool, keep: bool = True) -> float:
    """Append this invocation to ``wall_time.json`` (kept across resumptions when ``keep``) and return the summed
    wall time of the invocations since the last one that started from scratch: the plan's from-scratch wall
    time once it has finished (resumptions add up; runs lost to an interruption are included)."""
    inv = json.loads(path.read_text())["invocations"] if (keep and path.is_file()) else []
    inv.append({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "elapsed_s": round(elapsed_s, 1),
                "runs_recorded": n_runs, "from_scratch": from_scratch})
    path.write_text(json.dumps({"invocations": inv}, indent=1) + "\n")
    start = max((i for i, v in enumerate(inv) if v["from_scratch"]), default=0)
    return round(sum(v["elapsed_s"] for v in inv[start:]), 1)
