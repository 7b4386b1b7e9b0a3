"""From the runs' records to results.json: summary per arm, the baseline floor, the claims
(``reprokit.claims``), the README tables, the figures, and the README re-render (small only).

Claim rule (the project's one rule, ``reprokit.claims``): a comparison of arm A with a reference R
on a metric uses the per-seed *paired* improvements of A over R (same seed = same data order and
initialisation), judged against the seed noise: the largest seed-to-seed std (ddof=1) of the
multi-seed arms involved (``seed_noise``), or the std of the paired improvements when larger.

Baseline floors (issue #9): the dense DiT's conditional samples must be classified correctly at >= 0.80 by the
in-repo Fashion-MNIST classifier (``class_accuracy``, mean over seeds), and its validation loss must have
flattened (improved by less than 2% over the last quarter of training, mean over seeds; runs that log a
validation curve). Below either, the models are too far from trained for quality comparisons to confirm or
refute the paper, and every claim comparing against a trained baseline is "not testable at this budget".
Claims that measure routing behaviour (RSL's balance, the adaptive allocation) are still judged, and their
evidence says the floor was missed.

Each arm is reported at its own LR (``plan["chosen_lrs"]``: dense and Race from their bracketed grids, every
other arm at Race's).

Diverged runs (``reprokit.plan.diverged_record``: training raised on a non-finite loss; no metrics) count for the
plan (the LR choice ranks them last) but never for a metric: the summary, floors, claims, figures and every
table but the LR grid read ``trained(records)`` only, so an arm that lost a seed is judged on the seeds that
trained. The LR grid shows a diverged run as ``diverged``; results.json lists them (``diverged_runs``) and the
main table's caption names the ones at an arm's LR.
"""

from __future__ import annotations

import math
import shutil
import statistics
from pathlib import Path

from reprokit.claims import NOT_TESTABLE, combine, floor_check, judge, paired_improvements, seed_noise
from reprokit.config import to_dict
from reprokit.plan import is_diverged, trained
from reprokit.results import render_readme, write_results

from .config import Cfg

MEMBER = Path(__file__).resolve().parents[2]
FLOOR_METRIC, FLOOR_ARM, FLOOR = "class_accuracy", "dense", 0.80
FLAT_FLOOR = 0.02   # relative improvement of the validation loss over the last quarter of training
ARM_TITLES = {
    "dense": "Dense DiT", "tc": "Token choice (softmax + balance 0.01)", "ec": "Expert choice (per sample, identity)",
    "race": "Expert Race (identity, EMA threshold)", "race_rsl": "Race + router similarity (0.01)",
    "race_plr": "Race + per-layer reg. (0.1)", "race_full": "Race + RSL + PLR",
    "race_rsl0.003": "Race + RSL 0.003", "race_rsl0.03": "Race + RSL 0.03",
    "race_plr0.03": "Race + PLR 0.03", "race_plr0.3": "Race + PLR 0.3",
    "tc_sigmoid": "Token choice, sigmoid", "tc_identity": "Token choice, identity",
    "ec_softmax": "Expert choice, softmax", "ec_sigmoid": "Expert choice, sigmoid",
    "race_softmax": "Expert Race, softmax", "race_sigmoid": "Expert Race, sigmoid",
}
# Table 1's grid: (routing, gating) -> arm
GATING_GRID = {("tc", "softmax"): "tc", ("tc", "sigmoid"): "tc_sigmoid", ("tc", "identity"): "tc_identity",
               ("ec", "softmax"): "ec_softmax", ("ec", "sigmoid"): "ec_sigmoid", ("ec", "identity"): "ec",
               ("race", "softmax"): "race_softmax", ("race", "sigmoid"): "race_sigmoid", ("race", "identity"): "race"}
WEIGHT_GRIDS = {"rsl": {0.003: "race_rsl0.003", 0.01: "race_rsl", 0.03: "race_rsl0.03"},
                "plr": {0.03: "race_plr0.03", 0.1: "race_plr", 0.3: "race_plr0.3"}}
METRICS = ["heldout_loss", "val_loss", "fid", "kid", "class_accuracy", "experts_per_token", "maxvio",
           "combination_usage", "experts_per_token_fg", "experts_per_token_bg", "heldout_loss_topk",
           "experts_per_token_topk", "maxvio_topk", "flattening"]
LOWER_IS_BETTER = {"heldout_loss": True, "fid": True, "maxvio": True, "combination_usage": False,
                   "t_range": False, "fg_bg_gap": False}


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _mean_std(vals: list) -> tuple[float | None, float | None]:
    v = [float(x) for x in vals if _finite(x)]
    if not v:
        return None, None
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def _fmt(m: float | None, s: float | None, n: int, digits: int = 4) -> str:
    if m is None:
        return "n/a"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if n > 1 else f"{m:.{digits}f}"


def _r(v, d: int = 3):
    return None if v is None else round(float(v), d)


def _derived(rec: dict) -> dict:
    """Allocation measures of one run: range of experts/token over the t bins, |foreground - background|."""
    by_t = rec.get("experts_per_token_by_t")
    fg, bg = rec.get("experts_per_token_fg"), rec.get("experts_per_token_bg")
    return {"t_range": (max(by_t) - min(by_t)) if by_t else None,
            "fg_bg_gap": abs(fg - bg) if _finite(fg) and _finite(bg) else None}


def flattening(rec: dict) -> float | None:
    """Relative improvement of the validation loss over the last quarter of training, from the logged
    ``val_curve`` (None without one): (v(3/4 T) - v(T)) / v(3/4 T), v at the logged step nearest to 3/4 T."""
    curve = rec.get("val_curve") or []
    if len(curve) < 2:
        return None
    last = curve[-1]
    q = min(curve[:-1], key=lambda c: abs(c["step"] - 0.75 * last["step"]))
    return (q["val_loss"] - last["val_loss"]) / q["val_loss"]


class _Arms:
    """The records of each arm at its LR (``lr``: one LR for every arm, or arm -> LR), by arm and seed."""

    def __init__(self, records: list[dict], lr: float | dict[str, float]):
        self.by_arm: dict[str, dict[int, dict]] = {}
        for r in records:
            want = lr.get(r["arm"]) if isinstance(lr, dict) else lr
            if want is not None and math.isclose(r["lr"], want):
                self.by_arm.setdefault(r["arm"], {})[int(r["seed"])] = {**r, **_derived(r),
                                                                         "flattening": flattening(r)}

    def per_seed(self, arm: str, key: str) -> dict[int, float]:
        return {s: r[key] for s, r in self.by_arm.get(arm, {}).items() if _finite(r.get(key))}

    def n(self, arm: str) -> int:
        return len(self.by_arm.get(arm, {}))


def floors(arms: _Arms) -> list[dict]:
    """The dense baseline's floors: class accuracy, and (when validation curves were logged) flattening."""
    value, _ = _mean_std(list(arms.per_seed(FLOOR_ARM, FLOOR_METRIC).values()))
    out = [{"arm": FLOOR_ARM, **floor_check(FLOOR_METRIC, value, FLOOR)}]
    flat = list(arms.per_seed(FLOOR_ARM, "flattening").values())
    if flat:
        out.append({"arm": FLOOR_ARM, **floor_check("val_loss_improvement_last_quarter", statistics.fmean(flat),
                                                     FLAT_FLOOR, higher_is_better=False, strict=True)})
    return out


def _compare(arms: _Arms, arm: str, ref: str, key: str):
    """``arm`` better than ``ref`` on ``key``: paired per-seed improvements against the seed noise."""
    a, r = arms.per_seed(arm, key), arms.per_seed(ref, key)
    imp = paired_improvements(a, r, lower_is_better=LOWER_IS_BETTER[key])
    noise = seed_noise([a, r])                 # the multi-seed arms of the two (single-seed ones are skipped)
    return judge(imp, noise, "better")


def claims(arms: _Arms, floor: dict | list[dict]) -> list[dict]:
    """The claims of the reproduction, each through reprokit.claims (``floor``: the floor records)."""
    fls = [floor] if isinstance(floor, dict) else list(floor)
    ok = all(f["ok"] for f in fls)
    miss = [f for f in fls if not f["ok"]]

    def _v(f):
        return "was not measured" if f["value"] is None else f"{f['value']:.3f}"
    missed = "; ".join(f"the dense baseline's {f['metric']} ({_v(f)}) missed its floor {f['direction']} {f['floor']}"
                       for f in miss)
    not_testable = f"not testable at this budget: {missed}"
    keys = ["heldout_loss"] + (["fid"] if arms.per_seed("race", "fid") else [])
    out = []

    def quality(cid: str, ref_label: str, claim: str, pairs: list[tuple[str, str]]) -> None:
        # the paired rule alone (as if the floor were met), then the floor decides
        verdicts = [(f"{a} vs {r} {k}", _compare(arms, a, r, k)) for a, r in pairs for k in keys]
        unfloored = combine(v for _, v in verdicts)
        evidence = "; ".join(f"{name}: {v.text()}" for name, v in verdicts)
        if not ok:
            evidence = f"{not_testable} (the paired rule alone would say: {unfloored}). {evidence}"
        out.append({"id": cid, "paper_ref": ref_label, "claim": claim,
                    "status": combine([*(v for _, v in verdicts), *([NOT_TESTABLE] if not ok else [])]),
                    "evidence": evidence})

    def routing(cid: str, ref_label: str, claim: str, comps: list[tuple[str, str, str]], extra: str) -> None:
        verdicts = [(f"{a} vs {r} {k}", _compare(arms, a, r, k)) for a, r, k in comps]
        note = "" if ok else f" (a routing measurement, judged although {missed})"
        out.append({"id": cid, "paper_ref": ref_label, "claim": claim, "status": combine(v for _, v in verdicts),
                    "evidence": "; ".join(f"{name}: {v.text()}" for name, v in verdicts) + extra + note})

    quality("race_beats_tc_ec", "Table 1, Table 6",
            "Expert Race beats token choice and expert choice at equal activated parameters",
            [("race", "tc"), ("race", "ec")])
    if arms.n("race_rsl"):
        quality("rsl_beats_race", "Table 3", "Race + the router similarity loss beats plain Race",
                [("race_rsl", "race")])
    quality("full_recipe_beats_race", "Table 3", "Race + PLR + RSL beats plain Race", [("race_full", "race")])
    routing("rsl_balances", "Table 2", "The router similarity loss lowers MaxVio and raises combination usage",
            [("race_rsl", "race", "maxvio"), ("race_rsl", "race", "combination_usage")],
            " (eval-mode routing on held-out images)")
    if arms.per_seed("race", "t_range"):
        tc = arms.by_arm.get("tc", {}).get(0, {})
        routing("adaptive_allocation", "Fig. 6",
                "Race's experts per token vary with timestep and content; token choice's cannot",
                [("race", "tc", "t_range"), ("race", "tc", "fg_bg_gap")],
                f" (t_range: max - min of experts/token over the t bins; fg_bg_gap: |foreground - background|; "
                f"tc seed 0: t_range {_r(tc.get('t_range'))}, fg_bg_gap {_r(tc.get('fg_bg_gap'))})")
    quality("moe_beats_dense", "Table 4",
            "The Race MoE beats the dense DiT at equal activated parameters",
            [("race", "dense")] if arms.n("race") > 1 and arms.n("dense") > 1 else [("race_full", "dense")])
    return out


def _row_metrics(arms: _Arms, arm: str) -> list:
    n = arms.n(arm)

    def ms(k, d):
        return _fmt(*_mean_std(list(arms.per_seed(arm, k).values())), n, d)

    return [ms("heldout_loss", 4), ms("fid", 2), ms("class_accuracy", 3)]


def _tables(arms: _Arms, records: list[dict], plan: dict) -> dict:
    lrs = plan.get("chosen_lrs") or {a: plan["chosen_lr"] for a in ARM_TITLES}
    main_rows = []
    main_arms = [a for a in ("dense", "tc", "ec", "race", "race_rsl", "race_plr", "race_full") if a in arms.by_arm]
    for arm in main_arms:
        n = arms.n(arm)

        def ms(k, d, arm=arm, n=n):
            return _fmt(*_mean_std(list(arms.per_seed(arm, k).values())), n, d)

        main_rows.append([ARM_TITLES[arm], f"{lrs.get(arm, 0):g}", n, ms("heldout_loss", 4), ms("fid", 2),
                          ms("kid", 4), ms("class_accuracy", 3), ms("experts_per_token", 2), ms("maxvio", 3),
                          ms("combination_usage", 1)])
    tables = {
        "main": {"columns": ["arm", "lr", "seeds", "test loss", "FID*", "KID*", "class acc.",
                             "experts/token (eval)", "MaxVio (eval)", "comb. usage % (eval)"],
                 "rows": main_rows,
                 "caption": "test loss: denoising loss on the first 1000 test images at fixed (t, noise); FID*/KID*: "
                            "non-standard FID (Fashion-MNIST classifier features); mean ± sample std (ddof=1) "
                            "over seeds." + _lost_seeds(records, lrs)},
    }
    # the LR grid of each grid arm, on the validation images (what the LR is chosen on)
    sel = plan.get("select_by", "heldout_loss")
    grid_arms = plan["grid_arms"]
    seed0 = {(r["arm"], r["lr"]): r for r in records if int(r["seed"]) == 0}
    tried = sorted({lr for (a, lr) in seed0 if a in grid_arms})
    rows = []
    for lr in tried:
        row = [f"{lr:g}" + ("" if lr in plan["lr_grid"] else " (extension)")]
        for a in grid_arms:
            r = seed0.get((a, lr))
            if r is not None and is_diverged(r):
                row.append("diverged")
                continue
            v = None if r is None else _r(r.get(sel), 5)
            row.append("—" if v is None else f"{v}" + (" ◀ chosen" if math.isclose(lr, lrs.get(a, -1)) else ""))
        rows.append(row)
    br = plan.get("bracketed", {})
    tables["lr_grid"] = {
        "columns": ["lr", *[f"{a} {sel}" for a in grid_arms]], "rows": rows,
        "caption": f"seed 0, {sel} on the validation images; bracketed (best LR strictly inside the LRs tried): "
                   + ", ".join(f"{a} {'yes' if br.get(a) else 'no' if br.get(a) is False else 'n/a'}"
                               for a in grid_arms)}
    # Table 1: routing x gating (seed 0 at Race's LR)
    if any(arm in arms.by_arm for arm in GATING_GRID.values() if arm not in ("tc", "ec", "race")):
        rows = []
        for routing in ("tc", "ec", "race"):
            row = [{"tc": "token choice", "ec": "expert choice", "race": "Expert Race"}[routing]]
            for gating in ("softmax", "sigmoid", "identity"):
                r = arms.by_arm.get(GATING_GRID[(routing, gating)], {}).get(0)
                row.append("—" if r is None else f"{_r(r.get('heldout_loss'), 4)} / {_r(r.get('fid'), 1)}")
            rows.append(row)
        tables["gating_grid"] = {"columns": ["routing", "softmax", "sigmoid", "identity"], "rows": rows,
                                 "caption": "Table 1 analogue: test loss / FID*, seed 0, at Race's LR"}
    # the RSL and PLR weights
    if any(a in arms.by_arm for g in WEIGHT_GRIDS.values() for a in g.values()):
        rows = []
        for loss, grid in WEIGHT_GRIDS.items():
            for w, arm in grid.items():
                r = arms.by_arm.get(arm, {}).get(0)
                if r is not None:
                    rows.append([loss.upper(), w, _r(r.get("val_loss"), 5), _r(r.get("heldout_loss"), 5),
                                 _r(r.get("fid"), 2), _r(r.get("maxvio"), 3)])
        tables["weights"] = {"columns": ["loss", "weight", "val loss", "test loss", "FID*", "MaxVio (eval)"],
                             "rows": rows, "caption": "seed 0 at Race's LR; the weight is chosen on the val loss"}
    # train/inference consistency of the batch-spanning routing (issue #9 diagnostics)
    rows = []
    for arm in (a for a in ARM_TITLES if a in arms.by_arm):
        recs = list(arms.by_arm[arm].values())
        if not any(r.get("heldout_loss_topk") is not None for r in recs):
            continue
        n = len(recs)

        def ms(k, d, arm=arm, n=n):
            return _fmt(*_mean_std(list(arms.per_seed(arm, k).values())), n, d)

        rows.append([ARM_TITLES[arm], n, ms("heldout_loss", 4), ms("heldout_loss_topk", 4),
                     ms("experts_per_token", 3), ms("experts_per_token_topk", 3), ms("maxvio", 3),
                     ms("maxvio_topk", 3)])
    if rows:
        tables["eval_routing"] = {
            "columns": ["arm", "seeds", "test loss (EMA threshold)", "test loss (batch top-K)",
                        "experts/token (threshold)", "experts/token (top-K)", "MaxVio (threshold)", "MaxVio (top-K)"],
            "rows": rows,
            "caption": "the same trained models evaluated with the inference rule (EMA threshold, the default) and "
                       "with the training rule (top-K over the evaluation batch); k = top_k is the target"}
    race0 = arms.by_arm.get("race", {}).get(0, {})
    if race0.get("experts_per_token_by_t"):
        rows = []
        for arm in ("tc", "ec", "race", "race_full"):
            ev = arms.by_arm.get(arm, {}).get(0)
            if ev is None:
                continue
            rows.append([ARM_TITLES[arm], *[round(v, 3) for v in ev["experts_per_token_by_t"]],
                         _r(ev["experts_per_token_fg"]), _r(ev["experts_per_token_bg"])])
        tables["allocation"] = {
            "columns": ["arm", *[f"t={c:.3f}" for c in race0["t_bin_centres"]], "foreground", "background"],
            "rows": rows,
            "caption": "realised experts per token (mean over layers) on held-out images in eval mode, by noise "
                       "level t (t=0 clean, t=1 noise) and on foreground/background patches of the clean image; seed 0"}
    return tables


def _lost_seeds(records: list[dict], lrs: dict) -> str:
    """A caption note naming the diverged runs at an arm's own LR (the seeds its row does not count)."""
    lost = [r["run"] for r in records if is_diverged(r) and lrs.get(r["arm"]) is not None
            and math.isclose(r["lr"], lrs[r["arm"]])]
    return f" Diverged (non-finite loss; not counted): {', '.join(lost)}." if lost else ""


def _figures(arms: _Arms, out: Path, runs_dir: Path, lr: float) -> None:
    """curves.png from the records' logged curves and the seed-0 sample grids from the run folders; a
    figure whose inputs are absent (records of older code without curves, run folders elsewhere) is
    left as it is."""
    from reprokit.plots import plot_curves

    seed0 = {arm: seeds[0] for arm, seeds in arms.by_arm.items() if 0 in seeds}
    curves = {arm: r.get("curve") for arm, r in seed0.items()}
    if curves and all(curves.values()):
        plot_curves({a: curves[a] for a in ARM_TITLES if a in curves}, x="step", ys=["loss"],
                    out=str(out / "curves.png"), title=f"train loss (lr {lr:g}, seed 0)")
    for arm, r in seed0.items():
        src = runs_dir / r["run"] / "samples_grid.png"
        if src.is_file():
            shutil.copyfile(src, out / f"samples_{arm}.png")


def write_report(scale: str, out: Path, runs_dir: Path, records: list[dict], plan: dict, base: Cfg,
                 arm_overrides: dict[str, list[str]], wall_time_s: float, render: bool) -> Path:
    """results.json (+ figures) in ``out`` from the records of the plan's runs (diverged ones included: the LR
    grid shows them; everything that reads a metric gets the trained runs only); the README when ``render``."""
    lr = plan["chosen_lr"]
    lrs = plan.get("chosen_lrs") or lr
    done = trained(records)
    arms = _Arms(done, lrs)
    fl = floors(arms)
    cl = claims(arms, fl)
    summary = {}
    for arm in (a for a in ARM_TITLES if a in arms.by_arm):
        st = {k: _mean_std(list(arms.per_seed(arm, k).values())) for k in METRICS}
        summary[arm] = {"title": ARM_TITLES[arm], "overrides": arm_overrides[arm],
                        "lr": lrs.get(arm) if isinstance(lrs, dict) else lr,
                        "seeds": sorted(arms.by_arm[arm]), **{k: st[k][0] for k in METRICS},
                        **{f"{k}_std": st[k][1] for k in METRICS},
                        "per_seed": {str(s): {k: v for k, v in r.items() if k != "curve"}
                                     for s, r in sorted(arms.by_arm[arm].items())}}
    m = base.model
    protocol = {
        "data": "Fashion-MNIST 60k train (28x28 padded with background to 32x32, [-1, 1]); held-out = 10k test split"
                if base.data.source == "fashion_mnist" else f"data.source={base.data.source}",
        "model": f"DiT depth {m.depth}, d {m.hidden}, patch {m.patch} ({(m.image_size // m.patch) ** 2} tokens); "
                 f"MoE E={m.moe.num_experts}, k={m.moe.top_k}, expert hidden 4d/k (activated FFN = dense)",
        "objective": base.diffusion.kind, "steps": base.train.steps, "batch": base.train.batch_size,
        "lr_grid": plan["lr_grid"], "chosen_lr": lr,
        "plan": {k: v for k, v in plan.items() if k != "runs"},
        "eval": f"EMA weights ({base.train.ema_decay}); held-out loss on {base.eval.heldout_n} test images at fixed "
                f"(t, noise); FID*/KID* from {base.eval.fid_samples_per_class}/class samples "
                f"({base.diffusion.sample_steps} Euler steps, cfg {base.diffusion.cfg_scale}) vs "
                f"{base.eval.fid_real_n} test images",
        "fid_label": "non-standard FID (Fashion-MNIST classifier features)",
        "claim_rule": "reprokit.claims: paired per-seed improvements judged against max(seed_noise of the "
                      "multi-seed arms involved, std of the paired improvements); baseline floor: the dense "
                      f"arm's {FLOOR_METRIC} >= {FLOOR}, else claims against trained baselines are not testable",
        "provenance": sorted({r.get("provenance", "unknown") for r in done}),
        "compute_seconds_recorded": round(sum(float(r.get("train_seconds") or 0) + float(r.get("eval_seconds") or 0)
                                              for r in done), 1),
    }
    for key in ("feature_net_test_accuracy", "feature_net_digest", "feature_net_sha256"):
        vals = {r[key] for r in done if r.get(key) is not None}
        if vals:
            protocol[key] = sorted(vals)[0] if len(vals) == 1 else sorted(vals)
    _figures(arms, out, runs_dir, lr)
    seeds = sorted({int(r["seed"]) for r in records})
    grid = _grid(records)
    path = write_results(out / "results.json", paper="racedit", scale=scale, arms=summary,
                         tables=_tables(arms, records, plan), claims=cl, floors=fl, protocol=protocol,
                         config=to_dict(base), seeds=seeds, wall_time_s=wall_time_s,
                         extra={"lr_grid": {f"{g:g}": {a: "diverged" if is_diverged(grid[(g, a)])
                                                       else grid[(g, a)]["heldout_loss"] for a in plan["grid_arms"]
                                                       if (g, a) in grid}
                                            for g in sorted({g for g, a in grid if a in plan["grid_arms"]})},
                                "diverged_runs": [r["run"] for r in records if is_diverged(r)]})
    if render:
        render_readme(MEMBER, write=True)
    return path


def _grid(records: list[dict]) -> dict[tuple[float, str], dict]:
    return {(r["lr"], r["arm"]): r for r in records if r["seed"] == 0}
