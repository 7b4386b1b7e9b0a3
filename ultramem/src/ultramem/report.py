"""Summary, floors, claims (``reprokit.claims``), tables, figures and the README re-render of a reproduction.

Pre-registered verdict rules (the README states the same):

* seed noise = the largest seed-to-seed standard deviation of the test loss over dense, PKM and UltraMem
  (3 seeds each), ``reprokit.claims.seed_noise``;
* floors (the dense baseline at its chosen LR, every seed): >= 20 training tokens per non-embedding
  parameter, and the held-out (validation subset) loss improving by < 2 % over the last quarter of
  training; a missed floor makes every claim "not testable at this budget";
* C1 UltraMem beats PKM (Table 2 direction, -0.092 at 151M): paired per-seed test-loss improvements,
  ``judge(expect="better")``;
* C2 UltraMem beats dense at matched activated MACs (Table 1): the same rule;
* C3 MoE beats dense (the sparse-baseline sanity check): the same rule;
* UltraMem vs MoE is reported in the main table (the paired difference), never asserted: the paper has
  MoE ahead at 151M (2.63 vs 2.67).

Diverged runs (``reprokit.plan.diverged_record``: training raised on a non-finite loss; no metrics) count for the
plan (the LR choice ranks them last) but never for a metric: the summary, floors, claims and figures read
``trained(records)`` only, so an arm that lost a seed is judged on the seeds that trained. The LR table shows a
diverged run as ``diverged``; results.json lists them (``diverged_runs``) and the main table's caption names the
ones at an arm's chosen LR.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from reprokit.claims import floor_check, judge, paired_improvements, seed_noise
from reprokit.config import to_dict
from reprokit.plan import Group, bracketed, chosen_lrs, is_diverged, lr_decision, trained
from reprokit.results import install_result_blocks, render_readme, write_results

from .plan import ARM_KEYS, GROUPS, PKG_DIR, PLANS, base_config, flattening_pct, plan_arms, tokens_per_param

RESULT_TABLES = ("main", "lr_grid")


def summarize(records: list[dict], plan: dict, group: Group) -> dict[str, dict]:
    """Per arm, at its family's chosen LR (``reprokit.plan.chosen_lrs`` of ``group``), over the plan's seeds
    of that arm: per-seed metrics, means, spread. Only the plan's own runs count (same names, so the same
    budget tag), and of those the seeds that trained (a diverged run counts for the LR choice only)."""
    arms = plan_arms(plan)
    lrs = chosen_lrs(group, records)
    done = {r["run"]: r for r in trained(records)}
    out = {}
    for key, arm in arms.items():
        if key not in lrs:
            continue
        lr = lrs[key]
        names = {s: group.job(key, lr, s).name for s in group.seeds_of(key)}
        runs = {s: done[n] for s, n in names.items() if n in done}
        if not runs:
            continue
        seeds = sorted(runs)
        ms = [runs[s]["metrics"] for s in seeds]
        test = [m["test_loss"] for m in ms]
        out[key] = {"key": key, "arm": arm.name, "role": arm.role, "lr": lr, "seeds": seeds,
                    "runs": [runs[s]["run"] for s in seeds], "lr_bracketed": bracketed(group, arm.family, records),
                    "test_loss_per_seed": {s: runs[s]["metrics"]["test_loss"] for s in seeds},
                    "test_loss": statistics.fmean(test),
                    "test_loss_sd": statistics.stdev(test) if len(test) > 1 else None,
                    "val_loss": statistics.fmean(m["val_loss"] for m in ms),
                    "activated_macs": ms[0].get("count_activated_macs"),
                    "sparse_params": ms[0].get("params_sparse"),
                    "params_non_embedding": ms[0]["params_non_embedding"],
                    "s_per_step": statistics.fmean(m["s_per_step"] or 0.0 for m in ms),
                    "tokens_per_param": tokens_per_param(runs[seeds[0]]),
                    "flattening_pct": {s: flattening_pct(runs[s]) for s in seeds}}
    return out


def _imp(summary: dict, key: str, ref: str) -> list[float]:
    if key not in summary or ref not in summary:
        return []
    return paired_improvements(summary[key]["test_loss_per_seed"], summary[ref]["test_loss_per_seed"])


def make_floors(summary: dict) -> list[dict]:
    b = summary.get("dense")
    if b is None:
        return []
    dense_params = b["params_non_embedding"]
    floors = [{"arm": f"dense (lr {b['lr']:g})",
               **floor_check("training tokens per non-embedding parameter", b["tokens_per_param"], 20.0)}]
    for s, pct in sorted(b["flattening_pct"].items()):
        if pct is not None:
            floors.append({"arm": f"dense (lr {b['lr']:g}, seed {s})",
                           **floor_check("val-loss gain over the last quarter (%)", pct, 2.0,
                                         higher_is_better=False)})
    del dense_params
    return floors


def make_claims(summary: dict, floors: list[dict]) -> list[dict]:
    floor_ok = all(f["ok"] for f in floors) if floors else False
    missed = sorted({f["metric"] for f in floors if not f["ok"]})
    note = "the dense baseline missed its floor (" + "; ".join(missed) + ")" if floors else "no baseline recorded"
    noise = seed_noise([summary[k]["test_loss_per_seed"] for k in ("dense", "pkm", "ultramem") if k in summary])
    claims = []
    for cid, arm, ref, text, paper_ref in (
            ("ultramem_beats_pkm", "ultramem", "pkm", "UltraMem has a lower test loss than PKM at matched "
             "activated MACs and sparse parameters", "Table 2 (2.828 -> 2.736 val)"),
            ("ultramem_beats_dense", "ultramem", "dense", "UltraMem has a lower test loss than the dense model "
             "at matched activated MACs", "Table 1 (151M: 2.96 -> 2.67)"),
            ("moe_beats_dense", "moe", "dense", "MoE has a lower test loss than the dense model at matched "
             "activated MACs", "Table 1 (151M: 2.96 -> 2.63)")):
        if arm in summary and ref in summary:
            imp = _imp(summary, arm, ref)
            v = judge(imp, noise, "better", floor_ok=floor_ok, floor_note=note)
            claims.append({"id": cid, "claim": text, "paper_ref": paper_ref, "status": v.status,
                           "evidence": f"{v.text()}; test loss {summary[ref]['test_loss']:.4f} -> "
                                       f"{summary[arm]['test_loss']:.4f} ({len(imp)} paired seeds)"})
    return claims


def make_tables(summary: dict, records: list[dict], group: Group) -> dict:
    """The tables from the summary; ``records``: the plan's records, diverged ones included (the LR table shows
    them as ``diverged``, the main table's caption names those at an arm's chosen LR)."""
    rows = []
    for k in ARM_KEYS:
        e = summary.get(k)
        if e is None:
            continue
        d = _imp(summary, "ultramem", k) if k not in ("ultramem",) else []
        rows.append([e["arm"], f"{e['lr']:g}", len(e["seeds"]), f"{e['test_loss']:.4f}",
                     None if e["test_loss_sd"] is None else f"{e['test_loss_sd']:.4f}",
                     f"{statistics.fmean(d):+.4f}" if d else None, e["activated_macs"], e["sparse_params"],
                     round(1000 * e["s_per_step"]) if e["s_per_step"] else None])
    done = {r["run"]: r for r in records}
    lrs = chosen_lrs(group, records)
    lost = [r["run"] for r in records if is_diverged(r) and r["arm"] in lrs and r["lr"] == lrs[r["arm"]]]
    grid = []
    for arm in group.grid_arms:          # the plan's seed-0 grid runs of each arm, extensions included
        decided, _, jobs = lr_decision(group, arm, done)
        br = bracketed(group, arm, records)
        for j in sorted(jobs, key=lambda j: j.lr):
            if j.name in done:
                chosen = "" if not decided or j.lr != lrs.get(arm) else (
                    "chosen" + (" (bracketed)" if br else " (at the edge)"))
                rec = done[j.name]
                grid.append([arm, f"{j.lr:g}", "diverged" if is_diverged(rec) else f"{rec['metrics']['val_loss']:.4f}",
                             chosen])
    return {"main": {"columns": ["arm", "lr", "seeds", "test loss", "seed sd", "UltraMem gain vs this arm",
                                 "activated MACs/token", "sparse params", "ms/step"], "rows": rows,
                     "caption": "each arm at its family's chosen LR; UltraMem vs MoE is reported, not asserted"
                                + (f"; diverged (non-finite loss; not counted): {', '.join(lost)}" if lost else "")},
            "lr_grid": {"columns": ["arm", "lr", "val loss (seed 0)", "choice"], "rows": grid,
                        "caption": f"the LR grid (seed 0) with its edge extensions (x2 or /2, at most "
                                   f"{group.max_extensions}); 'at the edge': still unbracketed after them"}}


def make_figures(summary: dict, records: list[dict], out: Path) -> list[str]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), dpi=110)
    axes = fig.subplots(1, 2)
    for key in ARM_KEYS:
        e = summary.get(key)
        rec = e and next((r for r in records if r["run"] == e["runs"][0]), None)
        if not rec:
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
    return ["curves.png"]


def ensure_result_markers(paper_dir: Path) -> None:
    """On the first committed small results, swap the README's pending paragraph (its "not yet run" or "in
    progress" intro and the marker line) for the result blocks, which ``render_readme`` then fills
    (``reprokit.results.install_result_blocks``)."""
    blocks = ["Our small reproduction (`results/small/`, written by `ultramem reproduce --scale small --workers 2`):"]
    blocks += [f"<!-- BEGIN results:small/{t} -->\n<!-- END results:small/{t} -->" for t in RESULT_TABLES]
    blocks += ["<!-- BEGIN floors:small -->\n<!-- END floors:small -->",
               "<!-- BEGIN claims:small -->\n<!-- END claims:small -->", "![curves](results/small/curves.png)"]
    install_result_blocks(paper_dir, blocks)


def _wall_time(out: Path, elapsed_s: float, n_runs: int, scale: str, from_scratch: bool) -> float:
    path = out / "wall_time.json"
    inv = json.loads(path.read_text())["invocations"] if (path.is_file() and scale != "smoke") else []
    inv.append({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "elapsed_s": round(elapsed_s, 1), "runs_recorded": n_runs,
                "from_scratch": from_scratch})
    path.write_text(json.dumps({"invocations": inv}, indent=1) + "\n")
    return sum(i["elapsed_s"] for i in inv)


def build_report(scale: str, records: list[dict], out: Path, runs_dir: Path, elapsed_s: float = 0.0,
                 from_scratch: bool = False, render: bool = False) -> Path:
    """``from_scratch``: this invocation started with none of the plan's runs finished (its wall time is the
    whole plan's)."""
    plan, group = PLANS[scale], GROUPS[scale]
    cfg = base_config(scale)
    summary = summarize(records, plan, group)
    floors = make_floors(summary)
    claims = make_claims(summary, floors)
    tables = make_tables(summary, records, group)
    figures = make_figures(summary, trained(records), out)
    wall = _wall_time(out, elapsed_s, len(records), scale, from_scratch)
    t = cfg.train
    protocol = {
        "training": {"steps": t.steps, "batch_size": t.batch_size, "seq_len": t.seq_len,
                     "tokens_per_run": t.steps * t.batch_size * t.seq_len, "schedule": t.schedule,
                     "warmup_frac": t.warmup_frac, "min_lr_frac": t.min_lr_frac,
                     "optimizer": "AdamW (values: own group, LR x value_lr_mult)"},
        "plan": group.summary(records),
        "sizes": {k: v for k, v in plan.items() if k != "train"},
        "selection": "dense and UltraMem LRs = lowest validation loss over their own seed-0 runs (reprokit.plan: "
                     "the grid, extended x2 or /2 beyond an edge optimum at most twice); MoE uses the dense LR, "
                     "PKM and the ladder the UltraMem LR; claims on the test split",
        "invocation": {"wall_s": round(elapsed_s, 1), "from_scratch": from_scratch},
        "noise": "largest seed std (ddof=1) of the test loss over dense, PKM and UltraMem",
        "figures": figures, "run_wall_s": {r["run"]: round(r["wall_s"], 1) for r in trained(records)},
    }
    arms = {e["arm"]: dict(e) for e in summary.values()}
    path = write_results(out / "results.json", paper="ultramem", scale=scale, arms=arms, tables=tables,
                         claims=claims, floors=floors, protocol=protocol, config=to_dict(cfg), seeds=list(group.seeds),
                         wall_time_s=wall, extra={"diverged_runs": [r["run"] for r in records if is_diverged(r)]})
    if render:
        ensure_result_markers(PKG_DIR)
        render_readme(PKG_DIR, write=True)
    return path
