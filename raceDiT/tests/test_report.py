"""report.py: the claims go through reprokit.claims (paired seeds, seed noise, the dense baseline's
floor), and the committed results/small/results.json is what report.py makes of runs.jsonl."""

import json
from pathlib import Path

from racedit.config import Cfg
from racedit.report import claims, floors, write_report
from racedit.reproduce import ARMS, PLANS, arm_runs, chosen_lr, grid_runs
from reprokit.claims import INCONCLUSIVE, NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED
from reprokit.config import load_config
from reprokit.runs import read_jsonl

MEMBER = Path(__file__).resolve().parents[1]
SMALL = MEMBER / "results" / "small"


def _rec(arm, seed, lr=0.008, **m):
    base = {"heldout_loss": 0.27, "fid": 100.0, "class_accuracy": 0.9, "maxvio": 1.0, "combination_usage": 50.0,
            "experts_per_token_by_t": [2.0, 2.0], "experts_per_token_fg": 2.0, "experts_per_token_bg": 2.0}
    return {"run": f"{arm}_lr{lr:g}_s{seed}", "arm": arm, "lr": lr, "seed": seed, **base, **m}


def _records(dense_acc: float) -> list[dict]:
    recs = [_rec("dense", 0, class_accuracy=dense_acc)]
    for s, jitter in ((0, 0.0), (1, 0.001)):
        recs += [_rec("tc", s, heldout_loss=0.28 + jitter, fid=110.0 + s),
                 _rec("ec", s, heldout_loss=0.281 + jitter, fid=111.0 + s),
                 _rec("race", s, heldout_loss=0.26 + jitter, fid=90.0 + s, maxvio=1.5 + 0.01 * s,
                      combination_usage=30.0 + s, experts_per_token_by_t=[1.7, 2.1 + 0.01 * s],
                      experts_per_token_fg=1.6, experts_per_token_bg=2.3)]
    recs += [_rec("race_rsl", 0, maxvio=1.0, combination_usage=80.0), _rec("race_plr", 0),
             _rec("race_full", 0, heldout_loss=0.30, fid=120.0)]
    return recs


def _by_id(cl):
    return {c["id"]: c for c in cl}


def test_claims_are_judged_on_paired_seeds_when_the_floor_is_met():
    from racedit.report import _Arms

    arms = _Arms(_records(dense_acc=0.85), 0.008)
    fl = floors(arms)[0]
    assert fl["ok"] and fl["arm"] == "dense" and fl["metric"] == "class_accuracy"
    cl = _by_id(claims(arms, fl))
    assert cl["race_beats_tc_ec"]["status"] == REPRODUCED
    assert cl["full_recipe_beats_race"]["status"] == NOT_REPRODUCED
    assert cl["moe_beats_dense"]["status"] == INCONCLUSIVE          # one seed each, no noise estimate
    assert cl["rsl_balances"]["status"] == REPRODUCED
    assert cl["adaptive_allocation"]["status"] == REPRODUCED
    assert "missed its floor" not in cl["rsl_balances"]["evidence"]


def test_a_missed_floor_makes_baseline_comparisons_not_testable():
    from racedit.report import _Arms

    arms = _Arms(_records(dense_acc=0.5), 0.008)
    fl = floors(arms)[0]
    assert not fl["ok"]
    cl = _by_id(claims(arms, fl))
    for cid in ("race_beats_tc_ec", "full_recipe_beats_race", "moe_beats_dense"):
        assert cl[cid]["status"] == NOT_TESTABLE
        assert "missed its floor" in cl[cid]["evidence"]
    for cid in ("rsl_balances", "adaptive_allocation"):   # routing measurements: still judged, and say so
        assert cl[cid]["status"] == REPRODUCED
        assert "judged although the dense baseline's class_accuracy (0.500) missed its floor" in cl[cid]["evidence"]


def test_committed_small_results_are_rebuilt_from_runs_jsonl(tmp_path):
    records = {r["run"]: r for r in read_jsonl(SMALL / "runs.jsonl")}
    lr = chosen_lr("small", records)
    names = [s.name for s in dict.fromkeys([*grid_runs("small"), *arm_runs("small", lr)])]
    assert sorted(names) == sorted(records)          # every planned run has exactly one record
    plan = {**PLANS["small"], "chosen_lr": lr, "runs": names}
    path = write_report("small", tmp_path, tmp_path / "runs", [records[n] for n in names], plan,
                        load_config(Cfg, MEMBER / "configs" / "small.yaml"), ARMS, wall_time_s=0.0, render=False)
    new, old = json.loads(path.read_text()), json.loads((SMALL / "results.json").read_text())
    for key in ("arms", "tables", "claims", "floors", "seeds", "lr_grid", "config"):
        assert new[key] == old[key], key
