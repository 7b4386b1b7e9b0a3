"""reproduce.py: the plan is a pure function of the base grid, run names carry every varying key,
finished records are never recomputed, and (slow) the smoke reproduction end to end."""

import json

import pytest

import racedit.reproduce as rp
from reprokit.claims import STATUSES
from reprokit.results import load_results
from reprokit.runs import read_jsonl


def _fake_run_one(calls):
    def run_one(cfg_path, spec, run_dir):
        calls.append(spec.name)
        # held-out loss falls with the LR, so the largest grid LR is chosen
        loss = 1.0 - spec.lr * 10 + 0.001 * spec.seed
        return {"run": spec.name, "arm": spec.arm, "lr": spec.lr, "seed": spec.seed, "heldout_loss": loss,
                "class_accuracy": 0.9, "maxvio": 1.0, "combination_usage": 50.0, "curve": None,
                "experts_per_token_by_t": [2.0, 2.0], "t_bin_centres": [0.25, 0.75],
                "experts_per_token_fg": 2.0, "experts_per_token_bg": 2.0}
    return run_one


def test_run_names_carry_every_varying_key():
    assert rp.RunSpec("race", 0.002, 1).name == "race_lr0.002_s1"
    assert "train.lr=0.002" in rp.RunSpec("race", 0.002, 1).overrides()


def test_finished_records_are_never_recomputed(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(rp, "run_one", _fake_run_one(calls))
    out = tmp_path / "small"
    rp.run_reproduce("small", out_dir=str(out))
    plan = [s.name for s in dict.fromkeys([*rp.grid_runs("small"), *rp.arm_runs("small", 8e-3)])]
    assert sorted(calls) == sorted(plan) and len(calls) == len(set(calls)) == 18
    # interrupted after the grid: drop the arm records, resume -> only those run again
    recs = read_jsonl(out / "runs.jsonl")
    grid = {s.name for s in rp.grid_runs("small")}
    (out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs if r["run"] in grid))
    calls.clear()
    rp.run_reproduce("small", out_dir=str(out))
    assert sorted(calls) == sorted(set(plan) - grid)
    calls.clear()
    rp.run_reproduce("small", out_dir=str(out))      # complete: only the report is rebuilt
    assert calls == []
    assert len(read_jsonl(out / "runs.jsonl")) == 18


@pytest.mark.slow
def test_reproduce_smoke_end_to_end(tmp_path):
    from racedit.train import load_run

    path = rp.run_reproduce("smoke", out_dir=str(tmp_path))
    res = load_results(path)
    assert res["scale"] == "smoke" and set(res["arms"]) == set(rp.ARMS)
    assert {c["status"] for c in res["claims"]} <= set(STATUSES) and res["floors"]
    recs = read_jsonl(tmp_path / "runs.jsonl")
    assert len(recs) == 8 and all(r["curve"] for r in recs)
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "samples_race.png").is_file()
    run = load_run(tmp_path / "race_lr0.001_s1")
    assert run.cfg.train.seed == 1 and run.step == run.cfg.train.steps
