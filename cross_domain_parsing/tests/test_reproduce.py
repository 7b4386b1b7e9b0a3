"""reproduce.py on reprokit.plan: the parser LR grid extends beyond an edge until bracketed (on source-val mIoU),
the chosen LR flows into every other arm's config (adversarial rates unchanged), resume never recomputes a
finished record, and the report's LR table. A fake ``run_one`` stands in for training (no training here)."""

import json
import math
from pathlib import Path

import pytest

import crossparse.reproduce as rp
from crossparse.config import TARGETS, Cfg
from reprokit.claims import STATUSES
from reprokit.config import ConfigError, load_config
from reprokit.results import load_results
from reprokit.runs import read_jsonl
from reprokit.testing import check_stopped_reproduction_wall_time


def _metrics(v: float, targets=TARGETS) -> dict:
    m = {"miou": v, "pixel_acc": v, "fg_acc": v, "precision": v, "recall": v, "f1": v, "n_classes": 12}
    return {"source_val": dict(m), **{f"{t}_test": dict(m) for t in targets}}


def _fake(calls: list, peak: float):
    """source-val mIoU peaks (in log LR) at ``peak``; target mIoU depends on the arm only (fixed LR)."""
    gain = {"source_only": 0.0, "feature": 0.02, "label": 0.02, "outspace": 0.01, "full": 0.06, "oracle": 0.2,
            "ft5": 0.03, "ft20": 0.05, "ft50": 0.08}

    def run_one(cfg_path, job, run_dir, overrides):
        calls.append((job.name, overrides))
        arm, target = rp.split_arm(job.arm)
        src = 0.8 - 0.05 * abs(math.log2(job.lr / peak)) + 0.001 * job.seed
        ev = _metrics(0.5 + gain[arm] + 0.002 * job.seed)
        ev["source_val"]["miou"] = src
        return {"run": job.name, "plan_arm": job.arm, "arm": arm, "target": target, "lr": job.lr, "seed": job.seed,
                "tag": job.tag, "steps": 10, "source_val_miou": src, "metrics": ev, "final_loss": 1.0,
                "train_seconds": 1.0, "eval_seconds": 0.1, "curve": [{"step": 10, "loss": 1.0}],
                "eval_curve": [{"step": 10, "source_val": src, **{f"{t}_val": 0.5 for t in TARGETS},
                                **{f"{t}_test": 0.5 for t in TARGETS}}]}
    return run_one


def _names(calls):
    return [n for n, _ in calls]


def test_arm_names_and_every_arm_in_the_plan():
    g = rp.PLANS["small"]["group"]
    assert g.job("full-indoor", 0.001, 1).name == "full-indoor_it1500_lr0.001_s1"
    assert rp.split_arm("ft20-runway") == ("ft20", "runway") and rp.split_arm("source_only") == ("source_only", None)
    for bad in ("full", "source_only-indoor", "full-mars", "nope-indoor"):
        with pytest.raises(ConfigError, match="plan arm"):
            rp.split_arm(bad)
    planned = {rp.split_arm(a)[0] for a in (*g.grid_arms, *g.secondary)}
    assert planned == set(rp.ARMS)
    assert {rp.split_arm(a)[1] for a in g.secondary} == set(TARGETS)
    assert g.select_by == "source_val_miou" and g.maximize      # held-out source images, never target labels
    small = load_config(Cfg, str(rp.MEMBER / "configs" / "small.yaml"), [])
    assert g.tag == f"it{small.train.steps}"                       # the budget tag names the iteration count
    assert g.lr_grid == (small.train.lr / 2, small.train.lr, small.train.lr * 2)


@pytest.mark.parametrize("peak, tried, chosen, br", [
    (1e-3, [5e-4, 1e-3, 2e-3], 1e-3, True),                      # bracketed at once: no extension
    (4e-3, [5e-4, 1e-3, 2e-3, 4e-3, 8e-3], 4e-3, True),         # best at the top edge: extended twice
    (5e-5, [5e-4, 1e-3, 2e-3, 2.5e-4, 1.25e-4], 1.25e-4, False),  # still at the edge after 2: reported
])
def test_grid_extends_until_bracketed(tmp_path, monkeypatch, peak, tried, chosen, br):
    calls: list = []
    monkeypatch.setattr(rp, "run_one", _fake(calls, peak))
    res = load_results(rp.run_reproduce("small", out_dir=str(tmp_path)))
    grid = [n for n in _names(calls) if n.startswith("source_only") and n.endswith("_s0")]
    assert grid == [f"source_only_{rp.PLANS['small']['group'].tag}_lr{lr:g}_s0" for lr in tried]
    plan = res["protocol"]["plan"]
    assert math.isclose(plan["chosen_lr"], chosen) and plan["bracketed"] is br
    # 3 seeds of source-only and full x 4 targets, 7 one-seed arms x 4 targets
    assert len(calls) == len(set(_names(calls))) == len(tried) + 2 + 12 + 28
    t = res["tables"]["lr_grid"]
    assert [r[2] for r in t["rows"]].count("yes") == 1 and f"bracketed (best LR strictly inside the LRs tried): " \
        f"{'yes' if br else 'no'}" in t["caption"]
    assert sum("(extension)" in r[0] for r in t["rows"]) == len(tried) - 3


def test_fine_tuning_runs_go_first_once_the_lr_is_decided(tmp_path, monkeypatch):
    """They need the source-only seed-0 checkpoint in runs/ (not committed): run right after the grid, a long
    reproduction resumed elsewhere never depends on it. Same run set, only the order changes."""
    calls: list = []
    monkeypatch.setattr(rp, "run_one", _fake(calls, 1e-3))          # bracketed at once: 3 grid runs
    rp.run_reproduce("small", out_dir=str(tmp_path))
    names = _names(calls)
    assert all(n.startswith("source_only") for n in names[:3])
    assert all(n.startswith("ft") for n in names[3:15]) and not any(n.startswith("ft") for n in names[15:])
    g = rp.PLANS["small"]["group"]
    recs = read_jsonl(tmp_path / "runs.jsonl")
    assert sorted(j.name for j in rp.ft_first(g, recs)) == sorted(j.name for j in rp.planned_jobs([g], recs))


def test_chosen_lr_flows_into_every_arm(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(rp, "run_one", _fake(calls, 2e-3 * 1.2))   # best of the grid: 2e-3 (interior after 1 ext.)
    res = load_results(rp.run_reproduce("small", out_dir=str(tmp_path)))
    lr = res["protocol"]["plan"]["chosen_lr"]
    assert math.isclose(lr, 2e-3) and res["protocol"]["parser_lr"] == lr
    cfg_path = str(rp.MEMBER / "configs" / "small.yaml")
    base = load_config(Cfg, cfg_path, [])
    for name, ov in calls:
        if name.startswith("source_only") and name.endswith("_s0"):
            continue                                                  # the grid itself
        cfg = load_config(Cfg, cfg_path, ov)
        assert math.isclose(cfg.train.lr, lr), name
        for k in ("c_lr", "df_lr", "adv_lr", "dl_lr"):                # adversarial rates: the config's, unscaled
            assert getattr(cfg.adapt, k) == getattr(base.adapt, k), (name, k)
        if cfg.adapt.finetune_n:                                      # from source-only seed 0 *at the chosen LR*
            assert Path(cfg.train.init_from).name == f"source_only_{rp.PLANS['small']['group'].tag}_lr{lr:g}_s0" and cfg.train.steps == 300
        else:
            assert cfg.train.steps == base.train.steps
    # tables and claims use the chosen LR only; the other grid runs appear in the LR table alone
    assert all(r["lr"] == lr for r in rp.main_records(read_jsonl(tmp_path / "runs.jsonl"), lr))
    assert res["tables"]["source_val"]["rows"][0][1] == 3         # source-only: its 3 seeds at the chosen LR
    assert {c["status"] for c in res["claims"]} <= set(STATUSES)
    assert res["tables"]["indoor"]["rows"][0][1] == 3 and "parser lr 0.002" in res["tables"]["indoor"]["caption"]


def test_a_diverged_run_is_reported_not_dropped(tmp_path, monkeypatch):
    """Source-only diverges at the top grid LR (its best trained LR 1e-3 is then bracketed, although the fake
    mIoU keeps rising with the LR) and full loses seed 1 on indoor: the report builds, the LR table says
    ``diverged``, every arm runs at 1e-3, and the indoor claims pair the seeds that trained."""
    import re

    calls: list = []
    fake = _fake(calls, 4e-3)
    tag = rp.PLANS["small"]["group"].tag
    diverge = {f"source_only_{tag}_lr0.002_s0", f"full-indoor_{tag}_lr0.001_s1"}

    def run_one(cfg_path, job, run_dir, overrides):
        if job.name in diverge:
            calls.append((job.name, overrides))
            raise FloatingPointError(f"non-finite loss at step 5: {{'seg': nan}} ({job.name})")
        return fake(cfg_path, job, run_dir, overrides)

    monkeypatch.setattr(rp, "run_one", run_one)
    res = load_results(rp.run_reproduce("small", out_dir=str(tmp_path)))
    plan = res["protocol"]["plan"]
    assert math.isclose(plan["chosen_lr"], 1e-3) and plan["bracketed"] is True
    assert sorted(res["diverged_runs"]) == sorted(diverge)
    rows = {r[0]: r for r in res["tables"]["lr_grid"]["rows"]}
    assert list(rows) == ["0.0005", "0.001", "0.002"]
    assert rows["0.002"][1] == "diverged" and rows["0.001"][2] == "yes" and rows["0.001"][3] == "yes"
    assert len(calls) == 3 + 2 + 12 + 28                             # no extension: bracketed by the diverged LR
    full = {r[0]: r for r in res["tables"]["indoor"]["rows"]}["full model"]
    assert full[1] == 2 and res["arms"]["full"]["indoor"]["seeds"] == [0, 2]
    assert f"full-indoor_{tag}_lr0.001_s1" in res["tables"]["indoor"]["caption"]
    ev = next(c for c in res["claims"] if c["id"] == "full_gain")["evidence"]
    per_seed = re.search(r"indoor: gain \S+ \(per seed ([^)]*)\)", ev).group(1)
    assert len(per_seed.split(", ")) == 2                            # seeds 0 and 2, paired
    assert {c["status"] for c in res["claims"]} <= set(STATUSES)
    assert all(not r.get("diverged") for r in rp.main_records(read_jsonl(tmp_path / "runs.jsonl"), 1e-3))
    calls.clear()
    rp.run_reproduce("small", out_dir=str(tmp_path))                 # resumed: a diverged run is never retried
    assert calls == []


def test_resume_never_recomputes_a_finished_record(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(rp, "run_one", _fake(calls, 1e-3))
    rp.run_reproduce("small", out_dir=str(tmp_path))
    recs = read_jsonl(tmp_path / "runs.jsonl")
    first = _names(calls)
    keep = {r["run"] for r in recs[:7]}                               # interrupted after 7 runs
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs if r["run"] in keep))
    calls.clear()
    rp.run_reproduce("small", out_dir=str(tmp_path))
    assert sorted(_names(calls)) == sorted(set(first) - keep)         # the same set, only the missing runs
    calls.clear()
    rp.run_reproduce("small", out_dir=str(tmp_path))                  # complete: only the report is rebuilt
    assert calls == [] and len(read_jsonl(tmp_path / "runs.jsonl")) == len(first)

    # the plan's wall time adds up over its three invocations (wall_time.json), the first from scratch
    inv = json.loads((tmp_path / "wall_time.json").read_text())["invocations"]
    assert [i["from_scratch"] for i in inv] == [True, False, False] and {i["tag"] for i in inv} == {rp.PLANS["small"]["group"].tag}
    assert load_results(tmp_path / "results.json")["wall_time_s"] == pytest.approx(sum(i["elapsed_s"] for i in inv), abs=0.2)


def test_smoke_plan_is_small():
    from reprokit.plan import planned_jobs

    g = rp.PLANS["smoke"]["group"]
    recs = [{"run": j.name, "lr": j.lr, "source_val_miou": 0.5} for j in planned_jobs([g], [])]
    assert len(planned_jobs([g], recs)) == 7      # 2 grid LRs, source-only s1, full x2 seeds, oracle, ft5


def test_a_stopped_reproduction_still_records_its_wall_time(tmp_path, monkeypatch):
    """Ctrl-C mid-plan: the invocation's seconds are kept in wall_time.json (marked interrupted), and the
    resumed invocation adds its own; results.json's wall time is their sum."""
    calls: list = []
    check_stopped_reproduction_wall_time(rp, _fake(calls, 1e-3), calls, tmp_path, monkeypatch)


def test_committed_small_results_are_rebuilt_from_runs_jsonl(tmp_path):
    """The committed results.json is what report.py makes of runs.jsonl under the plan and the config it stores:
    every committed record is a run of that plan, the plan is complete, and the tables, floors and claims are
    rebuilt exactly (nothing typed by hand)."""
    from crossparse.report import write_report
    from reprokit.config import from_dict
    from reprokit.testing import check_results_rebuilt

    group = rp.PLANS["small"]["group"]

    def rebuild(records, res):
        return write_report("small", tmp_path, tmp_path / "runs", records, rp.plan_summary(group, records),
                            from_dict(Cfg, res["config"]), wall_time_s=res["wall_time_s"], render=False)

    res, records = check_results_rebuilt(rp.MEMBER / "results" / "small", rebuild)
    plan = rp.plan_summary(group, records)
    assert sorted(r["run"] for r in records) == sorted(plan["runs"]) and len(records) == 46
    assert plan == res["protocol"]["plan"]
    # every validity floor met, the parser LR bracketed; the verdicts the README states
    assert all(f["ok"] for f in res["floors"]) and res["protocol"]["plan"]["bracketed"] is True
    assert {c["id"]: c["status"] for c in res["claims"]} == {"full_gain": "not reproduced", "ordering": "not reproduced",
                                                             "finetune_equivalent": "not reproduced"}


def test_report_survives_a_target_without_full_runs(tmp_path):
    """Claims on a target with no full run (smoke's one-target arms, or a lost arm) read "gain n/a" instead of
    crashing the report (a regression the harness's smoke run caught)."""
    from crossparse.report import write_report
    from reprokit.config import from_dict

    small = rp.MEMBER / "results" / "small"
    res = load_results(small / "results.json")
    records = [r for r in read_jsonl(small / "runs.jsonl") if not r["run"].startswith("full-runway")]
    plan = rp.plan_summary(rp.PLANS["small"]["group"], records)
    new = load_results(write_report("small", tmp_path, tmp_path / "runs", records, plan, from_dict(Cfg, res["config"]),
                                    wall_time_s=1.0, render=False))
    ev = next(c for c in new["claims"] if c["id"] == "full_gain")["evidence"]
    assert "runway: gain n/a (per seed )" in ev and "indoor: gain +0.0099" in ev
