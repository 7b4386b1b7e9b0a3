"""reproduce.py: the judgeable plan (reprokit.plan: bracketed LR grids, seeds, secondary arms), run names carry every
varying key and the budget tag, finished records are never recomputed, and (slow) the smoke reproduction end to end."""

import json

import pytest

import racedit.reproduce as rp
from reprokit.claims import STATUSES
from reprokit.results import load_results
from reprokit.runs import read_jsonl


def _fake_run_one(calls):
    def run_one(cfg_path, spec, run_dir):
        calls.append(spec.name)
        # validation/test loss falls with the LR, so the grid is extended upwards until the cap
        loss = 1.0 - spec.lr * 10 + 0.001 * spec.seed
        return {"run": spec.name, "arm": spec.arm, "lr": spec.lr, "seed": spec.seed, "heldout_loss": loss,
                "val_loss": loss, "class_accuracy": 0.9, "maxvio": 1.0, "combination_usage": 50.0, "curve": None,
                "val_curve": [{"step": 1200, "val_loss": loss + 0.001}, {"step": 1600, "val_loss": loss}],
                "experts_per_token_by_t": [2.0, 2.0], "t_bin_centres": [0.25, 0.75],
                "experts_per_token_fg": 2.0, "experts_per_token_bg": 2.0}
    return run_one


def test_run_names_carry_every_varying_key_and_the_budget():
    g = rp.PLANS["small"]
    assert g.job("race", 0.002, 1).name == "race_st1600_lr0.002_s1"
    assert "train.lr=0.002" in rp._spec_overrides(g.job("race", 0.002, 1))
    assert set(g.secondary) | set(g.grid_arms) == set(rp.ARMS)       # every arm is in the plan


def test_the_plan_brackets_then_seeds_then_secondary(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(rp, "run_one", _fake_run_one(calls))
    out = tmp_path / "small"
    rp.run_reproduce("small", out_dir=str(out))
    # grid 3 LRs x (dense, race) + 4 extensions each (8e-3 .. 6.4e-2: the loss keeps falling), then the further
    # seeds of dense and race, 3 seeds of tc / ec / race_rsl at Race's LR, 12 secondary arms at 1 seed
    assert len(calls) == len(set(calls)) == 14 + 4 + 9 + 12
    assert "race_st1600_lr0.064_s0" in calls and "race_st1600_lr0.128_s0" not in calls
    assert {"tc_st1600_lr0.064_s2", "race_rsl_st1600_lr0.064_s2", "dense_st1600_lr0.064_s2"} <= set(calls)
    assert "race_plr0.3_st1600_lr0.064_s0" in calls and "race_plr0.3_st1600_lr0.064_s1" not in calls
    res = load_results(out / "results.json")
    assert res["protocol"]["plan"]["bracketed"] == {"dense": False, "race": False}   # cap reached: reported
    assert "bracketed (best LR strictly inside the LRs tried): dense no, race no" in res["tables"]["lr_grid"]["caption"]
    # interrupted: drop every record after the grid, resume -> exactly the missing runs again
    recs = read_jsonl(out / "runs.jsonl")
    keep = {r["run"] for r in recs[:14]}
    (out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs if r["run"] in keep))
    first = list(calls)
    calls.clear()
    rp.run_reproduce("small", out_dir=str(out))
    assert sorted(calls) == sorted(set(first) - keep)
    calls.clear()
    rp.run_reproduce("small", out_dir=str(out))      # complete: only the report is rebuilt
    assert calls == []
    assert len(read_jsonl(out / "runs.jsonl")) == 39
    # the wall time: every invocation logged; the total counts from the last one that started from scratch
    inv = json.loads((out / "wall_time.json").read_text())["invocations"]
    assert [i["from_scratch"] for i in inv] == [True, False, False]
    res = load_results(out / "results.json")
    assert res["wall_time_s"] == pytest.approx(sum(i["elapsed_s"] for i in inv), abs=0.2)


def test_record_invocation_restarts_the_sum_at_a_from_scratch_invocation(tmp_path):
    p = tmp_path / "wall_time.json"
    assert rp.record_invocation(p, 100.0, 3, True) == 100.0
    assert rp.record_invocation(p, 50.0, 5, False) == 150.0
    assert rp.record_invocation(p, 30.0, 1, True) == 30.0          # a new from-scratch run starts a new sum
    assert len(json.loads(p.read_text())["invocations"]) == 3
    assert rp.record_invocation(p, 7.0, 1, True, keep=False) == 7.0  # smoke: never kept
    assert len(json.loads(p.read_text())["invocations"]) == 1


def test_a_diverged_run_is_reported_not_dropped_and_never_retried(tmp_path, monkeypatch):
    """Race diverges at the top grid LR (so its grid is bracketed at 2e-3) and token choice loses seed 2: the
    report builds, the LR table says ``diverged``, Race is at its best trained LR and the token-choice claims
    pair the two seeds that trained."""
    import re

    calls: list[str] = []
    fake = _fake_run_one(calls)
    diverge = {"race_st1600_lr0.004_s0", "tc_st1600_lr0.002_s2"}

    def run_one(cfg_path, spec, run_dir):
        if spec.name in diverge:
            calls.append(spec.name)
            raise FloatingPointError(f"non-finite loss nan at step 7 ({spec.name})")
        return fake(cfg_path, spec, run_dir)

    monkeypatch.setattr(rp, "run_one", run_one)
    out = tmp_path / "small"
    res = load_results(rp.run_reproduce("small", out_dir=str(out)))
    plan = res["protocol"]["plan"]
    g = rp.PLANS["small"]                            # dense: still improving at its last extension
    assert plan["chosen_lrs"]["race"] == 2e-3 and plan["chosen_lrs"]["dense"] == max(g.lr_grid) * 2 ** g.max_extensions
    assert plan["bracketed"] == {"dense": False, "race": True}
    assert sorted(res["diverged_runs"]) == sorted(diverge)
    rows = {r[0]: r for r in res["tables"]["lr_grid"]["rows"]}
    assert rows["0.004"][2] == "diverged" and rows["0.002"][2].endswith("◀ chosen")
    assert res["lr_grid"]["0.004"]["race"] == "diverged"
    main = {r[0]: r for r in res["tables"]["main"]["rows"]}
    assert main["Token choice (softmax + balance 0.01)"][2] == 2 and main["Expert Race (identity, EMA threshold)"][2] == 3
    assert res["arms"]["tc"]["seeds"] == [0, 1] and "tc_st1600_lr0.002_s2" in res["tables"]["main"]["caption"]
    ev = next(c for c in res["claims"] if c["id"] == "race_beats_tc_ec")["evidence"]
    per_seed = re.search(r"race vs tc heldout_loss: improvement \S+ \(per seed ([^;]*);", ev).group(1)
    assert len(per_seed.split(", ")) == 2                           # the seeds that trained, paired
    assert {c["status"] for c in res["claims"]} <= set(STATUSES)
    diverged = [r for r in read_jsonl(out / "runs.jsonl") if r.get("diverged")]
    assert sorted(r["run"] for r in diverged) == sorted(diverge)
    calls.clear()
    rp.run_reproduce("small", out_dir=str(out))      # resumed: a diverged run is never retried
    assert calls == []


@pytest.mark.slow
def test_reproduce_smoke_end_to_end(tmp_path):
    from racedit.train import load_run

    path = rp.run_reproduce("smoke", out_dir=str(tmp_path))
    res = load_results(path)
    assert res["scale"] == "smoke" and set(res["arms"]) == {"dense", "race", "tc"}
    assert {c["status"] for c in res["claims"]} <= set(STATUSES) and res["floors"]
    recs = read_jsonl(tmp_path / "runs.jsonl")
    assert len(recs) == 6 and all(r["curve"] and r["val_curve"] for r in recs)
    assert all(r.get("heldout_loss_topk") is not None for r in recs if r["arm"] == "race")
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "samples_race.png").is_file()
    run = load_run(tmp_path / "race_lr0.001_s1") if (tmp_path / "race_lr0.001_s1").is_dir() else \
        load_run(tmp_path / "race_lr0.002_s1")
    assert run.cfg.train.seed == 1 and run.step == run.cfg.train.steps


def test_plan_tag_must_match_the_config_budget(monkeypatch, tmp_path):
    """Raising train.steps without the plan's tag would silently reuse the finished runs of the old budget."""
    from reprokit.config import ConfigError
    from reprokit.plan import Group

    calls: list[str] = []
    monkeypatch.setattr(rp, "run_one", _fake_run_one(calls))
    monkeypatch.setitem(rp.PLANS, "small", Group(name="", lr_grid=(1e-3,), grid_arms=("dense",),
                                                 select_by="val_loss", tag="st6400"))
    with pytest.raises(ConfigError, match="st6400"):
        rp.run_reproduce("small", out_dir=str(tmp_path / "small"))
    assert calls == [] and not (tmp_path / "small" / "runs.jsonl").exists()
