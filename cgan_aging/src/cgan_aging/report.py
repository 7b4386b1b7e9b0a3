"""From the runs' records to results.json: per-arm summary, validity floors, the pre-registered
claims (``reprokit.claims``), tables, curves and progression grids, the README re-render (small only).

Validity first (notes §6.3, conventions "a judgeable small reproduction"): the frozen evaluators must
pass their floors (age-group classifier, age regressor, identity embedding, aging-parameter
regressor), and the age-only baseline must already produce faces that the age-group classifier
accepts as the *target* group at ``BASELINE_AGE_ACC_FLOOR`` (mean over seeds). A missed floor makes
every claim "not testable at this budget".

Claims (pre-registered, paired per-seed improvements against the seed noise):
1. ``gt_error``: C-GAN better than the baseline on ground-truth pixel L1 *and* aging-parameter error;
2. ``age_acc``: C-GAN's target-group accuracy equal or better (not worse, margin 0.02);
3. ``verification``: cross-age verification AUC with C-GAN augmentation >= with baseline
   augmentation (not worse) and baseline augmentation > none (better).
FID*/KID*, feature distance, smoothness and identity preservation are reported, not claimed.

Each arm is reported (and compared) at its own chosen LR (``plan["chosen_lrs"]``: the baseline and C-GAN
from their grids on the validation identities, ``cgan_noneg`` at C-GAN's); the LR table lists every LR
tried by a grid arm (seed 0) with the selection metric, the chosen LR and whether it is bracketed.

Diverged runs (``reprokit.plan.diverged_record``: training raised on a non-finite loss; no metrics) count for the
plan (the LR choice ranks them last) but never for a metric: the summary, floors, claims, curves and grids read
``trained(records)`` only, so an arm that lost a seed is judged on the seeds that trained. The LR table shows a
diverged run as ``diverged``; results.json lists them (``diverged_runs``) and the main table's caption names the
ones at an arm's chosen LR.
"""

from __future__ import annotations

import math
import shutil
import statistics
from pathlib import Path

from reprokit.claims import combine, floor_check, judge, paired_improvements, seed_noise
from reprokit.config import to_dict
from reprokit.plan import bracketed_note, is_diverged, lr_grid_rows, metric_cell, selection_rule, trained
from reprokit.results import render_readme, write_results

from .config import Cfg

MEMBER = Path(__file__).resolve().parents[2]
TITLES = {"baseline": "age-only cGAN (D_age only)", "cgan": "C-GAN (D_age + D_trans)",
          "cgan_noneg": "C-GAN w/o different-person negatives"}
METRICS = ["age_acc", "age_mae", "gt_l1", "gt_feat", "param_mae", "monotone_frac", "id_cos", "id_auc",
           "fid", "kid", "verif_auc_aug", "verif_gain"]
LOWER = {"gt_l1": True, "param_mae": True, "age_acc": False, "verif_auc_aug": False}
BASELINE_AGE_ACC_FLOOR = 0.70


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _per_seed(recs: list[dict], arm: str, key: str) -> dict[int, float]:
    return {int(r["seed"]): r[key] for r in recs if r["arm"] == arm and _finite(r.get(key))}


def _ms(vals) -> str:
    v = [float(x) for x in vals if _finite(x)]
    if not v:
        return "n/a"
    return f"{statistics.fmean(v):.3f} ± {statistics.stdev(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def _floors(recs: list[dict]) -> list[dict]:
    base = [r for r in recs if r["arm"] == "baseline"]
    acc = [r["age_acc"] for r in base if _finite(r.get("age_acc"))]
    seeds = f"{len(acc)} seed{'s' if len(acc) != 1 else ''}"
    out = [{**floor_check("baseline_target_group_acc", statistics.fmean(acc) if acc else None, BASELINE_AGE_ACC_FLOOR),
            "arm": f"{TITLES['baseline']}, mean of {seeds}"}]
    for r in recs[:1]:   # the frozen evaluators' own floors (same evaluators for every run)
        out += [{**f, "arm": "frozen evaluators"} for f in r.get("floors", [])]
    return out


def _claims(recs: list[dict], floors: list[dict]) -> list[dict]:
    ok = all(f["ok"] for f in floors)
    note = "; ".join(f"{f['metric']} {f['value'] if f['value'] is None else round(f['value'], 3)} "
                     f"{'met' if f['ok'] else 'missed'} {f['direction']} {f['floor']}" for f in floors)

    def v(a, r, lower, expect, margin=0.0):
        return judge(paired_improvements(a, r, lower_is_better=lower), seed_noise([a, r]), expect, margin,
                     floor_ok=ok, floor_note=f"not testable at this budget: {note}")

    def arm(name, key):
        return _per_seed(recs, name, key)

    out = []
    vs = [("GT L1", v(arm("cgan", "gt_l1"), arm("baseline", "gt_l1"), True, "better")),
          ("aging-param MAE", v(arm("cgan", "param_mae"), arm("baseline", "param_mae"), True, "better"))]
    out.append({"id": "gt_error", "claim": "C-GAN beats the age-only cGAN on ground-truth error and aging-parameter "
                "error", "paper_ref": "abstract (transition patterns); tables not transcribed",
                "status": combine(x for _, x in vs), "evidence": "; ".join(f"{n}: {x.text()}" for n, x in vs)})
    x = v(arm("cgan", "age_acc"), arm("baseline", "age_acc"), False, "not_worse", 0.02)
    out.append({"id": "age_acc", "claim": "C-GAN target-group accuracy equal or better (within 2 points)",
                "paper_ref": "not transcribed", "status": x.status, "evidence": x.text()})
    none = {s: r["verif_auc_none"] for s, r in ((int(r["seed"]), r) for r in recs if r["arm"] == "baseline")
            if _finite(r.get("verif_auc_none"))}
    vs = [("C-GAN aug vs baseline aug", v(arm("cgan", "verif_auc_aug"), arm("baseline", "verif_auc_aug"), False,
                                          "not_worse")),
          ("baseline aug vs none", v(arm("baseline", "verif_auc_aug"), none, False, "better"))]
    out.append({"id": "verification", "claim": "Cross-age verification: C-GAN augmentation >= baseline augmentation "
                "> none", "paper_ref": "abstract (verification gain); table not transcribed",
                "status": combine(x for _, x in vs), "evidence": "; ".join(f"{n}: {x.text()}" for n, x in vs)})
    return out


def at_chosen_lrs(recs: list[dict], lrs: dict[str, float]) -> list[dict]:
    """The records of each arm at its chosen LR (the runs every table row, floor and claim reads)."""
    return [r for r in recs if r["arm"] in lrs and math.isclose(float(r["lr"]), lrs[r["arm"]])]


def lr_table(all_recs: list[dict], plan: dict) -> dict:
    """Every LR tried by a grid arm (seed 0): the selection metric on the validation identities (and the
    validation target-group accuracy), the chosen LR marked, bracketed yes/no per arm."""
    sel, arms, lrs = plan["select_by"], plan["grid_arms"], plan.get("chosen_lrs", {})
    rows = lr_grid_rows(all_recs, arms, plan["lr_grid"], lrs, metric_cell(sel, note=("val_age_acc", "acc.")))
    br = plan.get("bracketed", {})
    return {"columns": ["lr (G and D)", *[f"{TITLES[a]}: {sel}" for a in arms]], "rows": rows,
            "caption": f"seed 0; {sel} (ground-truth pixel L1, lower is better) and target-group accuracy on the "
                       f"validation identities (never the test identities of the claims); {selection_rule(plan)}; "
                       + bracketed_note(arms, br)}


def write_report(scale: str, out: Path, runs_dir: Path, all_recs: list[dict], plan: dict, base: Cfg,
                 wall_time_s: float, render: bool) -> Path:
    """results.json (+ curves, grids) in ``out`` from the records of the plan's runs (``all_recs``: the LR
    grid too, diverged runs included); every arm at its chosen LR, from the runs that trained. The README is
    re-rendered when ``render``."""
    from reprokit.plots import plot_curves

    lrs = plan.get("chosen_lrs", {})
    recs = at_chosen_lrs(trained(all_recs), lrs)
    lost = [r["run"] for r in at_chosen_lrs(all_recs, lrs) if is_diverged(r)]
    arms_present = [a for a in TITLES if any(r["arm"] == a for r in recs)]
    rows, summary = [], {}
    for a in arms_present:
        rs = [r for r in recs if r["arm"] == a]
        summary[a] = {"lr": lrs[a], "seeds": sorted(int(r["seed"]) for r in rs),
                      **{m: [r.get(m) for r in rs] for m in METRICS}}
        rows.append([TITLES[a], f"{lrs[a]:g}", len(rs), *(_ms(summary[a][m]) for m in METRICS)])
    floors = _floors(recs)
    claims = _claims(recs, floors)
    none = [r.get("verif_auc_none") for r in recs[:1]]
    tables = {"main": {"columns": ["arm", "lr", "seeds", "age acc.", "age MAE", "GT L1", "GT feat. dist.",
                                   "aging-param MAE", "monotone frac.", "id cos", "id AUC", "FID*", "KID*",
                                   "verif. AUC (aug)", "verif. gain"],
                       "rows": rows,
                       "caption": f"ProcAging, mean ± std over seeds; verification AUC without augmentation "
                                  f"{_ms(none)}; FID*/KID* use the frozen age-group classifier's features "
                                  "(non-standard, not Inception); ages in [0, 1]; test identities; each arm "
                                  "at its chosen LR"
                                  + (f"; diverged (non-finite loss; not counted): {', '.join(lost)}" if lost else "")},
              "lr_grid": lr_table(all_recs, plan)}
    curves = [(r["run"], r["curve"]) for r in recs if r.get("curve")]
    if curves:
        plot_curves({n: c for n, c in curves}, x="step", ys=["loss"], out=str(out / "curves.png"),
                    title="generator loss")
    for r in recs:   # progression grids next to results (small only: committed)
        g = runs_dir / r["run"] / "grid.png"
        if g.is_file() and out != runs_dir:
            shutil.copy(g, out / f"grid_{r['run']}.png")
    path = out / "results.json"
    write_results(path, paper="cgan_aging", scale=scale, arms=summary, tables=tables, claims=claims, floors=floors,
                  protocol={"arms": list(arms_present), "steps": base.train.steps,
                            "plan": {k: v for k, v in plan.items() if k != "runs"}, "planned_runs": plan.get("runs"),
                            "selection": f"{selection_rule(plan)}, on the validation identities (data.num_val); "
                                         "every reported metric and claim on the test identities",
                            "image_size": base.model.image_size, "num_groups": base.model.num_groups,
                            "baseline_age_acc_floor": BASELINE_AGE_ACC_FLOOR,
                            "wall_time": "summed over this plan's invocations (wall_time.json beside this file)"},
                  config=to_dict(base), seeds=sorted({int(r["seed"]) for r in recs}), wall_time_s=wall_time_s,
                  extra={"diverged_runs": [r["run"] for r in all_recs if is_diverged(r)]})
    if render:
        render_readme(MEMBER, write=True)
    return path
