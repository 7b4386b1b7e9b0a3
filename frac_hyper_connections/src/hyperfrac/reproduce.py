"""``reproduce --scale smoke|small``: every arm at equal tokens, LR grid, seeds, claims, figures, results.json.

Protocol (small): each LM arm is trained at every LR of ``lr_grid`` with seed 0 (and, when its best LR is at an
edge of the grid, at one more LR beyond that edge, x2 or /2); its LR is chosen on the
validation plays; the arms named in ``seed_arms`` are re-run with further seeds at their chosen LR; everything
is reported on the *test* plays (not used for the choice). Same seed = same data order and the same initial
weights for the shared parts (paired comparison). ViT arms: same, top-1 on Fashion-MNIST (val = last 10% of
train). Runs are appended to ``runs.jsonl`` as they finish, so an interrupted reproduction resumes.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from reprokit.checkpoint import load_checkpoint
from reprokit.config import from_dict, load_config, to_dict

from .config import Cfg
from .connections import connection_param_count, parse_variant

PKG_DIR = Path(__file__).resolve().parents[2]

LM_ARMS = ["prenorm", "dhcx4", "dfcx4", "dhcx1", "dhcx2", "shcx4", "dhcx4-notanh", "sfcx4", "dfcx2"]
VIT_ARMS = ["prenorm", "shcx2", "dhcx2"]

PLANS = {
    "smoke": {"lm_config": "smoke.yaml", "vit_config": "smoke_vit.yaml", "lm_arms": ["prenorm", "dhcx2", "dfcx2"],
              "vit_arms": ["prenorm", "dhcx2"], "lr_grid": [3e-3], "vit_lr_grid": [2e-3], "seeds": [0, 1],
              "seed_arms": ["prenorm", "dhcx2"], "vit_seed_arms": ["dhcx2"]},
    "small": {"lm_config": "small.yaml", "vit_config": "small_vit.yaml", "lm_arms": LM_ARMS, "vit_arms": VIT_ARMS,
              "lr_grid": [3e-3, 6e-3, 1.2e-2], "vit_lr_grid": [1e-3, 2e-3, 4e-3], "seeds": [0, 1],
              "seed_arms": ["prenorm", "dhcx4", "dfcx4"], "vit_seed_arms": []},
}


def _label(arm: str) -> str:
    return parse_variant(arm).label()


def _run_name(arm: str, lr: float, seed: int) -> str:
    return f"{arm}_lr{lr:g}_s{seed}"


def _flops_per_token(cfg: Cfg) -> tuple[float, float]:
    """(model forward FLOPs/token, connection forward FLOPs/token) — our analytic count: 2 x matmul params +
    attention 4 T d per layer; connections: norm ~7sw, projection 2sw(k+1), read 2rsw, mix 2s^2w, write 2sw."""
    m = cfg.model
    d, L = m.d_model, m.n_layers
    hid = m.mlp_hidden or (int(math.ceil(8 * d / 3 / 8) * 8) if m.mlp == "swiglu" else 4 * d)
    mlp = (3 if m.mlp == "swiglu" else 2) * d * hid
    T = cfg.train.seq_len if m.kind == "lm" else (m.image_size // m.patch) ** 2 + 1
    out = m.vocab_size * d if m.kind == "lm" else 0
    model = 2 * (L * (4 * d * d + mlp) + out) + 4 * L * T * d
    spec = parse_variant(m.connection)
    if spec.kind == "prenorm":
        return model, 0.0
    s = spec.rate
    w, r = (d, 1) if spec.kind == "hc" else (d // s, s)
    k = r + s
    per = 2 * r * s * w + 2 * s * s * w + 2 * s * w + (7 * s * w + 2 * s * w * (k + 1) if spec.dynamic else 0)
    return model, float(2 * L * per)


def _one_run(base: Cfg, arm: str, lr: float, seed: int, runs_dir: Path, data) -> dict:
    from .analysis import analyze_model
    from .data import lm_batch
    from .model import build_model
    from .train import train

    cfg = from_dict(Cfg, to_dict(base))
    cfg.model.connection = arm
    cfg.train.lr = lr
    cfg.train.seed = seed
    out = runs_dir / _run_name(arm, lr, seed)
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    m = train(cfg, out, data=data)
    wall = time.perf_counter() - t0
    model = build_model(cfg.model)
    model.load_state_dict(load_checkpoint(out / "ckpt").model)
    if cfg.model.kind == "lm":
        x, _ = lm_batch(data.val, cfg.train.seq_len, 16, 1234, 0, 0)
    else:
        x = data.x_val[:64]
    an = analyze_model(model, x)
    (out / "analysis.json").write_text(json.dumps(an))
    shutil.rmtree(out / "ckpt")  # keep the folder small; metrics.jsonl, config.yaml, analysis.json stay
    fl_model, fl_conn = _flops_per_token(cfg)
    spec = parse_variant(arm)
    n_conn = 2 * cfg.model.n_layers * connection_param_count(spec, cfg.model.d_model, cfg.model.dyn_norm_affine)
    return {"arm": arm, "kind": cfg.model.kind, "lr": lr, "seed": seed, "run": out.name, **m,
            "wall_s": wall, "s_per_step": m["train_wall_s"] / cfg.train.steps, "conn_params": n_conn,
            "flops_model": fl_model, "flops_conn": fl_conn, "analysis": an}


def _done(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    return {r["run"]: r for r in (json.loads(x) for x in path.read_text().splitlines() if x.strip())}


def run_plan(scale: str, out: Path) -> list[dict]:
    from .train import make_data
    plan = PLANS[scale]
    runs_dir = out / "arms"
    log = out / "runs.jsonl"
    if scale == "smoke":  # seconds: always from scratch (only the long scales resume from runs.jsonl)
        log.unlink(missing_ok=True)
        shutil.rmtree(runs_dir, ignore_errors=True)
    runs_dir.mkdir(parents=True, exist_ok=True)
    done = _done(log)
    records = list(done.values())
    cfg_dir = PKG_DIR / "configs"
    for kind, cfg_name, arms, grid in (("lm", plan["lm_config"], plan["lm_arms"], plan["lr_grid"]),
                                       ("vit", plan["vit_config"], plan["vit_arms"], plan["vit_lr_grid"])):
        base = load_config(Cfg, cfg_dir / cfg_name)
        data = make_data(base)  # sets vocab_size for the LM
        score = (lambda r: r["val_loss"]) if kind == "lm" else (lambda r: -r["val_top1"])
        # grid for the arms that get extra seeds first, so an interrupted run has the key comparisons
        seed_arms = plan["seed_arms"] if kind == "lm" else plan["vit_seed_arms"]
        order = [a for a in arms if a in seed_arms] + [a for a in arms if a not in seed_arms]
        jobs = [(a, lr, 0) for a in order for lr in grid]
        for stage in (0, 1, 2):
            for arm, lr, seed in jobs:
                name = _run_name(arm, lr, seed)
                if name in done:
                    continue
                rec = _one_run(base, arm, lr, seed, runs_dir, data)
                print(f"[{scale}] {name}: " + (f"val {rec['val_loss']:.4f} test {rec['test_loss']:.4f}"
                                               if kind == "lm" else f"val top1 {rec['val_top1']:.4f}")
                      + f" ({rec['wall_s']:.0f}s)", flush=True)
                with open(log, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                done[name] = rec
                records.append(rec)
            if stage == 0:  # best LR at an edge of the grid: try one more LR beyond that edge (x2 or /2)
                jobs = []
                for arm in order:
                    mine = [r for r in records if r["arm"] == arm and r["kind"] == kind and r["seed"] == 0]
                    lrs = sorted({r["lr"] for r in mine})
                    best = min(mine, key=score)["lr"]
                    if len(lrs) > 1 and best == lrs[-1]:
                        jobs.append((arm, best * 2, 0))
                    elif len(lrs) > 1 and best == lrs[0]:
                        jobs.append((arm, best / 2, 0))
            if stage == 1:
                jobs = []
                for arm in seed_arms:
                    mine = [r for r in records if r["arm"] == arm and r["kind"] == kind and r["seed"] == 0]
                    best = min(mine, key=score)["lr"]
                    jobs += [(arm, best, s) for s in plan["seeds"] if s != 0]
    return records


# ---------------------------------------------------------------------------------------------------------
def _mean(xs):
    return float(statistics.fmean(xs))


def _half_range(xs):
    return (max(xs) - min(xs)) / 2 if len(xs) > 1 else None


def _deep_cos(an: dict) -> float:
    c = an["adjacent_cosine"]
    return float(np.mean(c[len(c) // 2:]))


def summarize(records: list[dict], plan: dict) -> dict:
    """Best LR per arm (on val, seed 0), then every seed at that LR; test metrics averaged over seeds."""
    out = {}
    for kind, arms in (("lm", plan["lm_arms"]), ("vit", plan["vit_arms"])):
        for arm in arms:
            rs = [r for r in records if r["arm"] == arm and r["kind"] == kind]
            if not rs:
                continue
            s0 = [r for r in rs if r["seed"] == 0]
            best = (min(s0, key=lambda r: r["val_loss"]) if kind == "lm" else max(s0, key=lambda r: r["val_top1"]))
            at = [r for r in rs if r["lr"] == best["lr"]]
            keys = (["val_loss", "test_loss", "test_ppl", "test_bpb"] if kind == "lm"
                    else ["val_top1", "test_top1", "test_loss"])
            e = {"kind": kind, "label": _label(arm), "best_lr": best["lr"], "seeds": sorted(r["seed"] for r in at),
                 "params": best["params"], "conn_params": best["conn_params"],
                 "param_overhead_pct": 100 * best["conn_params"] / (best["params"] - best["conn_params"]),
                 "flop_overhead_pct": 100 * best["flops_conn"] / best["flops_model"],
                 "s_per_step": _mean([r["s_per_step"] for r in at]),
                 "deep_cos": _mean([_deep_cos(r["analysis"]) for r in at]),
                 "grid": {f"{r['lr']:g}": (r["val_loss"] if kind == "lm" else r["val_top1"]) for r in s0}}
            for k in keys:
                e[k] = _mean([r[k] for r in at])
                e[k + "_per_seed"] = [r[k] for r in sorted(at, key=lambda r: r["seed"])]
                e[k + "_half_range"] = _half_range([r[k] for r in at])
            out[f"{kind}:{arm}"] = e
    return out


def _paired_delta(records, arm, base, kind="lm", key="test_loss"):
    """Mean over common seeds of (arm - base) at each arm's chosen LR."""
    summ = {}
    for a in (arm, base):
        s0 = [r for r in records if r["arm"] == a and r["kind"] == kind and r["seed"] == 0]
        if not s0:
            return None, []
        best = min(s0, key=lambda r: r["val_loss"])["lr"] if kind == "lm" else max(s0, key=lambda r: r["val_top1"])["lr"]
        summ[a] = {r["seed"]: r[key] for r in records if r["arm"] == a and r["kind"] == kind and r["lr"] == best}
    common = sorted(set(summ[arm]) & set(summ[base]))
    ds = [summ[arm][s] - summ[base][s] for s in common]
    return (_mean(ds) if ds else None), ds


def _noise(summary, *arms, floor=0.005):
    """Seed noise: the largest half-range of test loss over the given arms that have >1 seed (floor 0.005)."""
    hr = [summary[f"lm:{a}"]["test_loss_half_range"] for a in arms
          if f"lm:{a}" in summary and summary[f"lm:{a}"]["test_loss_half_range"] is not None]
    return max(hr + [floor])


def _vit_test_n(records, plan) -> int:
    """Number of test images the ViT arms were scored on (records from before it was logged: the config cap)."""
    for r in records:
        if r["kind"] == "vit" and r.get("test_n"):
            return int(r["test_n"])
    cap = load_config(Cfg, PKG_DIR / "configs" / plan["vit_config"]).data.eval_tokens
    return cap or 10000


def make_claims(records, summary, plan) -> list[dict]:
    claims = []

    def status_better(delta, noise):  # negative delta = arm better
        if delta is None:
            return "inconclusive"
        return "reproduced" if delta < -noise else ("not reproduced" if delta > noise else "inconclusive")

    have = lambda *a: all(f"lm:{x}" in summary for x in a)  # noqa: E731
    if have("dhcx4", "prenorm"):
        d, ds = _paired_delta(records, "dhcx4", "prenorm")
        nz = _noise(summary, "dhcx4", "prenorm")
        claims.append({"id": "dhc4_beats_prenorm", "claim": "DHCx4 has lower loss than Pre-Norm",
                       "paper_ref": "HC Table 1 (V2 loss 2.781 vs 2.811)", "status": status_better(d, nz),
                       "evidence": f"test loss Δ = {d:+.4f} nats/char (paired per seed: "
                                   f"{', '.join(f'{x:+.4f}' for x in ds)}; seed noise ±{nz:.4f}); each at its best LR"})
    if have("dhcx1", "prenorm"):
        d, _ = _paired_delta(records, "dhcx1", "prenorm")
        nz = _noise(summary, "prenorm")
        st = "reproduced" if d >= -nz else "not reproduced"
        claims.append({"id": "n1_no_gain", "claim": "n = 1 does not help (DHCx1 no better than Pre-Norm)",
                       "paper_ref": "HC Table 1 (2.819 vs 2.811)", "status": st,
                       "evidence": f"DHCx1 − Pre-Norm test loss Δ = {d:+.4f} (seed 0 only; seed noise ±{nz:.4f}): no gain "
                                   "from n = 1 beyond noise"})
    if have("dhcx4", "dhcx2"):
        d, _ = _paired_delta(records, "dhcx4", "dhcx2")
        nz = _noise(summary, "dhcx4")
        d1, _ = _paired_delta(records, "dhcx4", "dhcx1") if have("dhcx1") else (None, [])
        claims.append({"id": "n4_beats_n2", "claim": "n = 4 beats n = 2 (DHCx4 < DHCx2)",
                       "paper_ref": "HC Table 1 (2.781 vs 2.802)", "status": status_better(d, nz),
                       "evidence": f"DHCx4 − DHCx2 Δ = {d:+.4f}; DHCx4 − DHCx1 Δ = "
                                   f"{'–' if d1 is None else f'{d1:+.4f}'} (seed noise ±{nz:.4f})"})
    if have("dfcx4", "prenorm", "dhcx4"):
        dfc, _ = _paired_delta(records, "dfcx4", "prenorm")
        dhc, _ = _paired_delta(records, "dhcx4", "prenorm")
        nz = _noise(summary, "dfcx4", "dhcx4", "prenorm")
        beats = status_better(dfc, nz)
        less = status_better(dhc - dfc, nz)  # DHC gain larger -> dhc - dfc < 0
        st = "reproduced" if beats == less == "reproduced" else (
            "not reproduced" if "not reproduced" in (beats, less) else "inconclusive")
        claims.append({"id": "dfc4_between", "claim": "DFCx4 beats Pre-Norm, with less gain than DHCx4",
                       "paper_ref": "FC Fig. 5 / Table 3", "status": st,
                       "evidence": f"DFCx4 − Pre-Norm Δ = {dfc:+.4f} ({beats}); DHCx4 − Pre-Norm Δ = {dhc:+.4f}; "
                                   f"DHCx4 − DFCx4 = {dhc - dfc:+.4f} ({less}); seed noise ±{nz:.4f}"})
    if have("prenorm", "dfcx4", "dhcx4"):
        c = {a: summary[f"lm:{a}"]["deep_cos"] for a in ("prenorm", "dfcx4", "dhcx4")}
        ok = c["prenorm"] > c["dfcx4"] > c["dhcx4"]
        claims.append({"id": "collapse_order", "claim": "adjacent-sublayer similarity: Pre-Norm > FC > HC",
                       "paper_ref": "FC Fig. 2 (OLMoE-7B); HC Fig. 3",
                       "status": "reproduced" if ok else "not reproduced",
                       "evidence": "median cos(input_k, input_k+1), deeper half: "
                                   + ", ".join(f"{_label(a)} {v:.4f}" for a, v in c.items())})
    if "vit:prenorm" in summary and "vit:shcx2" in summary and "vit:dhcx2" in summary:
        b = summary["vit:prenorm"]["test_top1"]
        s, d = summary["vit:shcx2"]["test_top1"], summary["vit:dhcx2"]["test_top1"]
        n_test = _vit_test_n(records, plan)
        band = 2 * math.sqrt(2 * b * (1 - b) / n_test)  # 2 standard errors of a difference of two accuracies
        st = "reproduced" if (s > b + band and d > b + band) else (
            "not reproduced" if (s < b - band or d < b - band) else "inconclusive")
        claims.append({"id": "vit_hc", "claim": "ViT with SHCx2 / DHCx2 beats the ViT baseline (top-1)",
                       "paper_ref": "HC Table 11 (Base: 76.38 -> 77.60 / 77.26)", "status": st,
                       "evidence": f"Fashion-MNIST test top-1 ({n_test} images, one seed): baseline {b:.4f}, "
                                   f"SHCx2 {s:.4f} ({s - b:+.4f}), DHCx2 {d:.4f} ({d - b:+.4f}); "
                                   f"2-SE band ±{band:.4f}"})
    return claims


def _f4(x):
    return None if x is None else f"{x:.4f}"


def make_tables(records, summary, plan) -> dict:
    base = summary.get("lm:prenorm")
    dhc1 = summary.get("lm:dhcx1")
    rows = []
    for arm in plan["lm_arms"]:
        e = summary.get(f"lm:{arm}")
        if e is None:
            continue
        dpre, _ = _paired_delta(records, arm, "prenorm") if base else (None, [])
        d1, _ = _paired_delta(records, arm, "dhcx1") if dhc1 else (None, [])
        hr = e["test_loss_half_range"]
        rows.append([e["label"], f"{e['best_lr']:g}", len(e["seeds"]), f"{e['val_loss']:.4f}",
                     f"{e['test_loss_per_seed'][0]:.4f}",
                     f"{e['test_loss']:.4f}" if hr is None else f"{e['test_loss']:.4f} ± {hr:.4f}",
                     f"{e['test_ppl']:.3f}", f"{e['test_bpb']:.4f}",
                     None if arm == "prenorm" or dpre is None else f"{dpre:+.4f}",
                     None if arm == "dhcx1" or d1 is None else f"{d1:+.4f}",
                     f"{e['deep_cos']:.4f}", e["conn_params"], f"{e['param_overhead_pct']:.2f}%",
                     f"{e['flop_overhead_pct']:.2f}%", f"{1000 * e['s_per_step']:.0f}"])
    tables = {"lm": {"columns": ["arm", "best lr", "seeds", "val loss", "test loss seed 0", "test loss (mean)", "test PPL",
                                 "test bits/byte", "Δ vs Pre-Norm", "Δ vs DHCx1", "adj. cos (deep)",
                                 "conn. params", "param +%", "FLOP +%", "ms/step"], "rows": rows,
                     "caption": "Char-level Shakespeare (test plays). Each arm at its best LR of the grid (chosen on "
                                "the val plays, seed 0); test loss in nats/char; mean ± half the range over seeds; PPL and bits/byte "
                                "of the mean; Δ = mean over common seeds of the per-seed difference (paired)."}}
    grid = sorted({r["lr"] for r in records if r["kind"] == "lm" and r["seed"] == 0})
    tables["lr_grid"] = {"columns": ["arm", *[f"val loss @ lr {g:g}" for g in grid]],
                         "rows": [[summary[f"lm:{a}"]["label"], *[_f4(summary[f"lm:{a}"]["grid"].get(f"{g:g}"))
                                   for g in grid]] for a in plan["lm_arms"] if f"lm:{a}" in summary],
                         "caption": "Validation loss of every arm at every LR of the grid (seed 0): the baseline is "
                                    "shown at each LR, so no gain comes from an under-tuned baseline. Arms whose best "
                                    "LR was at an edge of {3e-3, 6e-3, 1.2e-2} got one more LR beyond it."}
    vgrid = sorted({r["lr"] for r in records if r["kind"] == "vit" and r["seed"] == 0})
    vrows = []
    vb = summary.get("vit:prenorm")
    for arm in plan["vit_arms"]:
        e = summary.get(f"vit:{arm}")
        if e is None:
            continue
        vrows.append([e["label"] if arm != "prenorm" else "ViT (Pre-Norm)", f"{e['best_lr']:g}",
                      *[_f4(e["grid"].get(f"{g:g}")) for g in vgrid], f"{e['test_top1']:.4f}",
                      None if arm == "prenorm" or vb is None else f"{e['test_top1'] - vb['test_top1']:+.4f}",
                      e["conn_params"], f"{1000 * e['s_per_step']:.0f}"])
    tables["vit"] = {"columns": ["arm", "best lr", *[f"val top-1 @ {g:g}" for g in vgrid],
                                 "test top-1", "Δ top-1", "conn. params", "ms/step"], "rows": vrows,
                     "caption": "Small ViT on Fashion-MNIST (one seed)."}
    return tables


def make_figures(records, summary, plan, out: Path) -> None:
    from reprokit.plots import plot_curves

    from .analysis import plot_lines, plot_matrix
    runs = out / "arms"
    best = {}
    for arm in plan["lm_arms"]:
        e = summary.get(f"lm:{arm}")
        if e:
            best[arm] = next(r for r in records if r["arm"] == arm and r["kind"] == "lm" and r["seed"] == 0
                             and r["lr"] == e["best_lr"])
    if not best:
        return
    plot_curves({_label(a): runs / r["run"] / "metrics.jsonl" for a, r in best.items()}, x="step", ys=["loss"],
                out=out / "curves.png", filter={"split": "train"}, title="training loss (best LR, seed 0)")
    for a in ("prenorm", "dhcx1", "dhcx4", "shcx4", "dfcx4"):
        if a in best:
            plot_matrix(np.asarray(best[a]["analysis"]["connection_matrix"]), out / f"connection_matrix_{a}.png",
                        f"{_label(a)}: unrolled connection matrix (HC Eq. 20)")
    plot_lines({_label(a): r["analysis"]["adjacent_cosine"] for a, r in best.items()}, out / "adjacent_cosine.png",
               "sublayer pair (k, k+1)", "median cos(input_k, input_k+1)", "representation similarity")
    for a in ("dhcx4", "dfcx4"):
        if a in best:
            n = np.asarray(best[a]["analysis"]["stream_norms"])
            plot_lines({f"{'stream' if 'hc' in a else 'fraction'} {i}": n[:, i].tolist() for i in range(n.shape[1])},
                       out / f"stream_norms_{a}.png", "sublayer", "mean L2 norm", f"{_label(a)} per-stream norms")
    gn = {}
    for a, r in best.items():
        recs = [json.loads(x) for x in (runs / r["run"] / "metrics.jsonl").read_text().splitlines()]
        last = [x for x in recs if x.get("split") == "train" and "gn_00" in x]
        if last:
            gn[_label(a)] = [last[-1][k] for k in sorted(last[-1]) if k.startswith("gn_")]
    if gn:
        plot_lines(gn, out / "grad_norms.png", "sublayer", "gradient norm (last logged step)",
                   "per-sublayer gradient norms")


def run_reproduce(scale: str, out_dir: str | None = None) -> Path:
    from reprokit.results import render_readme, write_results

    if scale not in PLANS:
        raise ValueError(f"unknown scale {scale!r}; valid: {sorted(PLANS)}")
    torch.set_num_threads(1)
    plan = PLANS[scale]
    out = Path(out_dir) if out_dir else PKG_DIR / "results" / scale
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    records = run_plan(scale, out)
    summary = summarize(records, plan)
    claims = make_claims(records, summary, plan)
    tables = make_tables(records, summary, plan)
    make_figures(records, summary, plan, out)
    arms = {k: {kk: vv for kk, vv in v.items()} for k, v in summary.items()}
    cfg_dir = PKG_DIR / "configs"
    config = {"lm": to_dict(load_config(Cfg, cfg_dir / plan["lm_config"])),
              "vit": to_dict(load_config(Cfg, cfg_dir / plan["vit_config"]))}
    protocol = {"plan": plan, "selection": "best LR per arm on the validation split (seed 0); extra seeds at that "
                "LR; test split reported", "threads": 1,
                "run_wall_s": {r["run"]: round(r["wall_s"], 1) for r in records}}
    path = write_results(out / "results.json", paper="hyperfrac", scale=scale, arms=arms, tables=tables,
                         claims=claims, protocol=protocol, config=config, seeds=plan["seeds"],
                         wall_time_s=sum(r["wall_s"] for r in records) if records else time.perf_counter() - t0)
    if out_dir is None:
        try:
            render_readme(PKG_DIR, write=True)
        except (OSError, ValueError) as e:  # results are written; say loudly that the README is stale
            print(f"WARNING: README not re-rendered: {e}", flush=True)
    return path


def cmd_reproduce(args) -> int:
    p = run_reproduce(args.scale, args.out_dir)
    print(f"wrote {p}")
    return 0
