"""The reproduction plan: arms, LR grids, seeds, and which runs each stage holds (a pure function of the
recorded base-grid results), plus the small numeric helpers the report shares (line fit, flattening).

See ``reproduce.py`` for the execution and ``report.py`` for the verdicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from reprokit.config import load_config

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


PLANS: dict[str, dict] = {
    # seconds: synthetic tokens (V = 64), the tiny model of configs/smoke.yaml
    "smoke": {"config": "smoke.yaml", "lr_grid": [5e-3, 1e-2], "seeds": [0, 1], "a1_seeds": [0], "main": (3, 1, 257),
              "a1_m": [65, 257, 1025], "hierarchy_m": 257, "deep": 4, "mtp_weight": 0.1,
              "train": ["train.steps=12", "train.eval_every=3", "train.ckpt_every=6", "train.log_every=2"]},
    # the CPU reproduction: Brown + BPE 2048; sizing in configs/small.yaml and the README
    "small": {"config": "small.yaml", "lr_grid": [3e-3, 6e-3, 1.2e-2], "seeds": [0, 1, 2], "a1_seeds": [0, 1],
              "main": (3, 1, 65537), "a1_m": [1025, 4097, 16385, 65537, 262145], "hierarchy_m": 65537,
              "deep": 4, "mtp_weight": 0.1, "train": []},
}


def plan_arms(plan: dict) -> dict[str, Arm]:
    n, k, m = plan["main"]
    arms = {"base": arm_baseline(), "main": arm_oe(n, k, m)}
    for mm in plan["a1_m"]:
        arms[f"a1:{mm}"] = arm_oe(2, 1, mm, role="a1")
    arms["deep"] = arm_baseline(plan["deep"])
    arms["hierarchy"] = arm_oe(2, 1, plan["hierarchy_m"], role="hierarchy", unigram=False)
    arms["ot"] = arm_oe(n, k, m, role="ot", mtp=1)
    return arms


def run_name(arm: Arm, lr: float, seed: int) -> str:
    return f"{arm.name}_lr{lr:g}_s{seed}"


def base_config(scale: str) -> Cfg:
    plan = PLANS[scale]
    return load_config(Cfg, PKG_DIR / "configs" / plan["config"], list(plan["train"]))


def job_config(plan: dict, arm: Arm, lr: float, seed: int) -> Cfg:
    """The config of one run: the plan's base config and overrides, then the arm's keys, LR and seed."""
    over = arm.overrides() + [f"train.lr={lr}", f"train.seed={seed}"]
    if arm.role == "ot":
        over.append(f"model.mtp.weight={plan['mtp_weight']}")
    return load_config(Cfg, PKG_DIR / "configs" / plan["config"], list(plan["train"]) + over)


# ---------------------------------------------------------------------------------------------- the plan
def best_lr(records: list[dict], arm_name: str, lrs: list[float] | None = None) -> float | None:
    """The LR of the lowest validation loss among the seed-0 runs of ``arm_name`` (restricted to ``lrs``)."""
    rs = [r for r in records if r["arm"] == arm_name and r["seed"] == 0 and (lrs is None or r["lr"] in lrs)]
    return min(rs, key=lambda r: r["metrics"]["val_loss"])["lr"] if rs else None


def edge_extension(records: list[dict], arm_name: str, grid: list[float]) -> float | None:
    """One LR beyond the edge of ``grid`` where the base-grid optimum of ``arm_name`` sits, else None."""
    b = best_lr(records, arm_name, grid)
    if b is None or len(grid) < 2:
        return None
    g = sorted(grid)
    if b == g[-1]:
        return float(f"{g[-1] * g[-1] / g[-2]:.6g}")
    if b == g[0]:
        return float(f"{g[0] * g[0] / g[1]:.6g}")
    return None


def stage_jobs(scale: str, stage: int, records: list[dict]) -> list[tuple[Arm, float, int]]:
    """Jobs of a stage; stages 1 and 2 are functions of the recorded results of the earlier stages only."""
    plan = PLANS[scale]
    arms = plan_arms(plan)
    grid = list(plan["lr_grid"])
    if stage == 0:
        return [(arms[a], lr, 0) for a in ("base", "main") for lr in grid]
    if stage == 1:
        out = []
        for a in ("base", "main"):
            ext = edge_extension(records, arms[a].name, grid)
            if ext is not None:
                out.append((arms[a], ext, 0))
        return out
    lr = {"base": best_lr(records, arms["base"].name), "oe": best_lr(records, arms["main"].name)}
    jobs = [(arms[a], lr[arms[a].family], s) for a in ("base", "main") for s in plan["seeds"] if s != 0]
    jobs += [(arms[a], lr[arms[a].family], s) for a in arms if a.startswith("a1:") for s in plan["a1_seeds"]]
    jobs += [(arms[a], lr[arms[a].family], 0) for a in ("deep", "hierarchy", "ot")]
    return jobs


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
