"""The reproduction plan: arms, sizes, and per scale one ``reprokit.plan.Group`` (LR grid, extensions until the
optimum is bracketed, seeds, secondary arms at their family's LR), plus the small numeric helpers the report
shares (line fit, flattening).

See ``reproduce.py`` for the execution and ``report.py`` for the verdicts.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from reprokit.config import load_config
from reprokit.plan import Group

from .config import Cfg

PKG_DIR = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Arm:
    """One model variant: its run-name stem, its role in the plan and the config keys it sets."""

    name: str
    role: str                          # baseline | main | a1 | deep | hierarchy | ot
    family: str                        # whose chosen LR it uses: "base" or "oe"
    keys: tuple[tuple[str, object], ...]

    def overrides(self) -> list[str]:
        return [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in self.keys]


def _oe_keys(n: int, k: int, m: int, unigram: bool = True, mtp: int = 0) -> tuple:
    return (("model.oe.enabled", True), ("model.oe.n", n), ("model.oe.k", k), ("model.oe.m", m),
            ("model.oe.unigram", unigram), ("model.mtp.heads", mtp))


def arm_baseline(depth: int | None = None) -> Arm:
    keys = (("model.oe.enabled", False), ("model.mtp.heads", 0))
    if depth is None:
        return Arm("base", "baseline", "base", keys)
    return Arm(f"base-d{depth}", "deep", "base", keys + (("model.depth", depth),))


def arm_oe(n: int, k: int, m: int, role: str = "main", unigram: bool = True, mtp: int = 0) -> Arm:
    name = f"{'ot' if mtp else 'oe'}-n{n}k{k}-m{m}" + ("" if unigram else "-no1g")
    return Arm(name, role, "oe", _oe_keys(n, k, m, unigram, mtp))


# The sizes of each scale; ``plan_group`` turns one into the ``reprokit.plan.Group`` that schedules its runs.
# ``lr_grid`` (ratio x2, the ratio of reprokit's extensions) is tried by the baseline and the main OE arm, seed 0,
# extended beyond an edge until the best validation loss is bracketed (at most ``max_extensions`` times).
PLANS: dict[str, dict] = {
    # seconds: synthetic tokens (V = 64), the tiny model of configs/smoke.yaml
    "smoke": {"config": "smoke.yaml", "lr_grid": [5e-3, 1e-2], "max_extensions": 2, "seeds": [0, 1],
              "a1_seeds": [0], "main": (3, 1, 257), "a1_m": [65, 257, 1025], "hierarchy_m": 257, "deep": 4,
              "mtp_weight": 0.1,
              "train": ["train.steps=12", "train.eval_every=3", "train.ckpt_every=6", "train.log_every=2"]},
    # the CPU reproduction: Brown + GCIDE + Austen, BPE 2048; sizing in configs/small.yaml and the README
    # (A1 at one seed: its effects are 5-20x the seed noise of the st1400 run, and a second seed would not fit)
    "small": {"config": "small.yaml", "lr_grid": [3e-3, 6e-3, 1.2e-2], "max_extensions": 2, "seeds": [0, 1, 2],
              "a1_seeds": [0], "main": (3, 1, 65537), "a1_m": [1025, 4097, 16385, 65537, 262145],
              "hierarchy_m": 65537, "deep": 4, "mtp_weight": 0.1, "train": []},
}


def plan_arms(plan: dict) -> dict[str, Arm]:
    """Report key (``base``, ``main``, ``a1:<m>``, ``deep``, ``hierarchy``, ``ot``) -> arm."""
    n, k, m = plan["main"]
    arms = {"base": arm_baseline(), "main": arm_oe(n, k, m)}
    for mm in plan["a1_m"]:
        arms[f"a1:{mm}"] = arm_oe(2, 1, mm, role="a1")
    arms["deep"] = arm_baseline(plan["deep"])
    arms["hierarchy"] = arm_oe(2, 1, plan["hierarchy_m"], role="hierarchy", unigram=False)
    arms["ot"] = arm_oe(n, k, m, role="ot", mtp=1)
    names = [a.name for a in arms.values()]
    if len(set(names)) != len(names):
        raise ValueError(f"two arms of the plan share a run-name stem: {names}")
    return arms


def arms_by_name(plan: dict) -> dict[str, Arm]:
    """Run-name stem (the ``reprokit.plan`` arm name, ``Job.arm``) -> arm."""
    return {a.name: a for a in plan_arms(plan).values()}


@functools.cache
def plan_group(scale: str) -> Group:
    """The plan of ``scale`` as one ``reprokit.plan.Group`` (arm names = run-name stems, ``Arm.name``):

    * grid arms, also the seed arms (every seed of ``seeds`` at their chosen LR): the baseline and the main OE
      arm, each on ``lr_grid`` (seed 0) extended until its best validation loss is bracketed;
    * secondary arms at the chosen LR of their family's grid arm: the A1 sweep (OE family, the seeds of
      ``a1_seeds``), the deeper baseline (baseline family), the hierarchy row and OT (OE family), seed 0;
    * the budget tag ``st<steps>`` in every run name, so a run of another budget is never taken for these.
    """
    plan = PLANS[scale]
    arms = plan_arms(plan)
    grid = {"base": arms["base"].name, "oe": arms["main"].name}   # family -> its grid arm
    # longest runs first (the deeper model, then the biggest tables), so the last ones to start are short
    side = sorted((a for key, a in arms.items() if key not in ("base", "main")),
                  key=lambda a: (a.role != "deep", -dict(a.keys).get("model.oe.m", 0)))
    return Group(name="", lr_grid=tuple(plan["lr_grid"]), grid_arms=(grid["base"], grid["oe"]),
                 select_by="val_loss", seeds=tuple(plan["seeds"]), seed_arms=(grid["base"], grid["oe"]),
                 secondary={a.name: grid[a.family] for a in side},
                 secondary_seeds={a.name: tuple(plan["a1_seeds"]) for a in side if a.role == "a1"},
                 max_extensions=plan["max_extensions"], tag=f"st{base_config(scale).train.steps}")


def base_config(scale: str) -> Cfg:
    plan = PLANS[scale]
    return load_config(Cfg, PKG_DIR / "configs" / plan["config"], list(plan["train"]))


def job_config(plan: dict, arm: Arm, lr: float, seed: int) -> Cfg:
    """The config of one run: the plan's base config and overrides, then the arm's keys, LR and seed."""
    over = arm.overrides() + [f"train.lr={lr}", f"train.seed={seed}"]
    if arm.role == "ot":
        over.append(f"model.mtp.weight={plan['mtp_weight']}")
    return load_config(Cfg, PKG_DIR / "configs" / plan["config"], list(plan["train"]) + over)


def tokens_per_param(rec: dict) -> float:
    m = rec["metrics"]
    return m["tokens"] / max(m["params_non_embedding"], 1)


def flattening_pct(rec: dict) -> float | None:
    """Relative improvement (%) of the validation-subset loss over the last quarter of training."""
    val = dict(rec["val_curve"])
    steps = rec["metrics"]["steps"]
    q3 = int(round(0.75 * steps))
    if q3 not in val or steps not in val:
        return None
    return 100.0 * (val[q3] - val[steps]) / val[q3]


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = a + b x: (a, b, R^2)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    b = sxy / sxx if sxx else 0.0
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    return a, b, r2
