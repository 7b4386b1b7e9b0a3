"""``crossparse reproduce --scale smoke|small``: the plan (which runs) and its execution.

Arms (issue 14; notes §6.4): ``source_only`` (it never sees target images, so one run per seed and LR
serves all four targets), and per target ``feature`` (C + D_f + refinement), ``label`` (D_l on softmax),
``full``, ``outspace`` (AdaptSegNet-style output-space adversary: source predictions are "real"),
``oracle`` (target training labels), ``ft<n>`` (the source-only seed-0 run fine-tuned on n labelled
target images, n in {5, 20, 50}). A per-target arm is named ``<arm>-<target>`` in the plan.

The plan (``reprokit.plan``; conventions "A judgeable small reproduction", rule 2), a pure function of
the scale and the finished records -- one :class:`reprokit.plan.Group`:

1. the **parser LR grid** of the source-only arm (seed 0; x0.5, x1, x2 the CPU rate), extended beyond an
   edge (x2 or /2, at most twice) until its best LR on **held-out source-val mIoU** (``source_val_miou``,
   the last step) is strictly inside the LRs tried -- never on target labels;
2. the further source-only seeds and the 3 seeds of ``full`` on every target, at the chosen LR;
3. the 1-seed arms (feature, label, output-space, oracle, fine-tuning; ``SMALL_ONE_SEED``) at the chosen
   LR; the fine-tuning runs start from the source-only seed-0 run *at the chosen LR* (a grid run,
   finished by the time the LR is decided), so they are run first once the LR is decided (:func:`ft_first`).

Every adapted arm, the oracle and the fine-tuning runs use the chosen parser LR (``train.lr``); the
adversarial / C / D rates (``adapt.*_lr``) stay at ``configs/<scale>.yaml``'s values. The main arm has no
grid of its own: its LR could only be chosen on target labels (a grid of the full model chosen on
source-val would not measure adaptation), so the baseline's bracketed LR is used for it -- our reading of
rule 2 for unsupervised domain adaptation.

Run names carry every varying key and the budget tag (``full-indoor_it1500_lr0.001_s1``). Each run is
trained (``train.train``), reloaded from its folder (``train.load_run``) and evaluated on source-val and
every target's test split; its record is appended to ``runs.jsonl`` as soon as it finishes and is never
recomputed; the plan is re-derived after every finished run, so resuming never changes the set of runs.
"""

from __future__ import annotations

import functools
import math
import shutil
import time
from pathlib import Path

from reprokit.config import ConfigError, load_config
from reprokit.plan import Group, Job, bracketed, chosen_lrs, planned_jobs, run_planner_timed, trained
from reprokit.runs import read_jsonl

from .config import TARGETS, Cfg

MEMBER = Path(__file__).resolve().parents[2]

ARMS: dict[str, list[str]] = {
    "source_only": ["adapt.feature=false", "adapt.label=false"],
    "feature": ["adapt.feature=true", "adapt.label=false"],
    "label": ["adapt.feature=false", "adapt.label=true"],
    "full": ["adapt.feature=true", "adapt.label=true"],
    "outspace": ["adapt.feature=false", "adapt.label=true", "adapt.label_real=source_pred"],
    "oracle": ["adapt.feature=false", "adapt.label=false", "adapt.oracle=true"],
    "ft5": ["adapt.feature=false", "adapt.label=false", "adapt.finetune_n=5"],
    "ft20": ["adapt.feature=false", "adapt.label=false", "adapt.finetune_n=20"],
    "ft50": ["adapt.feature=false", "adapt.label=false", "adapt.finetune_n=50"],
}
GRID_ARM = "source_only"
SMALL_ONE_SEED = ("feature", "label", "outspace", "oracle", "ft5", "ft20", "ft50")


def plan_arm(arm: str, target: str) -> str:
    """The plan's name of a per-target arm: ``full-indoor``."""
    return f"{arm}-{target}"


def split_arm(name: str) -> tuple[str, str | None]:
    """``full-indoor`` -> (``full``, ``indoor``); ``source_only`` -> (``source_only``, None)."""
    arm, _, target = name.partition("-")
    if arm not in ARMS or (target and target not in TARGETS) or (arm == GRID_ARM) == bool(target):
        raise ConfigError(f"plan arm {name!r}: expected source_only or <arm>-<target> with arm in "
                          f"{', '.join(ARMS)} and target in {', '.join(TARGETS)}")
    return arm, target or None


def _group(seeds, targets, main, one_seed, lr_grid, max_extensions, tag) -> Group:
    per_target = [plan_arm(a, t) for a in (*main, *one_seed) for t in targets]
    return Group(name="", lr_grid=tuple(lr_grid), grid_arms=(GRID_ARM,), select_by="source_val_miou",
                 maximize=True, seeds=tuple(seeds), seed_arms=(GRID_ARM, *(plan_arm(a, t) for a in main for t in targets)),
                 secondary=dict.fromkeys(per_target, GRID_ARM), max_extensions=max_extensions, tag=tag)


# ``ft_steps``: iterations of a fine-tuning run (it starts from a trained source-only parser), evaluated twice.
# small: sized from measured CPU seconds per step (README "Performance"): 3 + up to 2 grid runs, 2 further
# source-only seeds, 12 full runs, 28 one-seed runs (45-47 runs, ~2.4 h on 2 unloaded cores).
PLANS: dict[str, dict] = {
    "smoke": {"group": _group((0, 1), ("indoor",), ("full",), ("oracle", "ft5"), (1e-3, 2e-3), 0, ""),
              "ft_steps": 4},
    "small": {"group": _group((0, 1, 2), TARGETS, ("full",), SMALL_ONE_SEED, (5e-4, 1e-3, 2e-3), 2, "it1500"),
              "ft_steps": 300},
}


def spec_overrides(job: Job, runs_dir: Path, ft_steps: int, group: Group) -> list[str]:
    """The config overrides of one planned run: the arm's switches, the parser LR, seed, target."""
    arm, target = split_arm(job.arm)
    ov = [*ARMS[arm], f"train.lr={job.lr}", f"train.seed={job.seed}", f"data.target={target or TARGETS[0]}"]
    if arm.startswith("ft"):
        ov += [f"train.init_from={runs_dir / group.job(GRID_ARM, job.lr, 0).name}",
               f"train.steps={ft_steps}", f"train.eval_every={max(1, ft_steps // 2)}",
               f"train.ckpt_every={ft_steps}"]
    return ov


def run_one(cfg_path: str, job: Job, run_dir: str, overrides: list[str]) -> dict:
    """Train one run, reload it from its folder and evaluate it; returns its runs.jsonl record."""
    from .data import load_data
    from .evaluate import evaluate_all, save_overlays
    from .train import load_run, train

    run_dir = Path(run_dir)
    cfg = load_config(Cfg, cfg_path, overrides)
    final = train(cfg, run_dir)
    t0 = time.time()
    run = load_run(run_dir)
    data = load_data(run.cfg)
    ev = evaluate_all(run.parser, data, run.cfg, ("test",))
    save_overlays(run.parser, data, run.cfg, run_dir)
    recs = read_jsonl(run_dir / "metrics.jsonl")
    curve = [{k: r[k] for k in r if k not in ("split", "time")} for r in recs if r.get("split") == "train"]
    eval_curve = [{k: r[k] for k in r if k not in ("split", "time")} for r in recs if r.get("split") == "eval"]
    arm, target = split_arm(job.arm)
    return {"run": job.name, "plan_arm": job.arm, "arm": arm, "target": target, "lr": job.lr, "seed": job.seed,
            "tag": job.tag, "steps": cfg.train.steps, "source_val_miou": ev["source_val"]["miou"], "metrics": ev,
            "final_loss": final.get("loss"), "train_seconds": final["train_seconds"],
            "train_cpu_seconds": final.get("train_cpu_seconds"), "eval_seconds": round(time.time() - t0, 1),
            "curve": curve, "eval_curve": eval_curve}


def ft_first(group: Group, records: list[dict]) -> list[Job]:
    """The plan's jobs (``planned_jobs``, the same set), with the fine-tuning runs moved to the front.

    A fine-tuning run starts from the checkpoint of the source-only seed-0 run at the chosen LR, which lives in
    ``runs/`` (machine-local, never committed). Run right after the LR is decided (a few minutes of cheap
    runs), they no longer depend on that folder still existing when a long reproduction is resumed in a later
    session or on another machine; resuming after they finished needs no checkpoint at all."""
    jobs = planned_jobs([group], records)
    return sorted(jobs, key=lambda j: not split_arm(j.arm)[0].startswith("ft"))   # stable: the rest keep their order


def _run_job(cfg_path: str, runs_dir: str, ft_steps: int, group: Group, job: Job) -> dict:
    """Module level (picklable for the worker processes): the job's overrides, its folder, ``run_one``."""
    ov = spec_overrides(job, Path(runs_dir), ft_steps, group)
    return run_one(cfg_path, job, str(Path(runs_dir) / job.name), ov)


def plan_summary(group: Group, records: list[dict]) -> dict:
    """What the report states about the plan: the grid, the chosen LR, whether it is bracketed, the runs."""
    lrs = chosen_lrs(group, records)
    return {"lr_grid": list(group.lr_grid), "grid_arm": GRID_ARM, "select_by": group.select_by,
            "max_extensions": group.max_extensions, "seeds": list(group.seeds), "seed_arms": list(group.seed_arms),
            "tag": group.tag, "chosen_lr": lrs.get(GRID_ARM), "bracketed": bracketed(group, GRID_ARM, records),
            "runs": [j.name for j in planned_jobs([group], records)]}


def main_records(records: list[dict], chosen_lr: float | None) -> list[dict]:
    """The records the tables and claims use: every arm's trained runs at the chosen parser LR (drops the other
    grid runs and the diverged runs)."""
    return [r for r in trained(records) if chosen_lr is not None and math.isclose(r["lr"], chosen_lr)]


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
    group, ft_steps = PLANS[scale]["group"], PLANS[scale]["ft_steps"]
    if scale == "smoke":  # seconds: always from scratch (only the long scales resume from runs.jsonl)
        log.unlink(missing_ok=True)
        for d in runs_dir.glob("*_lr*_s*"):
            if d.is_dir():
                shutil.rmtree(d)
    runner = functools.partial(_run_job, str(cfg_path), str(runs_dir), ft_steps, group)
    records, wall = run_planner_timed(functools.partial(ft_first, group), group.tag, log, runner, out=out,
                                      t_start=t_start, workers=workers, keep=scale != "smoke")
    plan = plan_summary(group, records)
    return write_report(scale, out, runs_dir, records, plan, base, wall_time_s=wall,
                        render=scale == "small" and out_dir is None)
