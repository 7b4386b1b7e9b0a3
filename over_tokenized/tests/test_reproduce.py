"""The reproduction plan (a ``reprokit.plan.Group`` per scale), its execution and the claim rules of the report."""

import json
import math
from collections import Counter

import pytest

from overtok.plan import PLANS, fit_line, flattening_pct, plan_arms, plan_group
from overtok.reproduce import execute
from reprokit.claims import NOT_TESTABLE, REPRODUCED
from reprokit.plan import Job, bracketed, chosen_lrs, planned_jobs

BASE, MAIN = "base", "oe-n3k1-m65537"          # the grid arms of the small plan (run-name stems)
A1 = [f"oe-n2k1-m{m}" for m in (1025, 4097, 16385, 65537, 262145)]
DEEP, HIER, OT = "base-d4", "oe-n2k1-m65537-no1g", "ot-n3k1-m65537"


def _rec(run, arm, lr, seed, val, test=None, steps=100, curve=None, nonemb=1000):
    """A runs.jsonl record as ``reproduce.run_job`` writes it (``val_loss`` at top level and in metrics)."""
    return {"run": run, "arm": arm, "lr": lr, "seed": seed, "val_loss": val,
            "metrics": {"val_loss": val, "test_loss": val if test is None else test, "test_ppl": math.exp(val),
                        "test_bpt": val / math.log(2), "steps": steps, "tokens": 40_000,
                        "params_non_embedding": nonemb, "params_ngram_tables": 0, "params_embedding": 10,
                        "table_mb": 0, "table_optim_mb": 0, "ckpt_mb": 1, "s_per_step": 0.1},
            "curve": [], "val_curve": curve or [[75, val + 0.01], [100, val]], "wall_s": 1.0}


def parabola(optima: dict[str, float], offset: dict[str, float] | None = None):
    """A fake run: val = test = 3 + offset(arm) + 0.1 (log2 lr - log2 optimum(arm))^2 + 0.001 seed."""
    def run(job: Job) -> dict:
        opt = optima.get(job.arm, 6e-3)
        val = 3.0 + (offset or {}).get(job.arm, 0.0) + 0.1 * (math.log2(job.lr) - math.log2(opt)) ** 2 + 1e-3 * job.seed
        return {**_rec(job.name, job.arm, job.lr, job.seed, val), "tag": job.tag}
    return run


def simulate(scale: str, run_fn) -> list[dict]:
    """The plan run to completion one job at a time, re-planned after every record (as run_jobs does)."""
    g, records = plan_group(scale), []
    while todo := [j for j in planned_jobs([g], records) if j.name not in {r["run"] for r in records}]:
        records.append(run_fn(todo[0]))
    return records


def test_small_group_is_the_papers_plan():
    g = plan_group("small")
    assert g.lr_grid == (3e-3, 6e-3, 1.2e-2) and g.seeds == (0, 1, 2) and g.max_extensions == 2
    assert g.grid_arms == (BASE, MAIN) and g.seed_arms == (BASE, MAIN) and g.select_by == "val_loss"
    assert g.tag == "st2800" and not g.maximize                       # the budget of configs/small.yaml
    assert g.secondary == {DEEP: BASE, **dict.fromkeys([*A1, HIER, OT], MAIN)}
    assert g.secondary_seeds == dict.fromkeys(A1, (0,))
    arms = plan_arms(PLANS["small"])
    assert dict(arms["ot"].keys)["model.mtp.heads"] == 1 and dict(arms["hierarchy"].keys)["model.oe.unigram"] is False
    assert dict(arms["deep"].keys)["model.depth"] == 4
    assert next(iter(g.secondary)) == DEEP                            # the longest secondary run starts first


def test_small_plan_runs_exactly_the_intended_runs_when_bracketed():
    records = simulate("small", parabola({BASE: 6e-3, MAIN: 6e-3}))
    runs = Counter((r["arm"], r["lr"], r["seed"]) for r in records)
    expected = {(a, lr, 0) for a in (BASE, MAIN) for lr in (3e-3, 6e-3, 1.2e-2)}
    expected |= {(a, 6e-3, s) for a in (BASE, MAIN) for s in (1, 2)}
    expected |= {(a, 6e-3, 0) for a in A1}
    expected |= {(DEEP, 6e-3, 0), (HIER, 6e-3, 0), (OT, 6e-3, 0)}
    assert set(runs) == expected and max(runs.values()) == 1 and len(records) == 18
    assert "oe-n3k1-m65537_st2800_lr0.006_s2" in {r["run"] for r in records}
    g = plan_group("small")
    assert {a: bracketed(g, a, records) for a in (BASE, MAIN)} == {BASE: True, MAIN: True}
    # a pure function of the records: its own finished runs call for nothing more, so resuming adds nothing
    assert {j.name for j in planned_jobs([g], records)} == {r["run"] for r in records}


def test_extensions_until_bracketed_at_most_two_and_each_family_at_its_lr():
    # baseline optimum 2.4e-2: 1.2e-2 best at the edge -> 2.4e-2, again at the edge -> 4.8e-2 brackets it;
    # OE optimum far below the grid: 1.5e-3, then 7.5e-4, still at the edge, and no third extension
    records = simulate("small", parabola({BASE: 2.4e-2, MAIN: 1e-4}))
    g = plan_group("small")
    seed0 = {a: sorted(r["lr"] for r in records if r["arm"] == a and r["seed"] == 0) for a in (BASE, MAIN)}
    assert seed0[BASE] == pytest.approx([3e-3, 6e-3, 1.2e-2, 2.4e-2, 4.8e-2])
    assert seed0[MAIN] == pytest.approx([7.5e-4, 1.5e-3, 3e-3, 6e-3, 1.2e-2])
    lrs = chosen_lrs(g, records)
    assert lrs[BASE] == pytest.approx(2.4e-2) and lrs[MAIN] == pytest.approx(7.5e-4)
    assert bracketed(g, BASE, records) is True and bracketed(g, MAIN, records) is False
    by_arm = {}
    for r in records:
        if r["arm"] not in (BASE, MAIN) or r["seed"] > 0:
            by_arm.setdefault(r["arm"], set()).add((r["lr"], r["seed"]))
    assert by_arm[DEEP] == {(lrs[BASE], 0)} and by_arm[OT] == {(lrs[MAIN], 0)} and by_arm[HIER] == {(lrs[MAIN], 0)}
    assert all(by_arm[a] == {(lrs[MAIN], 0)} for a in A1)
    assert by_arm[BASE] == {(lrs[BASE], 1), (lrs[BASE], 2)} and by_arm[MAIN] == {(lrs[MAIN], 1), (lrs[MAIN], 2)}
    assert len(records) == 22                                          # the most the small plan can run

    from overtok.report import make_tables, summarize, vocab_law

    summary = summarize(records, "small")
    assert summary["deep"]["lr"] == lrs[BASE] and summary["main"]["seeds"] == [0, 1, 2]
    table = make_tables(summary, records, vocab_law(summary, PLANS["small"], 1000), "small", "x")["lr_grid"]
    rows = {row[0]: row for row in table["rows"]}
    assert rows[BASE][-2:] == ["0.024", "yes"] and rows[MAIN][-2:] == ["0.00075", "no"]
    assert len(table["columns"]) == 1 + 7 + 2                         # the 7 LRs tried by either arm


def test_records_outside_the_plan_are_ignored():
    g = plan_group("small")
    good = simulate("small", parabola({BASE: 6e-3, MAIN: 6e-3}))
    # the same runs at another budget, and untagged ones (the old naming): all far better, none may count
    stray = [{**r, "run": r["run"].replace("_st2800_", "_st700_"), "tag": "st700", "val_loss": 0.0} for r in good]
    stray += [{**r, "run": f"{r['arm']}_lr{r['lr']:g}_s{r['seed']}", "val_loss": 0.0} for r in good]
    assert chosen_lrs(g, stray) == {} and all(j.tag == "st2800" for j in planned_jobs([g], stray))
    assert {j.name for j in planned_jobs([g], good + stray)} == {r["run"] for r in good}

    from overtok.report import plan_records, summarize

    assert plan_records(good + stray, g) == good
    assert summarize(stray, "small") == {}


def test_smoke_plan_reaches_every_arm():
    g = plan_group("smoke")
    records = simulate("smoke", parabola({}))
    arms = {r["arm"] for r in records}
    assert arms == {a.name for a in plan_arms(PLANS["smoke"]).values()} and g.tag == "st12"


def test_execute_resumes_after_a_failure_without_recomputing(tmp_path):
    fake = parabola({BASE: 6e-3, MAIN: 6e-3})
    calls = []

    def failing(job):                                                  # the 8th run fails, once
        calls.append(job.name)
        if len(calls) == 8 and not failed:
            failed.append(job.name)
            raise RuntimeError("boom")
        return fake(job)

    failed = []

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError, match="boom"):
        execute("small", out, tmp_path / "runs", run_fn=failing)
    kept = [json.loads(x)["run"] for x in (out / "runs.jsonl").read_text().splitlines()]
    assert kept == calls[:7]                                           # the finished runs are recorded
    calls.clear()
    records, from_scratch = execute("small", out, tmp_path / "runs", run_fn=failing)
    assert not from_scratch and len(records) == 18 and not set(calls) & set(kept) and calls[0] == failed[0]
    assert all(r["val_loss"] == r["metrics"]["val_loss"] for r in records)
    again, from_scratch = execute("small", out, tmp_path / "runs", run_fn=failing)
    assert len(calls) == 18 - 7 and again == records and not from_scratch
    # a log that holds only another budget's runs is a from-scratch start
    other = tmp_path / "other"
    other.mkdir()
    (other / "runs.jsonl").write_text(json.dumps({**records[0], "run": "base_st700_lr0.003_s0"}) + "\n")
    assert execute("small", other, tmp_path / "runs", run_fn=fake)[1] is True


def test_a_diverged_run_is_reported_not_dropped(tmp_path, monkeypatch):
    """Through the real ``run_fn`` (training faked): the baseline diverges at the top grid LR (its best trained LR
    5e-3 is then bracketed by one extension down) and the main OE arm loses seed 1. The run goes on, the report
    builds, the LR table says ``diverged``, and the OE claim pairs the one seed both arms trained."""
    import overtok.reproduce as rp
    from overtok.report import build_report

    g = plan_group("smoke")
    base, main = "base", f"oe-n3k1-m{PLANS['smoke']['main'][2]}"
    diverge = {g.job(base, 1e-2, 0).name, g.job(main, 5e-3, 1).name}
    fake = parabola({base: 1.2e-2, main: 6e-3})
    calls = []

    def run_job(plan, arm, lr, seed, runs_dir, name, threads=1, quiet=True):
        calls.append(name)
        if name in diverge:
            raise FloatingPointError(f"non-finite loss nan at step 9 ({name})")
        rec = fake(Job(g.name, arm.name, lr, seed, g.tag))
        return {**rec, "curve": [[12, rec["val_loss"]]]}

    monkeypatch.setattr(rp, "run_job", run_job)
    out = tmp_path / "out"
    out.mkdir()
    records, _ = execute("smoke", out, tmp_path / "runs")
    assert sorted(r["run"] for r in records if r.get("diverged")) == sorted(diverge)
    res = json.loads(build_report("smoke", records, out, tmp_path / "runs").read_text())
    plan = res["protocol"]["plan"]
    assert plan["chosen_lrs"][base] == 5e-3 and plan["bracketed"][base] is True
    assert sorted(res["diverged_runs"]) == sorted(diverge) and not set(res["protocol"]["run_wall_s"]) & diverge
    lr_grid = res["tables"]["lr_grid"]
    assert lr_grid["columns"][1:4] == ["val loss @ 0.0025", "val loss @ 0.005", "val loss @ 0.01"]
    row = {r[0]: r for r in lr_grid["rows"]}[base]
    assert row[3] == "diverged" and row[4:] == ["0.005", "yes"]
    assert res["arms"][main]["seeds"] == [0] and res["arms"][base]["seeds"] == [0, 1]
    assert g.job(main, 5e-3, 1).name in res["tables"]["main"]["caption"]
    claim = next(c for c in res["claims"] if c["id"] == "oe_beats_baseline")
    assert "(1 paired seed)" in claim["evidence"]
    calls.clear()
    assert execute("smoke", out, tmp_path / "runs")[0] == records and calls == []   # never retried


def test_one_smoke_job_writes_its_record(tmp_path):
    from overtok.reproduce import job_runner

    g = plan_group("smoke")
    job = g.job("oe-n3k1-m257", 5e-3, 1)
    rec = job_runner("smoke", tmp_path)(job)
    assert rec["run"] == job.name == "oe-n3k1-m257_st12_lr0.005_s1" and rec["tag"] == "st12"
    assert rec["val_loss"] == rec["metrics"]["val_loss"] and math.isfinite(rec["val_loss"])
    assert rec["config"]["train"]["lr"] == 5e-3 and rec["config"]["train"]["seed"] == 1
    assert rec["metrics"]["steps"] == 12 and (tmp_path / job.name / "metrics.jsonl").is_file()


def test_fit_and_flattening():
    a, b, r2 = fit_line([1, 2, 3, 4], [3.0, 2.9, 2.8, 2.7])
    assert math.isclose(b, -0.1) and math.isclose(a, 3.1) and math.isclose(r2, 1.0)
    rec = _rec("base_lr0.001_s0", "base", 1e-3, 0, 2.0, curve=[[50, 2.5], [75, 2.04], [100, 2.0]])
    assert math.isclose(flattening_pct(rec), 100 * 0.04 / 2.04)


def _full_grid(scale, val_of):
    """Hand-made records of a whole small plan, ``val_of(arm, lr, seed)`` -> loss (val = test)."""
    return simulate(scale, lambda j: {**_rec(j.name, j.arm, j.lr, j.seed, val_of(j.arm, j.lr, j.seed)), "tag": j.tag})


def test_claims_follow_the_floors():
    from overtok.report import make_claims, make_floors, summarize, vocab_law

    plan = PLANS["small"]

    def val(arm, lr, seed):
        return (3.0 if arm == BASE else 2.9) + abs(math.log2(lr / 6e-3)) + 0.001 * seed

    recs = _full_grid("small", val)
    summary = summarize(recs, "small")
    assert summary["base"]["lr"] == 6e-3 and summary["base"]["seeds"] == [0, 1, 2]
    floors = make_floors(summary)
    assert all(f["ok"] for f in floors)
    claims = {c["id"]: c for c in make_claims(summary, vocab_law(summary, plan, 1000), floors)}
    assert claims["oe_beats_baseline"]["status"] == REPRODUCED
    bad = [{**r, "metrics": {**r["metrics"], "params_non_embedding": 10**6}} for r in recs]
    summary = summarize(bad, "small")
    floors = make_floors(summary)
    assert not floors[0]["ok"]
    claims = {c["id"]: c for c in make_claims(summary, vocab_law(summary, plan, 1000), floors)}
    assert claims["oe_beats_baseline"]["status"] == NOT_TESTABLE


def test_first_small_results_replace_the_not_yet_run_paragraph(tmp_path):
    import shutil
    from pathlib import Path

    from overtok.report import ensure_result_markers
    from reprokit.results import NOT_YET_RUN

    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "README.md", tmp_path / "README.md")
    ensure_result_markers(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert NOT_YET_RUN not in text and "has not been run yet" not in text and "is in progress" not in text
    for key in ("results:small/main", "results:small/vocab_law", "floors:small", "claims:small"):
        assert f"<!-- BEGIN {key} -->" in text
    assert "**Plan**" in text and "## Performance" in text


def test_wall_time_sums_only_the_invocations_of_its_own_plan(tmp_path):
    from overtok.report import _wall_time

    (tmp_path / "wall_time.json").write_text(json.dumps({"invocations": [
        {"elapsed_s": 3957.0, "runs_recorded": 24, "from_scratch": True, "tag": "st1400"}]}))
    assert _wall_time(tmp_path, 100.0, 3, "small", True, "st2800") == 100.0        # an earlier plan never counts
    assert _wall_time(tmp_path, 50.0, 5, "small", False, "st2800") == 150.0        # a resumed one adds up
    inv = json.loads((tmp_path / "wall_time.json").read_text())["invocations"]
    assert [i["tag"] for i in inv] == ["st1400", "st2800", "st2800"] and inv[0]["elapsed_s"] == 3957.0
