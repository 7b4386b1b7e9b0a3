"""From the runs' records to results.json: per-arm summary, validity floors, the pre-registered
claims (``reprokit.claims``), tables, grid figures, and the README re-render (small only).

Validity first (notes §6.2): StarGAN's tracer accuracy must be clearly above chance (>= chance + 0.10)
— otherwise ProcFace does not exhibit source retention at this budget — and StarGAN's target
accuracy must reach 0.90. Either floor missed makes every claim "not testable at this budget".

Claims (paired per-seed improvements against the seed noise):
1. tracer accuracy: UGAN v1 < StarGAN (better), UGAN v2 <= UGAN v1 (not worse);
2. mark retention: the same order;
3. UGAN v2 target accuracy within 2 points of StarGAN or better (not worse, margin 0.02).
FID*/KID* (non-standard features) and cycle L1 are reported, not claimed.

Each arm is reported (and compared) at its own chosen LR (``plan["chosen_lrs"]``: StarGAN and UGAN v2
from their grids on the validation identities, UGAN v1 at UGAN v2's); the LR table lists every LR tried
by a grid arm (seed 0) with the selection metric, the chosen LR and whether it is bracketed.

Diverged runs (``reprokit.plan.diverged_record``: training raised on a non-finite loss; no metrics) count for the
plan (the LR choice ranks them last) but never for a metric: the summary, floors, claims and grids read
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
TITLES = {"stargan": "StarGAN (lambda_tr = 0)", "ugan_v1": "UGAN v1 (trace head, variant A)",
          "ugan_v2": "UGAN v2 (+ pixel prototype)"}
METRICS = ["tracer_acc", "mark_retention", "target_acc", "cf_l1", "fid", "kid", "cycle_l1"]
LOWER = {"tracer_acc": True, "mark_retention": True, "target_acc": False}
TARGET_FLOOR = 0.90
TRACER_MARGIN = 0.10


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
    st = [r for r in recs if r["arm"] == "stargan"]
    chance = st[0]["tracer_chance"] if st else 1 / 3
    tr = [r["tracer_acc"] for r in st if _finite(r.get("tracer_acc"))]
    ta = [r["target_acc"] for r in st if _finite(r.get("target_acc"))]
    out = [{**floor_check("stargan_tracer_acc", statistics.fmean(tr) if tr else None, round(chance + TRACER_MARGIN, 4)),
            "arm": "StarGAN"},
           {**floor_check("stargan_target_acc", statistics.fmean(ta) if ta else None, TARGET_FLOOR), "arm": "StarGAN"}]
    for r in st[:1]:   # the frozen evaluators' own floors (same evaluators for every run)
        out += [{**f, "arm": "frozen evaluators"} for f in r.get("floors", [])]
    return out


def _claims(recs: list[dict], floors: list[dict]) -> list[dict]:
    ok = all(f["ok"] for f in floors)
    note = "missed " + "; ".join(f"{f['metric']} {f['value'] if f['value'] is None else round(f['value'], 3)} "
                                 f"(floor {f['direction']} {f['floor']})" for f in floors if not f["ok"])

    def v(arm, ref, key, expect, margin=0.0):
        a, r = _per_seed(recs, arm, key), _per_seed(recs, ref, key)
        return judge(paired_improvements(a, r, lower_is_better=LOWER[key]), seed_noise([a, r]), expect, margin,
                     floor_ok=ok, floor_note=f"not testable at this budget: {note}")

    out = []
    for cid, key, text in (("tracer_order", "tracer_acc", "Tracer accuracy: StarGAN > UGAN v1 >= UGAN v2"),
                           ("retention_order", "mark_retention", "Mark retention: StarGAN > UGAN v1 >= UGAN v2")):
        vs = [("v1 vs StarGAN", v("ugan_v1", "stargan", key, "better")),
              ("v2 vs v1", v("ugan_v2", "ugan_v1", key, "not_worse"))]
        out.append({"id": cid, "claim": text, "paper_ref": "abstract (source retaining); tables not transcribed",
                    "status": combine(x for _, x in vs), "evidence": "; ".join(f"{n}: {x.text()}" for n, x in vs)})
    x = v("ugan_v2", "stargan", "target_acc", "not_worse", 0.02)
    out.append({"id": "target_acc_kept", "claim": "UGAN v2 target accuracy within 2 points of StarGAN or better",
                "paper_ref": "not transcribed", "status": x.status, "evidence": x.text()})
    return out


def at_chosen_lrs(recs: list[dict], lrs: dict[str, float]) -> list[dict]:
    """The records of each arm at its chosen LR (the runs every table row, floor and claim reads)."""
    return [r for r in recs if r["arm"] in lrs and math.isclose(float(r["lr"]), lrs[r["arm"]])]


def lr_table(all_recs: list[dict], plan: dict) -> dict:
    """Every LR tried by a grid arm (seed 0): the selection metric on the validation identities (and the
    validation target accuracy), the chosen LR marked, bracketed yes/no per arm."""
    sel, arms, lrs = plan["select_by"], plan["grid_arms"], plan.get("chosen_lrs", {})
    rows = lr_grid_rows(all_recs, arms, plan["lr_grid"], lrs, metric_cell(sel, note=("val_target_acc", "acc.")))
    br = plan.get("bracketed", {})
    return {"columns": ["lr (G and D)", *[f"{TITLES[a]}: {sel}" for a in arms]], "rows": rows,
            "caption": f"seed 0; {sel} (L1 to the counterfactual render outside the source marks, lower is better) "
                       "and target accuracy on the validation identities (never the test identities of the "
                       f"claims); {selection_rule(plan)}; " + bracketed_note(arms, br)}


def curves_figure(recs: list[dict], path: Path) -> Path:
    """G's and D's training losses of every run at its arm's chosen LR (one line per run), from the records."""
    from reprokit.plots import plot_curves

    runs = {r["run"]: r.get("curve", []) for r in sorted(recs, key=lambda r: (list(TITLES).index(r["arm"]), r["seed"]))}
    return plot_curves(runs, ys=("loss", "d_loss"), out=path,
                       title="training losses (G: loss, D: d_loss), each arm at its chosen LR")


def write_report(scale: str, out: Path, runs_dir: Path, all_recs: list[dict], plan: dict, base: Cfg,
                 wall_time_s: float, render: bool) -> Path:
    """results.json (+ grids) in ``out`` from the records of the plan's runs (``all_recs``: the LR grid
    too, diverged runs included); every arm at its chosen LR, from the runs that trained. The README is
    re-rendered when ``render``."""
    lrs = plan.get("chosen_lrs", {})
    recs = at_chosen_lrs(trained(all_recs), lrs)
    lost = [r["run"] for r in at_chosen_lrs(all_recs, lrs) if is_diverged(r)]
    arms_present = [a for a in TITLES if any(r["arm"] == a for r in recs)]
    rows = []
    summary = {}
    for a in arms_present:
        rs = [r for r in recs if r["arm"] == a]
        summary[a] = {"lr": lrs[a], "seeds": sorted(int(r["seed"]) for r in rs),
                      **{m: [r.get(m) for r in rs] for m in METRICS}}
        rows.append([TITLES[a], f"{lrs[a]:g}", len(rs), *(_ms(summary[a][m]) for m in METRICS)])
    chance = round(recs[0]["tracer_chance"], 4) if recs else None
    floors = _floors(recs)
    claims = _claims(recs, floors)
    tables = {"main": {"columns": ["arm", "lr", "seeds", "tracer acc.", "mark retention", "target acc.",
                                   "L1 to counterfactual", "FID*", "KID*", "cycle L1"],
                       "rows": rows,
                       "caption": f"ProcFace, mean ± std over seeds; tracer chance {chance}; FID*/KID* use the "
                                  "frozen domain classifier's features (non-standard); test identities; each "
                                  "arm at its chosen LR"
                                  + (f"; diverged (non-finite loss; not counted): {', '.join(lost)}" if lost else "")},
              "lr_grid": lr_table(all_recs, plan)}
    per_dom = {a: [r["fid_per_domain"] for r in recs if r["arm"] == a and r.get("fid_per_domain")] for a in arms_present}
    k = max((len(v[0]) for v in per_dom.values() if v), default=0)
    if k:   # the per-domain FID*: translations into each target domain against its real renders
        tables["fid_per_domain"] = {
            "columns": ["arm", "seeds", *(f"FID* into domain {d}" for d in range(k))],
            "rows": [[TITLES[a], len(v), *(_ms([f[d] for f in v]) for d in range(k))] for a, v in per_dom.items() if v],
            "caption": "per target domain, mean ± std over seeds, test identities, each arm at its chosen LR; features of "
                       "the frozen domain classifier (non-standard, not comparable to Inception FID)"}
    if recs:
        curves_figure(recs, out / "curves.png")
    for r in recs:   # grid figures next to results (small only: committed)
        g = runs_dir / r["run"] / "grid.png"
        if g.is_file() and out != runs_dir:
            shutil.copy(g, out / f"grid_{r['run']}.png")
    path = out / "results.json"
    write_results(path, paper="ugan", scale=scale, arms=summary, tables=tables, claims=claims, floors=floors,
                  protocol={"arms": list(arms_present), "steps": base.train.steps, "image_size": base.model.image_size,
                            "plan": {k: v for k, v in plan.items() if k != "runs"}, "planned_runs": plan.get("runs"),
                            "selection": f"{selection_rule(plan)}, on the validation identities (data.num_val); "
                                         "every reported metric and claim on the test identities",
                            "tracer_margin_over_chance": TRACER_MARGIN, "target_floor": TARGET_FLOOR,
                            "wall_time": "summed over this plan's invocations (wall_time.json beside this file)"},
                  config=to_dict(base), seeds=sorted({int(r["seed"]) for r in recs}), wall_time_s=wall_time_s,
                  extra={"diverged_runs": [r["run"] for r in all_recs if is_diverged(r)]})
    if render:
        render_readme(MEMBER, write=True)
    return path
