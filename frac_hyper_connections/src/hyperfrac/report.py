"""From the finished runs (``runs.jsonl`` records) to results.json, figures and the README tables.

* Selection: each arm's LR is the best of its seed-0 runs on the validation split (:func:`best_lr`); its other
  seeds ran at that LR. Only the runs of the plan (``reproduce.planned_jobs``) are passed in; records outside it
  are listed in the protocol, never used.
* Claims: ``reprokit.claims`` only. Each comparison pairs the arms' per-seed values at their chosen LRs (same
  seed = same data order and the same initial shared weights); the noise is ``seed_noise`` of the multi-seed
  arms involved; a claim whose baseline missed its quality floor (``plan["floors"]``) is "not testable at this
  budget". The similarity-order claim is a measurement on the trained models: it is still judged, with the
  floor miss stated in its evidence.
* Figures are made from the records alone (training curves from each record's ``curve``).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np

from reprokit.claims import NOT_TESTABLE, combine, floor_check, judge, paired_improvements, seed_noise

from .connections import parse_variant

__all__ = ["best_lr", "summarize", "make_floors", "make_claims", "make_tables", "make_figures", "write_report"]

PKG_DIR = Path(__file__).resolve().parents[2]

def label(arm: str) -> str:
    return parse_variant(arm).label()


def _score(kind: str):
    """Validation score to *minimise* for the LR choice."""
    return (lambda r: r["val_loss"]) if kind == "lm" else (lambda r: -r["val_top1"])


def best_lr(records: list[dict], kind: str, arm: str) -> float | None:
    """The LR of the best seed-0 run of ``(kind, arm)`` among ``records`` on the validation split (None if none)."""
    s0 = [r for r in records if r["kind"] == kind and r["arm"] == arm and r["seed"] == 0]
    return min(s0, key=_score(kind))["lr"] if s0 else None


def _mean(xs):
    return float(statistics.fmean(xs))


def _sd(xs):
    return float(statistics.stdev(xs)) if len(xs) > 1 else None


def _deep_cos(an: dict) -> float:
    c = an["adjacent_cosine"]
    return float(np.mean(c[len(c) // 2:]))


def _bits(r: dict, split: str) -> tuple[str, float]:
    """("bpb", value) where the bytes were known, else ("bpt", value) (older records: loss / ln 2)."""
    if f"{split}_bpb" in r:
        return "bpb", r[f"{split}_bpb"]
    return "bpt", r.get(f"{split}_bpt", r[f"{split}_loss"] / math.log(2.0))


def at_best(records: list[dict], kind: str, arm: str) -> list[dict]:
    """Every seed of ``(kind, arm)`` at its chosen LR, sorted by seed."""
    lr = best_lr(records, kind, arm)
    return sorted((r for r in records if r["kind"] == kind and r["arm"] == arm and r["lr"] == lr),
                  key=lambda r: r["seed"])


def per_seed(records: list[dict], kind: str, arm: str, key: str) -> dict[int, float]:
    """``{seed: value}`` of ``key`` (a metric, or ``deep_cos``) at the arm's chosen LR."""
    get = (lambda r: _deep_cos(r["analysis"])) if key == "deep_cos" else (lambda r: r[key])
    return {r["seed"]: get(r) for r in at_best(records, kind, arm)}


def summarize(records: list[dict], plan: dict) -> dict:
    """Per arm: chosen LR, every seed at that LR, means / per-seed values / sd (ddof=1) of the test metrics."""
    out = {}
    for kind, arms in (("lm", plan["lm_arms"]), ("vit", plan["vit_arms"])):
        for arm in arms:
            at = at_best(records, kind, arm)
            if not at:
                continue
            s0 = [r for r in records if r["kind"] == kind and r["arm"] == arm and r["seed"] == 0]
            b = at[0]
            e = {"kind": kind, "label": label(arm), "best_lr": b["lr"], "seeds": [r["seed"] for r in at],
                 "runs": [r["run"] for r in at], "params": b["params"], "conn_params": b["conn_params"],
                 "param_overhead_pct": 100 * b["conn_params"] / (b["params"] - b["conn_params"]),
                 "flop_overhead_pct": 100 * b["flops_conn"] / b["flops_model"],
                 "s_per_step": _mean([r["s_per_step"] for r in at]),
                 "grid": {f"{r['lr']:g}": (r["val_loss"] if kind == "lm" else r["val_top1"]) for r in s0}}
            vals = {"deep_cos": [_deep_cos(r["analysis"]) for r in at]}
            if kind == "lm":
                unit = {_bits(r, "test")[0] for r in at}
                e["bits_unit"] = "bpb" if unit == {"bpb"} else "bpt"
                vals.update({k: [r[k] for r in at] for k in ("val_loss", "test_loss", "test_ppl")})
                vals["test_" + e["bits_unit"]] = [
                    r["test_bpb"] if e["bits_unit"] == "bpb" else _bits(r, "test")[1] for r in at]
            else:
                vals.update({k: [r[k] for r in at] for k in ("val_top1", "test_top1", "test_loss")})
            for k, v in vals.items():
                e[k] = _mean(v)
                e[k + "_per_seed"] = v
                e[k + "_sd"] = _sd(v)
            out[f"{kind}:{arm}"] = e
    return out


def _seeds_text(e: dict) -> str:
    n = len(e["seeds"])
    return f"mean of {n} seeds" if n > 1 else f"seed {e['seeds'][0]}"


def _flattening(r: dict) -> float | None:
    """Relative held-out improvement over the last quarter of training: (val at 3/4 - final val) / val at 3/4
    (None when the run logged no validation loss at 3/4 of its steps)."""
    steps = r.get("steps")
    at = {v["step"]: v["loss"] for v in r.get("val_curve") or [] if "loss" in v}
    if not steps or 3 * steps // 4 not in at:
        return None
    v34 = at[3 * steps // 4]
    return (v34 - r["val_loss"]) / v34


def _extension_rule(plan: dict) -> str:
    n = plan.get("max_extensions", 1)
    return (f"an arm whose best LR is at an edge of the LRs tried gets one more LR beyond that edge (x2 or /2), "
            f"at most {n} time{'s' if n > 1 else ''}, decided from its own seed-0 results only.")


def _tried(records: list[dict], kind: str, arm: str) -> list[float]:
    return sorted({r["lr"] for r in records if r["kind"] == kind and r["arm"] == arm and r["seed"] == 0})


def _bracket_text(records: list[dict], kind: str, arm: str) -> str:
    lrs = _tried(records, kind, arm)
    best = best_lr(records, kind, arm)
    if len(lrs) < 3:
        return "no (fewer than 3 LRs)"
    return "yes" if lrs[0] < best < lrs[-1] else ("no: best at the lowest LR" if best == lrs[0]
                                                  else "no: best at the highest LR")


def make_floors(summary: dict, plan: dict, records: list[dict] | None = None) -> list[dict]:
    """The baselines' quality floors of this scale (``plan["floors"]``) as ``floor_check`` records: the
    quality floor of each baseline and, for the LM baseline, the training-regime checks (tokens per
    non-embedding parameter, held-out loss flattening over the last quarter)."""
    fl = plan.get("floors", {})
    out = []
    if "lm" in fl and "lm:prenorm" in summary:
        e = summary["lm:prenorm"]
        unit = plan.get("loss_unit", "nats/token")
        out.append({"arm": "LM Pre-Norm", **floor_check(f"test loss in {unit}, {_seeds_text(e)}", e["test_loss"],
                                                          fl["lm"], higher_is_better=False, strict=True)})
        base = [r for r in at_best(records or [], "lm", "prenorm")]
        if "tokens_per_param" in fl and base:
            r = base[0]
            tpp = r["train_tokens"] / r["nonembed_params"] if r.get("nonembed_params") else None
            out.append({"arm": "LM Pre-Norm", **floor_check(
                f"training tokens per non-embedding parameter ({r.get('train_tokens')} / {r.get('nonembed_params')})",
                tpp, fl["tokens_per_param"])})
        if "flat_last_quarter" in fl and base:
            flat = [_flattening(r) for r in base]
            worst = None if any(f is None for f in flat) else max(flat)
            out.append({"arm": "LM Pre-Norm", **floor_check(
                f"held-out loss gain over the last quarter of training, worst of {len(base)} seed(s)", worst,
                fl["flat_last_quarter"], higher_is_better=False, strict=True)})
    if "vit" in fl and "vit:prenorm" in summary:
        e = summary["vit:prenorm"]
        out.append({"arm": "ViT (Pre-Norm)", **floor_check(f"test top-1, {_seeds_text(e)}", e["test_top1"],
                                                             fl["vit"], higher_is_better=True)})
    return out


def _floor(floors: list[dict], arm: str) -> tuple[bool, str]:
    for f in floors:
        if f["arm"] == arm and not f["ok"]:
            return False, (f"the baseline missed its quality floor ({arm} {f['metric']} = {f['value']:.4f}; "
                           f"floor {f['direction']} {f['floor']})")
    return True, ""


def _effect(v) -> str:
    if v.effect is None:
        return v.reason
    per = ", ".join(f"{x:+.4f}" for x in v.improvements)
    thr = "none" if v.threshold is None else f"{v.threshold:.4f}"
    return f"improvement {v.effect:+.4f} (per seed {per}; noise {thr})"


def _claim(records, cid, text, ref, prefix, comparisons, floor=(True, ""), measurement=False) -> dict:
    """One claim from its comparisons ``(title, kind, arm, reference, key, lower_is_better, noise arms, expect)``:
    status by ``reprokit.claims.combine``; also the status the same comparisons give without the floor."""
    verdicts, free = [], []
    for title, kind, arm, refarm, key, lower, noise_arms, expect in comparisons:
        a, r = per_seed(records, kind, arm, key), per_seed(records, kind, refarm, key)
        imp = paired_improvements(a, r, lower_is_better=lower)
        noise = seed_noise([per_seed(records, kind, x, key) for x in noise_arms])
        ok, note = (True, "") if measurement else floor
        verdicts.append((title, judge(imp, noise, expect=expect, floor_ok=ok, floor_note=note)))
        free.append(judge(imp, noise, expect=expect))
    status = combine([v for _, v in verdicts])
    parts = [f"{t}: {_effect(v)}" for t, v in verdicts]
    if status == NOT_TESTABLE:
        why = floor[1]
    else:
        why = "; ".join(f"{t}: {v.reason}" for t, v in verdicts) if len(verdicts) > 1 else verdicts[0][1].reason
        if not floor[0]:
            why += f"; a measurement, stated although {floor[1]}"
    return {"id": cid, "claim": text, "paper_ref": ref, "status": status,
            "evidence": f"{prefix}; " + "; ".join(parts) + f" — {why}", "why": why,
            "status_without_floor": combine(free),
            "verdicts": [{"comparison": t, **v.as_dict()} for t, v in verdicts]}


def make_claims(records: list[dict], summary: dict, plan: dict, floors: list[dict]) -> list[dict]:
    claims = []
    have = lambda *a: all(f"lm:{x}" in summary for x in a)  # noqa: E731
    fl = _floor(floors, "LM Pre-Norm")
    unit = plan.get("loss_unit", "nats/token")

    def loss(*arms):
        return f"test loss ({unit}) " + ", ".join(f"{label(a)} {summary[f'lm:{a}']['test_loss']:.4f} "
                                                    f"({_seeds_text(summary[f'lm:{a}'])})" for a in arms)

    def cmp(title, arm, ref, arms, expect="better", key="test_loss", lower=True):
        return (title, "lm", arm, ref, key, lower, arms, expect)

    if have("dhcx4", "prenorm"):
        claims.append(_claim(records, "dhc4_beats_prenorm", "DHCx4 has lower loss than Pre-Norm",
                             "HC Table 1 (V2 loss 2.781 vs 2.811)", loss("dhcx4", "prenorm"),
                             [cmp("DHCx4 over Pre-Norm", "dhcx4", "prenorm", ["dhcx4", "prenorm"])], fl))
    if have("dhcx1", "prenorm"):
        claims.append(_claim(records, "n1_no_gain", "n = 1 does not help (DHCx1 no better than Pre-Norm)",
                             "HC Table 1 (2.819 vs 2.811)", loss("dhcx1", "prenorm"),
                             [cmp("DHCx1 over Pre-Norm", "dhcx1", "prenorm", ["dhcx1", "prenorm"], "not_better")],
                             fl))
    if have("dhcx4", "dhcx2"):
        claims.append(_claim(records, "n4_beats_n2", "n = 4 beats n = 2 (DHCx4 < DHCx2)",
                             "HC Table 1 (2.781 vs 2.802)", loss("dhcx4", "dhcx2"),
                             [cmp("DHCx4 over DHCx2", "dhcx4", "dhcx2", ["dhcx4", "dhcx2"])], fl))
    if have("dfcx4", "prenorm", "dhcx4"):
        arms = ["dfcx4", "dhcx4", "prenorm"]
        claims.append(_claim(records, "dfc4_between", "DFCx4 beats Pre-Norm, with less gain than DHCx4",
                             "FC Fig. 5 / Table 3", loss(*arms),
                             [cmp("DFCx4 over Pre-Norm", "dfcx4", "prenorm", arms),
                              cmp("DHCx4 over DFCx4", "dhcx4", "dfcx4", arms)], fl))
    if have("prenorm", "dfcx4", "dhcx4"):
        arms = ["prenorm", "dfcx4", "dhcx4"]
        # "improvement" = a higher cosine (more similar adjacent sublayer inputs): Pre-Norm > FC, FC > HC
        c = ", ".join(f"{label(a)} {summary[f'lm:{a}']['deep_cos']:.4f}" for a in arms)
        claims.append(_claim(records, "collapse_order", "adjacent-sublayer similarity: Pre-Norm > FC > HC",
                             "FC Fig. 2 (OLMoE-7B); HC Fig. 3",
                             f"median cos(input_k, input_k+1) of the deeper half (improvement = more similar): {c}",
                             [cmp("Pre-Norm above DFCx4", "prenorm", "dfcx4", arms, key="deep_cos", lower=False),
                              cmp("DFCx4 above DHCx4", "dfcx4", "dhcx4", arms, key="deep_cos", lower=False)],
                             fl, measurement=True))
    if all(f"vit:{a}" in summary for a in ("prenorm", "shcx2", "dhcx2")):
        arms = ["prenorm", "shcx2", "dhcx2"]
        t = ", ".join(f"{label(a) if a != 'prenorm' else 'ViT'} {summary[f'vit:{a}']['test_top1']:.4f} "
                      f"({_seeds_text(summary[f'vit:{a}'])})" for a in arms)
        claims.append(_claim(records, "vit_hc", "ViT with SHCx2 / DHCx2 beats the ViT baseline (top-1)",
                             "HC Table 11 (Base: 76.38 -> 77.60 / 77.26)", f"test top-1 {t}",
                             [("SHCx2 over ViT", "vit", "shcx2", "prenorm", "test_top1", False, arms, "better"),
                              ("DHCx2 over ViT", "vit", "dhcx2", "prenorm", "test_top1", False, arms, "better")],
                             _floor(floors, "ViT (Pre-Norm)")))
    return claims


def _f4(x):
    return None if x is None else f"{x:.4f}"


def _delta(records, kind, arm, ref, key="test_loss"):
    """Mean over common seeds of (arm - ref) of ``key`` at each arm's chosen LR (None without common seeds)."""
    imp = paired_improvements(per_seed(records, kind, arm, key), per_seed(records, kind, ref, key))
    return -_mean(imp) if imp else None


def make_tables(records: list[dict], summary: dict, plan: dict) -> dict:
    rows = []
    bits = {summary[f"lm:{a}"]["bits_unit"] for a in plan["lm_arms"] if f"lm:{a}" in summary}
    unit = "bpb" if bits == {"bpb"} else "bpt"
    for arm in plan["lm_arms"]:
        e = summary.get(f"lm:{arm}")
        if e is None:
            continue
        dpre = _delta(records, "lm", arm, "prenorm") if arm != "prenorm" and "lm:prenorm" in summary else None
        d1 = _delta(records, "lm", arm, "dhcx1") if arm != "dhcx1" and "lm:dhcx1" in summary else None
        sd = e["test_loss_sd"]
        rows.append([e["label"], f"{e['best_lr']:g}", len(e["seeds"]), f"{e['val_loss']:.4f}",
                     f"{e['test_loss_per_seed'][0]:.4f}",
                     f"{e['test_loss']:.4f}" if sd is None else f"{e['test_loss']:.4f} ± {sd:.4f}",
                     f"{e['test_ppl']:.3f}", f"{e['test_' + unit]:.4f}", _signed(dpre), _signed(d1),
                     f"{e['deep_cos']:.4f}", e["conn_params"], f"{e['param_overhead_pct']:.2f}%",
                     f"{e['flop_overhead_pct']:.2f}%", f"{1000 * e['s_per_step']:.0f}"])
    bits_col = "test bits/byte" if unit == "bpb" else "test bits/token"
    bits_note = ("bits/byte over the UTF-8 bytes of the evaluated text" if unit == "bpb" else
                 "bits/token (the bytes behind these tokens are unknown, so no bits/byte)")
    tables = {"lm": {"columns": ["arm", "best lr", "seeds", "val loss", "test loss seed 0", "test loss (mean)",
                                 "test PPL", bits_col, "Δ vs Pre-Norm", "Δ vs DHCx1", "adj. cos (deep)",
                                 "conn. params", "param +%", "FLOP +%", "ms/step"], "rows": rows,
                     "caption": f"{plan['lm_data']}. Each arm at its best LR (chosen on the validation split, "
                                f"seed 0); test loss in {plan.get('loss_unit', 'nats/token')}; mean ± sd (ddof=1) over "
                                "seeds; PPL and "
                                f"{bits_note} of the mean; Δ = mean over common seeds of the per-seed test-loss "
                                "difference (paired; negative = lower loss)."}}
    grid = sorted({r["lr"] for r in records if r["kind"] == "lm" and r["seed"] == 0})
    tables["lr_grid"] = {"columns": ["arm", *[f"val loss @ lr {g:g}" for g in grid]],
                         "rows": [[summary[f"lm:{a}"]["label"], *[_f4(summary[f"lm:{a}"]["grid"].get(f"{g:g}"))
                                   for g in grid]] for a in plan["lm_arms"] if f"lm:{a}" in summary],
                         "caption": "Validation loss of every arm at every LR (seed 0): the baseline is shown at "
                                    "each LR, so no gain comes from an under-tuned baseline. Base grid "
                                    f"{{{', '.join(f'{g:g}' for g in plan['lr_grid'])}}}; "
                                    + _extension_rule(plan)}
    tables["lr_bracket"] = {
        "columns": ["kind", "arm", "LRs tried (seed 0)", "chosen LR", "bracketed"],
        "rows": [[kind, summary[f"{kind}:{a}"]["label"], ", ".join(f"{x:g}" for x in _tried(records, kind, a)),
                  f"{summary[f'{kind}:{a}']['best_lr']:g}", _bracket_text(records, kind, a)]
                 for kind in ("lm", "vit") for a in plan.get(f"{kind}_grid_arms", plan[f"{kind}_arms"])
                 if f"{kind}:{a}" in summary],
        "caption": "Whether each grid arm's chosen LR lies strictly inside the LRs it tried (the optimum is "
                   "bracketed); arms without a grid ran at their family's chosen LR. " + _extension_rule(plan)}
    vgrid = sorted({r["lr"] for r in records if r["kind"] == "vit" and r["seed"] == 0})
    vrows = []
    vb = summary.get("vit:prenorm")
    for arm in plan["vit_arms"]:
        e = summary.get(f"vit:{arm}")
        if e is None:
            continue
        vrows.append([e["label"] if arm != "prenorm" else "ViT (Pre-Norm)", f"{e['best_lr']:g}", len(e["seeds"]),
                      *[_f4(e["grid"].get(f"{g:g}")) for g in vgrid], f"{e['test_top1']:.4f}",
                      None if arm == "prenorm" or vb is None else f"{e['test_top1'] - vb['test_top1']:+.4f}",
                      e["conn_params"], f"{1000 * e['s_per_step']:.0f}"])
    tables["vit"] = {"columns": ["arm", "best lr", "seeds", *[f"val top-1 @ {g:g}" for g in vgrid],
                                 "test top-1", "Δ top-1", "conn. params", "ms/step"], "rows": vrows,
                     "caption": f"{plan['vit_data']}. Base grid {{{', '.join(f'{g:g}' for g in plan['vit_lr_grid'])}}}"
                                " with the same edge rule."}
    return tables


def _signed(x):
    return None if x is None else f"{x:+.4f}"


def make_figures(records: list[dict], summary: dict, plan: dict, out: Path) -> None:
    from reprokit.plots import plot_curves

    from .analysis import plot_lines, plot_matrix
    best = {}
    for arm in plan["lm_arms"]:
        e = summary.get(f"lm:{arm}")
        if e:
            best[arm] = next(r for r in records if r["arm"] == arm and r["kind"] == "lm" and r["seed"] == 0
                             and r["lr"] == e["best_lr"])
    if not best:
        return
    plot_curves({label(a): r["curve"] for a, r in best.items()}, x="step", ys=["loss"], out=out / "curves.png",
                title="training loss (best LR, seed 0)")
    for a in ("prenorm", "dhcx1", "dhcx4", "shcx4", "dfcx4"):
        if a in best:
            plot_matrix(np.asarray(best[a]["analysis"]["connection_matrix"]), out / f"connection_matrix_{a}.png",
                        f"{label(a)}: unrolled connection matrix (HC Eq. 20)")
    plot_lines({label(a): r["analysis"]["adjacent_cosine"] for a, r in best.items()}, out / "adjacent_cosine.png",
               "sublayer pair (k, k+1)", "median cos(input_k, input_k+1)", "representation similarity")
    for a in ("dhcx4", "dfcx4"):
        if a in best:
            n = np.asarray(best[a]["analysis"]["stream_norms"])
            plot_lines({f"{'stream' if 'hc' in a else 'fraction'} {i}": n[:, i].tolist() for i in range(n.shape[1])},
                       out / f"stream_norms_{a}.png", "sublayer", "mean L2 norm", f"{label(a)} per-stream norms")
    gn = {}
    for a, r in best.items():
        last = [x for x in r["curve"] if "gn_00" in x]
        if last:
            gn[label(a)] = [last[-1][k] for k in sorted(last[-1]) if k.startswith("gn_")]
    if gn:
        plot_lines(gn, out / "grad_norms.png", "sublayer", "gradient norm (last logged step)",
                   "per-sublayer gradient norms")


def budget_table(out: Path, records: list[dict], plan: dict, wall_time_s: float) -> dict:
    """What the plan cost: its runs, the wall time of its recorded invocations (wall_time.json), and the sum of
    its runs' own times (with N workers running side by side, about N x the wall time)."""
    wt = out / "wall_time.json"
    tag = plan_tag(plan)
    inv = [i for i in json.loads(wt.read_text())["invocations"] if i.get("tag") == tag] if wt.is_file() else []
    rows = [[kind, plan.get(f"{kind}_tag") or "–", sum(r["kind"] == kind for r in records),
             f"{sum(r['wall_s'] for r in records if r['kind'] == kind):,.0f}"] for kind in ("lm", "vit")]
    stopped = sum(bool(i.get("interrupted")) for i in inv)
    return {"columns": ["part", "budget tag", "runs", "summed run time (s)"], "rows": rows,
            "caption": f"Wall time of the plan ({tag}): {wall_time_s:,.0f} s over {len(inv)} recorded invocation(s) "
                       f"({stopped} stopped and resumed), 1 thread per run; the summed run time counts each run's "
                       "own seconds, so with 2 workers side by side it is about twice the wall time."}


def plan_tag(plan: dict) -> str:
    """The budget tag a plan's wall time is summed under (wall_time.json): both kinds' step budgets."""
    return f"lm-{plan.get('lm_tag') or 'untagged'}+vit-{plan.get('vit_tag') or 'untagged'}"


def write_report(scale: str, out: Path, records: list[dict], plan: dict, config: dict, protocol: dict,
                 wall_time_s: float, render: bool = False) -> Path:
    """results.json + figures into ``out`` from the planned runs' records; re-render the README if ``render``."""
    from reprokit.results import render_readme, write_results

    summary = summarize(records, plan)
    floors = make_floors(summary, plan, records)
    claims = make_claims(records, summary, plan, floors)
    tables = make_tables(records, summary, plan)
    tables["budget"] = budget_table(out, records, plan, wall_time_s)
    make_figures(records, summary, plan, out)
    path = write_results(out / "results.json", paper="hyperfrac", scale=scale, arms=summary, tables=tables,
                         claims=claims, floors=floors, protocol=protocol, config=config, seeds=plan["seeds"],
                         wall_time_s=wall_time_s)
    if render:
        render_readme(PKG_DIR, write=True)
    return path
