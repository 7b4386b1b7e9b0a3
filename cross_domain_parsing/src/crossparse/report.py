"""From the runs' records to results.json: per-target tables, the validity floors, the pre-registered
claims (``reprokit.claims``), curves and overlays, and the README re-render (small only).

Validity first (issue 14): the source-only parser must reach ``eval.floor_source_miou`` mIoU on
held-out source images (mean over its seeds), and the oracle must beat source-only on each target by
at least ``ORACLE_MARGIN`` mIoU. A missed floor makes the claims that depend on it "not testable at
this budget".

Claims (per target; paired per-seed improvements against the seed noise of source-only and full):
1. ``full_gain``: full - source-only >= +2 mIoU (``judge`` with expect "better" on the improvement
   minus 0.02) on at least 3 of the 4 targets;
2. ``ordering``: oracle > full >= max(feature, label) > source-only on each target (1-seed arms are
   compared on seed 0 against the same noise);
3. ``finetune_equivalent``: where full sits on the fine-tuning curve: the largest n in {5, 20, 50}
   whose fine-tuned mIoU full matches or beats (descriptive; judged as "full not worse than ft5").
Main numbers use the fixed iteration count (the last step); the source-val-selected and the
(optimistic, target-label) target-val-selected numbers are separate columns.

Every table and claim uses the runs at the chosen parser LR (``plan["chosen_lr"]``, the source-only
arm's bracketed LR on held-out source-val mIoU); the ``lr_grid`` table lists every LR tried with its
seed-0 source-val mIoU, the chosen one and whether it is bracketed.

Diverged runs (``reprokit.plan.diverged_record``: training raised on a non-finite loss; no metrics; ``arm`` is the
plan's arm, e.g. ``full-indoor``) count for the plan (the LR choice ranks them last) but never for a metric: the
tables, floors, claims, curves and overlays read ``trained(records)`` only, so an arm that lost a seed is judged
on the seeds that trained. The LR table shows a diverged run as ``diverged``; results.json lists them
(``diverged_runs``) and the captions of the tables name the ones at the chosen LR.
"""

from __future__ import annotations

import math
import shutil
import statistics
from pathlib import Path

from reprokit.claims import (
    INCONCLUSIVE,
    REPRODUCED,
    combine,
    floor_check,
    judge,
    paired_improvements,
    seed_noise,
)
from reprokit.config import to_dict
from reprokit.plan import is_diverged, trained
from reprokit.results import render_readme, write_results

from .config import Cfg

MEMBER = Path(__file__).resolve().parents[2]
TITLES = {"source_only": "source-only", "feature": "+ feature adaptation", "label": "+ label adaptation",
          "full": "full model", "outspace": "output-space adversary (AdaptSegNet-style)", "oracle": "oracle (target labels)",
          "ft5": "fine-tuned, n = 5", "ft20": "fine-tuned, n = 20", "ft50": "fine-tuned, n = 50"}
GAIN = 0.02
ORACLE_MARGIN = 0.05
ORDER_TERMS = ("oracle > full", "full >= max(feature, label)", "max(feature, label) > source-only")


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _recs(recs, arm, target):
    return [r for r in recs if r["arm"] == arm and (arm == "source_only" or r["target"] == target)]


def _selected(rec: dict, target: str, by: str) -> float | None:
    """Target-test mIoU at the eval step with the best ``by`` (source_val | target_val) mIoU."""
    ev = [e for e in rec.get("eval_curve", []) if _finite(e.get(f"{target}_test"))]
    key = "source_val" if by == "source_val" else f"{target}_val"
    ev = [e for e in ev if _finite(e.get(key))]
    if not ev:
        return None
    best = max(ev, key=lambda e: (e[key], e["step"]))
    return best[f"{target}_test"]


def _per_seed(recs, arm, target, key="miou") -> dict[int, float]:
    return {int(r["seed"]): r["metrics"][f"{target}_test"][key] for r in _recs(recs, arm, target)
            if f"{target}_test" in r["metrics"] and _finite(r["metrics"][f"{target}_test"][key])}


def _ms(vals) -> str:
    v = [float(x) for x in vals if _finite(x)]
    if not v:
        return "n/a"
    return f"{100 * statistics.fmean(v):.1f} ± {100 * statistics.stdev(v):.1f}" if len(v) > 1 else f"{100 * v[0]:.1f}"


def _gain(raw: list[float]) -> str:
    """Mean paired gain, or n/a when no seed pairs (e.g. smoke: a target without a full run)."""
    return f"{statistics.fmean(raw):+.4f}" if raw else "n/a"


def _targets(recs) -> list[str]:
    seen = []
    for r in recs:
        for k in r["metrics"]:
            t = k[:-5] if k.endswith("_test") else None
            if t and t not in seen:
                seen.append(t)
    return seen


def _floors(recs, targets, base: Cfg) -> tuple[list[dict], dict[str, bool]]:
    so = [r for r in recs if r["arm"] == "source_only"]
    v = [r["metrics"]["source_val"]["miou"] for r in so if _finite(r["metrics"]["source_val"]["miou"])]
    floors = [{**floor_check("source_only_source_val_miou", statistics.fmean(v) if v else None, base.eval.floor_source_miou),
               "arm": f"source-only, mean of {len(v)} seeds"}]
    oracle_ok = {}
    for t in targets:
        o, s = _per_seed(recs, "oracle", t), _per_seed(recs, "source_only", t)
        gap = (statistics.fmean(o.values()) - statistics.fmean(s.values())) if o and s else None
        f = {**floor_check(f"oracle_minus_source_only_miou_{t}", gap, ORACLE_MARGIN),
             "arm": f"oracle (seed {', '.join(map(str, sorted(o)))}) vs source-only (mean of {len(s)} seeds)"}
        floors.append(f)
        oracle_ok[t] = f["ok"]
    return floors, oracle_ok


def _claims(recs, targets, floors, oracle_ok) -> list[dict]:
    src_ok = floors[0]["ok"]
    note = f"not testable at this budget: {floors[0]['metric']} {floors[0]['value']} vs floor {floors[0]['floor']}"
    gain_v, order_v, ft_text = [], [], []
    for t in targets:
        so, fu = _per_seed(recs, "source_only", t), _per_seed(recs, "full", t)
        noise = seed_noise([so, fu])
        ok = src_ok and oracle_ok.get(t, False)
        fn = note if not src_ok else f"not testable at this budget: oracle does not beat source-only on {t}"
        raw = paired_improvements(fu, so, lower_is_better=False)
        v = judge([x - GAIN for x in raw], noise, "better", floor_ok=ok, floor_note=fn)
        gain_v.append((t, v, raw))
        feat, lab, orc = (_per_seed(recs, a, t) for a in ("feature", "label", "oracle"))
        best_single = {s: max(feat[s], lab[s]) for s in set(feat) & set(lab)}
        parts = [judge(paired_improvements(orc, fu, False), noise, "better", floor_ok=ok, floor_note=fn),
                 judge(paired_improvements(fu, best_single, False), noise, "not_worse", floor_ok=ok, floor_note=fn),
                 judge(paired_improvements(best_single, so, False), noise, "better", floor_ok=ok, floor_note=fn)]
        order_v.append((t, combine(parts), parts))
        full_m = statistics.fmean(fu.values()) if fu else None
        worth = [n for n in (5, 20, 50) if (ft := _per_seed(recs, f"ft{n}", t)) and full_m is not None
                 and full_m >= statistics.fmean(ft.values())]
        ft_text.append(f"{t}: full {'n/a' if full_m is None else f'{100 * full_m:.1f}'} mIoU is worth "
                       f"{'>= ' + str(max(worth)) if worth else '< 5 (or n/a)'} labelled target images")
    n_rep = sum(v.status == REPRODUCED for _, v, _ in gain_v)
    if any(v.status == "not testable at this budget" for _, v, _ in gain_v) and n_rep < 3:
        gain_status = "not testable at this budget"
    elif n_rep >= 3:
        gain_status = REPRODUCED
    elif sum(v.status == "not reproduced" for _, v, _ in gain_v) > len(gain_v) - 3:
        gain_status = "not reproduced"
    else:
        gain_status = INCONCLUSIVE
    ft_status = combine([judge(paired_improvements(_per_seed(recs, "full", t), _per_seed(recs, "ft5", t), False),
                               seed_noise([_per_seed(recs, "source_only", t), _per_seed(recs, "full", t)]),
                               "not_worse", floor_ok=src_ok, floor_note=note) for t in targets]) if targets else INCONCLUSIVE
    return [
        {"id": "full_gain", "claim": "full - source-only >= +2 mIoU on at least 3 of the 4 targets",
         "paper_ref": "abstract (consistent gains); tables not transcribed", "status": gain_status,
         "evidence": f"{n_rep}/{len(gain_v)} targets; " + "; ".join(
             f"{t}: gain {_gain(raw)} (per seed " + ", ".join(f"{x:+.4f}" for x in raw)
             + f"); judged on gain minus {GAIN}: {v.text()}" for t, v, raw in gain_v)},
        {"id": "ordering", "claim": "oracle > full >= max(feature, label) > source-only, per target",
         "paper_ref": "notes §6.4 (pre-registered); tables not transcribed", "status": combine(s for _, s, _ in order_v),
         "evidence": "; ".join(f"{t}: {s} [" + " | ".join(f"{name}: {p.text()}" for name, p in zip(ORDER_TERMS, ps)) + "]"
                               for t, s, ps in order_v)},
        {"id": "finetune_equivalent", "claim": "full is worth at least n = 5 labelled target images (data efficiency)",
         "paper_ref": "abstract (data efficiency); tables not transcribed", "status": ft_status,
         "evidence": "; ".join(ft_text)},
    ]


def _lr_table(records: list[dict], plan: dict) -> dict:
    """The parser LR grid: source-only seed 0 at every LR tried, its held-out source-val mIoU, the choice."""
    seed0 = {r["lr"]: r for r in records if r["arm"] == "source_only" and int(r["seed"]) == 0}
    chosen, br = plan.get("chosen_lr"), plan.get("bracketed")
    rows = []
    for lr in sorted(seed0):
        v = seed0[lr].get("source_val_miou")
        is_chosen = chosen is not None and math.isclose(lr, chosen)
        rows.append([f"{lr:g}" + ("" if any(math.isclose(lr, g) for g in plan["lr_grid"]) else " (extension)"),
                     "diverged" if is_diverged(seed0[lr]) else "n/a" if not _finite(v) else f"{100 * v:.1f}",
                     "yes" if is_chosen else "",
                     ("yes" if br else "no") if is_chosen else ""])
    return {"columns": ["parser lr", "source-val mIoU (source-only, seed 0)", "chosen", "bracketed"], "rows": rows,
            "caption": "parser LR grid of the source-only arm, chosen on held-out source-val mIoU (no target labels; "
                       f"extended beyond an edge at most {plan['max_extensions']} times); bracketed (best LR strictly "
                       f"inside the LRs tried): {'yes' if br else 'no'}; every other arm uses the chosen LR "
                       f"{'n/a' if chosen is None else f'{chosen:g}'}"}


def _lost(records: list[dict], chosen: float | None, target: str | None = None) -> str:
    """A caption note naming the diverged runs at the chosen LR (of ``target``'s arms and source-only; all
    when None): the seeds the rows do not count."""
    lost = [r["run"] for r in records if is_diverged(r) and chosen is not None and math.isclose(r["lr"], chosen)
            and (target is None or r["arm"] == "source_only" or r["arm"].partition("-")[2] == target)]
    return f"; diverged (non-finite loss; not counted): {', '.join(lost)}" if lost else ""


def write_report(scale: str, out: Path, runs_dir: Path, records: list[dict], plan: dict, base: Cfg,
                 wall_time_s: float, render: bool) -> Path:
    """results.json (+ curves, overlays) in ``out`` from the records of the plan's runs (the LR grid too,
    diverged runs included); every table and claim from the runs that trained at the chosen LR."""
    chosen = plan.get("chosen_lr")
    recs = [r for r in trained(records) if chosen is not None and math.isclose(r["lr"], chosen)]
    targets = _targets(recs)
    arms = [a for a in TITLES if any(r["arm"] == a for r in recs)]
    tables, summary = {}, {}
    cols = ["arm", "seeds", "mIoU (fixed iter.)", "mIoU (source-val sel.)", "mIoU (target-val sel., optimistic)",
            "pixel acc", "fg acc", "avg precision", "avg recall", "avg F1"]
    for t in targets:
        rows = []
        for a in arms:
            rs = [r for r in _recs(recs, a, t) if f"{t}_test" in r["metrics"]]
            if not rs:
                continue
            m = [r["metrics"][f"{t}_test"] for r in rs]
            summary.setdefault(a, {})[t] = {"miou": [x["miou"] for x in m], "seeds": [r["seed"] for r in rs]}
            rows.append([TITLES[a], len(rs), _ms(x["miou"] for x in m), _ms(_selected(r, t, "source_val") for r in rs),
                         _ms(_selected(r, t, "target_val") for r in rs), *(_ms(x[k] for x in m) for k in
                                                                            ("pixel_acc", "fg_acc", "precision", "recall", "f1"))])
        ncls = recs and next((r["metrics"][f"{t}_test"]["n_classes"] for r in recs if f"{t}_test" in r["metrics"]), 12)
        tables[t] = {"columns": cols, "rows": rows,
                     "caption": f"ProcParse target '{t}' test set, {ncls} classes, percent, mean ± std over seeds, "
                                f"parser lr {chosen:g} (every arm)" + _lost(records, chosen, t)}
    floors, oracle_ok = _floors(recs, targets, base)
    claims = _claims(recs, targets, floors, oracle_ok)
    so = [r for r in recs if r["arm"] == "source_only"]
    tables["source_val"] = {"columns": ["arm", "seeds", "source-val mIoU"],
                            "rows": [[TITLES[a], len(rs), _ms(r["metrics"]["source_val"]["miou"] for r in rs)]
                                     for a in arms if (rs := [r for r in recs if r["arm"] == a])],
                            "caption": "held-out source images (the validity floor uses source-only); rows with one run per "
                                       "target pool the four targets' runs: the oracle and fine-tuned runs train on target "
                                       "labels, so theirs measures what they forget of the source"
                                       + _lost(records, chosen)}
    tables["lr_grid"] = _lr_table(records, plan)
    if out != runs_dir:   # small: curves and overlays next to results (committed)
        from reprokit.plots import plot_curves

        sel = {r["run"]: r["curve"] for r in recs if r["seed"] == 0 and r["arm"] in ("source_only", "full")}
        if sel:
            plot_curves(sel, ys=["loss"], out=out / "curves.png", title="parsing loss (seed 0)")
        ev = {r["run"]: r["eval_curve"] for r in recs if r["seed"] == 0 and r["arm"] in ("source_only", "full")}
        if ev:
            plot_curves(ev, ys=[f"{t}_test" for t in targets], out=out / "eval_curves.png", title="target-test mIoU")
        for r in so[:1] + [r for r in recs if r["arm"] == "full" and r["seed"] == 0]:
            for png in (runs_dir / r["run"]).glob("overlay_*.png"):
                shutil.copy(png, out / f"{r['run']}_{png.name}")
    path = out / "results.json"
    write_results(path, paper="crossparse", scale=scale, arms=summary, tables=tables, claims=claims, floors=floors,
                  protocol={"targets": targets, "steps": base.train.steps, "resolution": [base.model.height, base.model.width],
                            "selection": "fixed iteration (main); source-val; target-val (optimistic, uses target labels)",
                            "gain_margin": GAIN, "oracle_margin": ORACLE_MARGIN, "plan": plan,
                            "parser_lr": chosen, "adversarial_lrs": {k: getattr(base.adapt, k) for k in
                                                                     ("c_lr", "df_lr", "adv_lr", "dl_lr")},
                            "wall_time": "summed over this plan's invocations (wall_time.json beside this file)"},
                  config=to_dict(base), seeds=sorted({int(r["seed"]) for r in recs}), wall_time_s=wall_time_s,
                  extra={"diverged_runs": [r["run"] for r in records if is_diverged(r)]})
    if render:
        render_readme(MEMBER, write=True)
    return path
