"""Summary, floors, claims (``reprokit.claims``), tables, figures and the README re-render of a reproduction.

Pre-registered verdict rules (the README states the same):

* seed noise = the larger seed-to-seed standard deviation of the test loss of the baseline and the main OE
  arm (3 seeds each), ``reprokit.claims.seed_noise``;
* floors (the baseline at its chosen LR, every seed): >= 20 training tokens per non-embedding parameter, and
  the held-out (validation subset) loss improving by < 2 % over the last quarter of training; a missed floor
  makes every claim "not testable at this budget";
* C1 OE (n = 3) beats the baseline: paired per-seed test-loss improvements, ``judge(expect="better")``;
* C2 vocabulary law: the A1 points with m at most the number of distinct training bigrams are fitted by
  loss = a + b log10 m; the fitted drop -b (log10 m_max - log10 m_min) is judged against the seed noise
  (``better``), and a reproduced verdict needs R^2 >= 0.8 as well (else inconclusive);
* C3 every A1 arm beats the baseline (seed 0 pairs, combined);
* C4 OE matches the 2x-deeper baseline (``not_worse``, margin 0; seed 0), with the fraction of the deeper
  model's gain that OE recovers;
* C5 Table 3: the 2-gram table without the 1-gram table is worse than the baseline (seed 0);
* C6 Table 5: OT's next-token loss is not lower than OE's (``not_better``, margin 0; seed 0; smoke-level).

Diverged runs (``reprokit.plan.diverged_record``: training raised on a non-finite loss; no metrics) count for the
plan (the LR choice ranks them last) but never for a metric: the summary, floors, claims and figures read
``trained(records)`` only, so an arm that lost a seed is judged on the seeds that trained. The LR table shows a
diverged run as ``diverged``; results.json lists them (``diverged_runs``) and the main table's caption names the
ones at an arm's chosen LR.
"""

from __future__ import annotations

import json
import math
import statistics
import time
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
from reprokit.plan import Group, bracketed, chosen_lrs, is_diverged, planned_jobs, trained
from reprokit.results import install_result_blocks, render_readme, write_results

from .plan import (
    PKG_DIR,
    PLANS,
    base_config,
    fit_line,
    flattening_pct,
    plan_arms,
    plan_group,
    tokens_per_param,
)

RESULT_TABLES = ("main", "lr_grid", "vocab_law")


def _mean_or_none(xs: list) -> float | None:
    xs = [x for x in xs if x]
    return statistics.fmean(xs) if xs else None


def _by_arm(records: list[dict], arm: str, lr: float | None) -> dict[int, dict]:
    return {r["seed"]: r for r in records if r["arm"] == arm and (lr is None or r["lr"] == lr)}


def plan_records(records: list[dict], group: Group) -> list[dict]:
    """The records of the plan's own runs; any other (another budget tag, another naming) is ignored."""
    ours = {j.name for j in planned_jobs([group], records)}
    return [r for r in records if r["run"] in ours]


def summarize(records: list[dict], scale: str) -> dict[str, dict]:
    """Per arm, at its family's chosen LR (``reprokit.plan.chosen_lrs``, from every record of the plan): per-seed
    metrics, means, spread, over the seeds that trained (diverged runs dropped)."""
    group = plan_group(scale)
    records = plan_records(records, group)
    lrs = chosen_lrs(group, records)
    records = trained(records)
    out = {}
    for key, arm in plan_arms(PLANS[scale]).items():
        lr = lrs.get(arm.name)
        runs = {} if lr is None else _by_arm(records, arm.name, lr)
        if not runs:
            continue
        seeds = sorted(runs)
        ms = [runs[s]["metrics"] for s in seeds]
        test = [m["test_loss"] for m in ms]
        e = {"key": key, "arm": arm.name, "role": arm.role, "lr": lr, "seeds": seeds,
             "test_loss_per_seed": {s: runs[s]["metrics"]["test_loss"] for s in seeds},
             "val_loss_per_seed": {s: runs[s]["metrics"]["val_loss"] for s in seeds},
             "test_loss": statistics.fmean(test), "test_loss_sd": statistics.stdev(test) if len(test) > 1 else None,
             "val_loss": statistics.fmean(m["val_loss"] for m in ms),
             "test_ppl": statistics.fmean(m["test_ppl"] for m in ms),
             "test_bpb": statistics.fmean(m["test_bpb"] for m in ms) if "test_bpb" in ms[0] else None,
             "test_bpt": statistics.fmean(m["test_bpt"] for m in ms),
             "params_non_embedding": ms[0]["params_non_embedding"], "params_ngram_tables": ms[0]["params_ngram_tables"],
             "params_embedding": ms[0]["params_embedding"], "table_mb": ms[0]["table_mb"],
             "table_optim_mb": ms[0]["table_optim_mb"], "ckpt_mb": ms[0]["ckpt_mb"],
             "s_per_step": _mean_or_none([m["s_per_step"] for m in ms]),
             "tokens": ms[0]["tokens"], "tokens_per_param": tokens_per_param(runs[seeds[0]]),
             "flattening_pct": {s: flattening_pct(runs[s]) for s in seeds}}
        out[key] = e
    return out


def _f(x, nd=4):
    """A loss as a fixed-decimals string (the renderer would round floats > 1 to 2 decimals)."""
    return None if x is None else f"{float(x):.{nd}f}"


def _delta(summary: dict, key: str, ref: str = "base") -> tuple[float | None, list[float]]:
    if key not in summary or ref not in summary:
        return None, []
    imp = paired_improvements(summary[key]["test_loss_per_seed"], summary[ref]["test_loss_per_seed"])
    return (statistics.fmean(imp) if imp else None), imp


def make_floors(summary: dict) -> list[dict]:
    b = summary.get("base")
    if b is None:
        return []
    floors = []
    f = floor_check("training tokens per non-embedding parameter", b["tokens_per_param"], 20.0)
    floors.append({"arm": f"baseline (lr {b['lr']:g})", **f})
    for s, pct in sorted(b["flattening_pct"].items()):
        f = floor_check("val-loss gain over the last quarter (%)", pct, 2.0, higher_is_better=False)
        floors.append({"arm": f"baseline (lr {b['lr']:g}, seed {s})", **f})
    return floors


def vocab_law(summary: dict, plan: dict, distinct_bigrams: int) -> dict:
    pts = sorted((int(e["arm"].split("-m")[1]), e["test_loss"]) for k, e in summary.items() if k.startswith("a1:"))
    if len(pts) < 2:
        return {"points": pts}
    xs, ys = [math.log10(m) for m, _ in pts], [y for _, y in pts]
    a, b, r2 = fit_line(xs, ys)
    unsat = [(m, y) for m, y in pts if m <= distinct_bigrams]
    if len(unsat) < 3:
        unsat = pts
    ux, uy = [math.log10(m) for m, _ in unsat], [y for _, y in unsat]
    ua, ub, ur2 = fit_line(ux, uy)
    return {"points": pts, "fit_all": {"intercept": a, "slope": b, "r2": r2},
            "fit_unsaturated": {"intercept": ua, "slope": ub, "r2": ur2, "m_range": [unsat[0][0], unsat[-1][0]],
                                "drop": -ub * (ux[-1] - ux[0])},
            "distinct_bigrams": distinct_bigrams}


def make_claims(summary: dict, law: dict, floors: list[dict]) -> list[dict]:
    floor_ok = all(f["ok"] for f in floors) if floors else False
    missed = sorted({f["metric"] for f in floors if not f["ok"]})
    note = "the baseline missed its floor (" + "; ".join(missed) + ")" if floors else "no baseline recorded"
    noise = seed_noise([summary[k]["test_loss_per_seed"] for k in ("base", "main") if k in summary])
    claims = []

    def add(cid, claim, ref, verdict, extra=""):
        claims.append({"id": cid, "claim": claim, "paper_ref": ref, "status": verdict.status,
                       "evidence": (verdict.text() + (f"; {extra}" if extra else "")).strip("; ")})

    if "main" in summary and "base" in summary:
        _, imp = _delta(summary, "main")
        v = judge(imp, noise, "better", floor_ok=floor_ok, floor_note=note)
        add("oe_beats_baseline", f"OE ({summary['main']['arm']}) has a lower test loss than the baseline at equal "
            "tokens and ~equal dense FLOPs", "Table 1 (2.554 -> 2.472); Fig. 1", v,
            f"test loss {summary['base']['test_loss']:.4f} -> {summary['main']['test_loss']:.4f} "
            f"({_seeds(len(imp), 'paired ')})")
    if law.get("fit_unsaturated"):
        fu = law["fit_unsaturated"]
        v = judge([fu["drop"]], noise, "better", floor_ok=floor_ok, floor_note=note)
        if v.status == REPRODUCED and not fu["r2"] >= 0.8:
            v.status, v.reason = INCONCLUSIVE, f"the loss falls but R^2 = {fu['r2']:.2f} < 0.8 (not log-linear)"
        add("vocab_law", "test loss falls log-linearly in the n-gram table size m (n = 2, k = 1), "
            f"m = {fu['m_range'][0]}..{fu['m_range'][1]} (<= {law['distinct_bigrams']} distinct train bigrams)",
            "Fig. 5 (L = 2.6754 - 0.0256 log10 m)", v,
            f"the improvement is the fitted loss drop over that range; slope {fu['slope']:+.4f} per decade, "
            f"R^2 {fu['r2']:.3f}; all {len(law['points'])} points: slope "
            f"{law['fit_all']['slope']:+.4f}, R^2 {law['fit_all']['r2']:.3f}")
    a1 = [k for k in summary if k.startswith("a1:")]
    if a1 and "base" in summary:
        vs = []
        parts = []
        for k in a1:
            _, imp = _delta(summary, k)
            vs.append(judge(imp, noise, "better", floor_ok=floor_ok, floor_note=note))
            parts.append(f"m={k[3:]}: {statistics.fmean(imp):+.4f} ({_seeds(len(imp))})" if imp else f"m={k[3:]}: –")
        st = combine(vs)
        claims.append({"id": "every_oe_beats_baseline", "claim": "every A1 arm (n = 2, k = 1) beats the baseline",
                       "paper_ref": "Table 2; Fig. 5", "status": st,
                       "evidence": f"mean paired improvement vs baseline: {', '.join(parts)}; noise "
                                   f"{'none' if noise is None else f'{noise:.4f}'}"})
    if {"main", "deep", "base"} <= set(summary):
        m0, d0 = summary["main"]["test_loss_per_seed"], summary["deep"]["test_loss_per_seed"]
        b0 = summary["base"]["test_loss_per_seed"]
        imp = paired_improvements(m0, d0)
        v = judge(imp, noise, "not_worse", margin=0.0, floor_ok=floor_ok, floor_note=note)
        frac = None
        if 0 in b0 and 0 in d0 and 0 in m0 and b0[0] != d0[0]:
            frac = (b0[0] - m0[0]) / (b0[0] - d0[0])
        add("oe_matches_deeper", f"OE matches a 2x-deeper baseline ({summary['deep']['arm']})",
            "Fig. 1 (OE-12.8M at 400M ~ the 1B baseline)", v,
            "fraction of the deeper baseline's gain recovered by OE (seed 0): "
            + ("–" if frac is None else f"{frac:.2f}"))
    if {"hierarchy", "base"} <= set(summary):
        imp = paired_improvements(summary["base"]["test_loss_per_seed"], summary["hierarchy"]["test_loss_per_seed"])
        v = judge(imp, noise, "better", floor_ok=floor_ok, floor_note=note)
        same = next((e for e in summary.values() if e["role"] == "a1"
                     and e["arm"] == summary["hierarchy"]["arm"].removesuffix("-no1g")), None)
        add("hierarchy_needs_unigram", "the 2-gram table without the 1-gram table is worse than the baseline",
            "Table 3 (2.785 vs 2.714)", v,
            f"baseline {summary['base']['test_loss_per_seed'].get(0, float('nan')):.4f}, without 1-gram "
            f"{summary['hierarchy']['test_loss']:.4f}"
            + (f", with 1-gram {same['test_loss']:.4f}" if same else "")
            + " (seed 0; the improvement is the baseline's over the 2-gram-only model)")
    if {"ot", "main"} <= set(summary):
        imp = paired_improvements(summary["ot"]["test_loss_per_seed"], summary["main"]["test_loss_per_seed"])
        v = judge(imp, noise, "not_better", margin=0.0, floor_ok=floor_ok, floor_note=note)
        add("ot_next_token", "OT (OE + one MTP-DS head, weight 0.1) does not lower the next-token loss below OE's",
            "Table 5 (2.481 vs 2.472); smoke-level, 1 seed", v)
    return claims


def make_tables(summary: dict, records: list[dict], law: dict, scale: str, data_label: str) -> dict:
    """The tables from the summary; ``records``: the plan's records, diverged ones included (the LR table shows
    them as ``diverged``, the main table's caption names those at an arm's chosen LR)."""
    group = plan_group(scale)
    ours = plan_records(records, group)
    chosen = chosen_lrs(group, ours)
    lost = [r["run"] for r in ours if is_diverged(r) and r["arm"] in chosen and r["lr"] == chosen[r["arm"]]]
    rows = []
    base = summary.get("base")
    order = ["base", "main", "deep", "ot", "hierarchy"] + sorted((k for k in summary if k.startswith("a1:")),
                                                                  key=lambda k: int(k[3:]))
    for k in order:
        e = summary.get(k)
        if e is None:
            continue
        d, imp = _delta(summary, k) if k != "base" else (None, [])
        rows.append([e["arm"], e["role"], f"{e['lr']:g}", len(e["seeds"]), _f(e["test_loss"]), _f(e["test_loss_sd"]),
                     None if d is None else f"{d:+.4f}", _f(e["test_bpb"]), _f(e["val_loss"]),
                     e["params_non_embedding"], e["params_ngram_tables"],
                     round(1000 * e["s_per_step"]) if e["s_per_step"] else None,
                     round(e["s_per_step"] / base["s_per_step"], 2) if (base and base["s_per_step"]
                                                                        and e["s_per_step"]) else None])
    main = {"columns": ["arm", "role", "lr", "seeds", "test loss", "sd", "Δ vs baseline (paired, + = better)",
                        "test bits/byte", "val loss", "non-emb. params", "n-gram table params", "ms/step",
                        "step time / baseline"], "rows": rows,
            "caption": f"{data_label}, test split (nats/token); every arm at its family's LR chosen on the "
                       "validation split (seed 0); Δ = mean over common seeds of the paired per-seed difference."
                       + (f" Diverged (non-finite loss; not counted): {', '.join(lost)}." if lost else "")}
    seed0 = {arm: {r["lr"]: "diverged" if is_diverged(r) else r["val_loss"]
                   for r in ours if r["arm"] == arm and r["seed"] == 0}
             for arm in group.grid_arms}
    all_lrs = sorted({lr for got in seed0.values() for lr in got})
    lr_rows = []
    for arm, got in seed0.items():
        if not got:
            continue
        inside = bracketed(group, arm, ours)
        lr_rows.append([arm, *[got[lr] if got.get(lr) == "diverged" else _f(got.get(lr)) for lr in all_lrs],
                        None if arm not in chosen else f"{chosen[arm]:g}",
                        None if inside is None else ("yes" if inside else "no")])
    lr_grid = {"columns": ["arm", *[f"val loss @ {lr:g}" for lr in all_lrs], "chosen lr", "bracketed"],
               "rows": lr_rows,
               "caption": "Validation loss over the LR grid (seed 0), extensions included: while the best LR sits at "
                          "an edge of the LRs tried, one more beyond it (x2 or /2), at most "
                          f"{group.max_extensions} times (reprokit.plan); bracketed = the chosen LR lies strictly "
                          "inside the LRs tried."}
    law_rows = []
    fu = law.get("fit_unsaturated")
    a1 = {int(e["arm"].split("-m")[1]): k for k, e in summary.items() if k.startswith("a1:")}
    for m, y in law.get("points", []):
        pred = None if not fu else fu["intercept"] + fu["slope"] * math.log10(m)
        d, imp = _delta(summary, a1[m]) if m in a1 else (None, [])
        law_rows.append([m, f"{math.log10(m):.3f}", f"{m / max(law.get('distinct_bigrams', 1), 1):.3f}", _f(y),
                         None if d is None else f"{d:+.4f} ({len(imp)})", _f(pred)])
    seeds = sorted({s for k in a1.values() for s in summary[k]["seeds"]})
    vocab = {"columns": ["m", "log10 m", "m / distinct train bigrams", "test loss (mean)",
                         "gain vs baseline (paired, seeds)", "log-linear fit"], "rows": law_rows,
             "caption": f"A1: n = 2, k = 1, seeds {seeds}; the fit uses m <= the distinct train bigrams."
                        + (f" Slope {fu['slope']:+.4f} per decade, R^2 {fu['r2']:.3f}." if fu else "")}
    return {"main": main, "lr_grid": lr_grid, "vocab_law": vocab}


def make_figures(summary: dict, law: dict, records: list[dict], out: Path) -> list[str]:
    from matplotlib.figure import Figure

    files = []
    if law.get("points"):
        fig = Figure(figsize=(5.5, 3.8), dpi=110)
        ax = fig.subplots()
        xs = [math.log10(m) for m, _ in law["points"]]
        ax.plot(xs, [y for _, y in law["points"]], "o", label="OE n=2, k=1 (A1)")
        fu = law.get("fit_unsaturated")
        if fu:
            lo, hi = math.log10(fu["m_range"][0]), math.log10(fu["m_range"][1])
            ax.plot([lo, hi], [fu["intercept"] + fu["slope"] * lo, fu["intercept"] + fu["slope"] * hi], "-",
                    label=f"fit: slope {fu['slope']:+.4f}/decade, R² {fu['r2']:.2f}")
        if "base" in summary:
            ax.axhline(summary["base"]["test_loss"], color="grey", ls="--", label="baseline")
        if law.get("distinct_bigrams"):
            ax.axvline(math.log10(law["distinct_bigrams"]), color="red", ls=":", label="distinct train bigrams")
        ax.set_xlabel("log10 m (rows of the 2-gram table)")
        ax.set_ylabel("test loss (nats/token)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(out / "loss_vs_m.png")
        files.append("loss_vs_m.png")
    fig = Figure(figsize=(10, 3.8), dpi=110)
    axes = fig.subplots(1, 2)
    for key in ("base", "main", "deep", "ot", "hierarchy"):
        e = summary.get(key)
        if e is None:
            continue
        rec = next((r for r in records if r["arm"] == e["arm"] and r["lr"] == e["lr"] and r["seed"] == 0), None)
        if rec is None:
            continue
        for ax, curve in zip(axes, ("curve", "val_curve")):
            if rec[curve]:
                s, v = zip(*rec[curve])
                ax.plot(s, v, label=e["arm"])
    for ax, t in zip(axes, ("train loss", "val-subset loss")):
        ax.set_xlabel("step")
        ax.set_ylabel(t)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "curves.png")
    files.append("curves.png")
    return files


def ensure_result_markers(paper_dir: Path) -> None:
    """On the first committed small results, swap the README's pending paragraph (its "not yet run" or "in
    progress" intro and the marker line) for the result blocks, which ``render_readme`` then fills
    (``reprokit.results.install_result_blocks``)."""
    blocks = ["Our small reproduction (`results/small/`, written by `overtok reproduce --scale small --workers 2`):"]
    blocks += [f"<!-- BEGIN results:small/{t} -->\n<!-- END results:small/{t} -->" for t in RESULT_TABLES]
    blocks += ["<!-- BEGIN floors:small -->\n<!-- END floors:small -->",
               "<!-- BEGIN claims:small -->\n<!-- END claims:small -->",
               "![test loss against log10 m](results/small/loss_vs_m.png)\n\n![curves](results/small/curves.png)"]
    install_result_blocks(paper_dir, blocks)


def _seeds(n: int, kind: str = "") -> str:
    return f"{n} {kind}seed{'s' * (n != 1)}"


def _wall_time(out: Path, elapsed_s: float, n_runs: int, scale: str, from_scratch: bool, tag: str) -> float:
    """Cumulative wall time of the plan ``tag`` over its invocations (a resumed reproduction adds up), kept in
    wall_time.json; each invocation says its plan's budget tag and whether it started with none of that plan's
    runs finished (``from_scratch``). Invocations of another budget (an earlier plan) are kept, never summed."""
    path = out / "wall_time.json"
    inv = json.loads(path.read_text())["invocations"] if (path.is_file() and scale != "smoke") else []
    inv.append({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "elapsed_s": round(elapsed_s, 1), "runs_recorded": n_runs,
                "from_scratch": from_scratch, "tag": tag})
    path.write_text(json.dumps({"invocations": inv}, indent=1) + "\n")
    return sum(i["elapsed_s"] for i in inv if i.get("tag") == tag)


def build_report(scale: str, records: list[dict], out: Path, runs_dir: Path, elapsed_s: float = 0.0,
                 render: bool = False, from_scratch: bool = False) -> Path:
    from .data import ngram_counts
    from .train import prepare_data

    plan = PLANS[scale]
    group = plan_group(scale)
    records = plan_records(records, group)
    done = trained(records)
    cfg = base_config(scale)
    data = prepare_data(cfg)
    counts = ngram_counts(data, (2, 3))
    summary = summarize(records, scale)
    law = vocab_law(summary, plan, counts[2])
    floors = make_floors(summary)
    claims = make_claims(summary, law, floors)
    if cfg.data.source == "brown":
        label = f"Brown corpus, BPE {data.vocab_size}"
    elif cfg.data.source == "corpus":
        label = f"{' + '.join(cfg.data.corpora)} corpora pooled, BPE {data.vocab_size}"
    else:
        label = f"{data.source} tokens, V = {data.vocab_size}"
    tables = make_tables(summary, records, law, scale, label)
    figures = make_figures(summary, law, done, out)
    wall = _wall_time(out, elapsed_s, len(records), scale, from_scratch, group.tag)
    t = cfg.train
    protocol = {
        "data": {"source": cfg.data.source, "vocab_size": data.vocab_size,
                 "tokens": {s: int(len(v)) for s, v in data.tokens.items()},
                 "distinct_train_bigrams": counts[2], "distinct_train_trigrams": counts[3]},
        "training": {"steps": t.steps, "batch_size": t.batch_size, "seq_len": t.seq_len,
                     "tokens_per_run": t.steps * t.batch_size * t.seq_len, "schedule": t.schedule,
                     "warmup_frac": t.warmup_frac, "min_lr_frac": t.min_lr_frac, "optimizers":
                     "AdamW (dense) + SparseAdam (n-gram tables)" if t.sparse_tables else "AdamW"},
        "plan": group.summary(records),
        "sizes": {k: v for k, v in plan.items() if k != "train"},
        "arms": {a.name: {"key": key, "role": a.role, "family": a.family, "keys": dict(a.keys)}
                 for key, a in plan_arms(plan).items()},
        "selection": "each family's LR = lowest validation loss over the seed-0 runs of its grid arm (the grid, "
                     f"extended beyond an edge until bracketed, at most {group.max_extensions} times; "
                     "reprokit.plan); claims on the test split",
        "invocation": {"elapsed_s": round(elapsed_s, 1), "from_scratch": from_scratch},
        "noise": "larger seed std (ddof=1) of the test loss of the baseline and the main OE arm",
        "vocab_law": law, "figures": figures, "run_wall_s": {r["run"]: round(r["wall_s"], 1) for r in done},
    }
    arms = {e["arm"]: {k: v for k, v in e.items()} for e in summary.values()}
    path = write_results(out / "results.json", paper="overtok", scale=scale, arms=arms, tables=tables, claims=claims,
                         floors=floors, protocol=protocol, config=to_dict(cfg), seeds=plan["seeds"],
                         wall_time_s=wall, extra={"from_scratch": from_scratch,
                                                  "diverged_runs": [r["run"] for r in records if is_diverged(r)]})
    if render:
        ensure_result_markers(PKG_DIR)
        render_readme(PKG_DIR, write=True)
    return path
