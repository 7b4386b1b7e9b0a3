from __future__ import annotations

import json

import pytest

from reprokit.plan import (
    Group,
    Job,
    bracketed,
    chosen_lrs,
    diverged_record,
    lr_decision,
    plan_runs_done,
    planned_jobs,
    run_jobs,
    run_name,
    run_plan_timed,
    trained,
)
from reprokit.testing import NamedJob, named_record  # noqa: E402
from reprokit.testing import parabola_record as fake_record  # noqa: E402


def group(**kw) -> Group:
    base = dict(name="", lr_grid=(1e-3, 2e-3, 4e-3), grid_arms=("base", "main"), select_by="val_loss",
                seeds=(0, 1, 2), seed_arms=("base", "main"), secondary={"side": "main"}, max_extensions=2)
    base.update(kw)
    return Group(**base)


def simulate(groups: list[Group]) -> list[dict]:
    """Run the plan to completion, one job at a time, the way run_jobs does."""
    records: list[dict] = []
    while True:
        done = {r["run"] for r in records}
        todo = [j for j in planned_jobs(groups, records) if j.name not in done]
        if not todo:
            return records
        records.append(fake_record(todo[0]))


def test_run_names_match_both_conventions() -> None:
    assert run_name("", "race", 0.002, 1) == "race_lr0.002_s1"
    assert run_name("lm", "dhcx4", 0.004, 0, "st4000") == "lm-dhcx4_st4000_lr0.004_s0"
    assert Job("vit", "prenorm", 1e-3, 2).name == "vit-prenorm_lr0.001_s2"


def test_grid_extends_until_bracketed_then_seeds_and_secondary() -> None:
    g = group()
    records = simulate([g])
    names = {r["run"] for r in records}
    # base: optimum 2e-3 inside the grid -> no extension; main: optimum 8e-3 -> one extension (8e-3), then
    # 8e-3 is at the new edge -> a second one (1.6e-2), which brackets it
    assert {f"base_lr{lr:g}_s0" for lr in (1e-3, 2e-3, 4e-3)} <= names
    assert "base_lr0.008_s0" not in names and "base_lr0.0005_s0" not in names
    assert {"main_lr0.008_s0", "main_lr0.016_s0"} <= names
    assert chosen_lrs(g, records) == {"base": 2e-3, "main": 8e-3, "side": 8e-3}
    assert bracketed(g, "base", records) and bracketed(g, "main", records)
    assert {"base_lr0.002_s1", "base_lr0.002_s2", "main_lr0.008_s1", "main_lr0.008_s2", "side_lr0.008_s0"} <= names
    assert len(records) == 3 + 5 + 2 + 2 + 1
    # a pure function of the records: feeding it its own finished runs adds nothing
    assert {j.name for j in planned_jobs([g], records)} == names


def test_secondary_seed_arms_get_every_seed_first() -> None:
    g = group(grid_arms=("main",), seed_arms=("main", "side"), secondary={"extra": "main", "side": "main"})
    records = simulate([g])
    names = [r["run"] for r in records]
    assert {"side_lr0.008_s0", "side_lr0.008_s1", "side_lr0.008_s2", "extra_lr0.008_s0"} <= set(names)
    assert "extra_lr0.008_s1" not in names
    assert names.index("side_lr0.008_s2") < names.index("extra_lr0.008_s0")


def test_extensions_are_capped_and_reported_unbracketed() -> None:
    g = group(grid_arms=("edge",), seed_arms=(), secondary={}, max_extensions=1)
    records = simulate([g])
    assert sorted(r["lr"] for r in records) == [1e-3, 2e-3, 4e-3, 8e-3]
    assert chosen_lrs(g, records) == {"edge": 8e-3} and bracketed(g, "edge", records) is False


def test_maximize_and_downward_extension() -> None:
    g = group(grid_arms=("acc",), seed_arms=(), secondary={}, maximize=True, select_by="top1", max_extensions=1)
    recs = [{"run": g.job("acc", lr).name, "lr": lr, "top1": {1e-3: 0.9, 2e-3: 0.8, 4e-3: 0.7}[lr]}
            for lr in g.lr_grid]
    decided, lr, jobs = lr_decision(g, "acc", {r["run"]: r for r in recs})
    assert not decided and jobs[-1].lr == 5e-4   # best at the lower edge: extend downwards


def test_require_keeps_runs_below_the_validity_floor_out_of_the_choice() -> None:
    # the ugan case: the lowest LR has the best distance but misses the target-accuracy floor
    g = group(lr_grid=(5e-5, 1e-4, 2e-4), grid_arms=("gan",), seed_arms=(), secondary={}, max_extensions=1,
              select_by="val_l1",
              require=("val_acc", 0.9))
    acc = {5e-5: 0.75, 1e-4: 0.67, 2e-4: 0.93, 4e-4: 0.95}
    l1 = {5e-5: 0.25, 1e-4: 0.29, 2e-4: 0.28, 4e-4: 0.27}
    recs = {g.job("gan", lr).name: {"run": g.job("gan", lr).name, "lr": lr, "val_l1": l1[lr], "val_acc": acc[lr]}
            for lr in (5e-5, 1e-4, 2e-4)}
    assert g.best(list(recs.values())) == 2e-4   # without `require` it would be 5e-5
    assert Group(**{**g.__dict__, "require": None}).best(list(recs.values())) == 5e-5
    decided, _, jobs = lr_decision(g, "gan", recs)
    assert not decided and jobs[-1].lr == 4e-4   # the valid best sits at the upper edge: extend upwards
    j = jobs[-1]
    recs[j.name] = {"run": j.name, "lr": 4e-4, "val_l1": l1[4e-4], "val_acc": acc[4e-4]}
    assert lr_decision(g, "gan", recs)[:2] == (True, 4e-4)
    assert g.summary(list(recs.values()))["require"] == {"key": "val_acc", "min": 0.9}
    # no run reaches the floor: the one closest to it wins (and a diverged run still ranks last)
    bad = [{"run": "a", "lr": 1e-4, "val_l1": 0.1, "val_acc": 0.5}, {"run": "b", "lr": 2e-4, "val_l1": 0.9,
           "val_acc": 0.8}, {"run": "c", "lr": 4e-4, "diverged": True}]
    assert g.best(bad) == 2e-4
    with pytest.raises(KeyError, match="'val_acc'"):
        g.best([{"run": "a", "lr": 1e-4, "val_l1": 0.1}])


def test_records_outside_the_plan_are_ignored() -> None:
    g = group(tag="st2000")
    stray = [{"run": "base_lr0.001_s0", "lr": 1e-3, "val_loss": 0.0}]   # an untagged run of another budget
    assert all(j.tag == "st2000" for j in planned_jobs([g], stray))
    assert not lr_decision(g, "base", {r["run"]: r for r in stray})[0]


def test_secondary_must_name_a_grid_arm() -> None:
    with pytest.raises(ValueError, match="'nope', which is not a grid arm; grid arms: base, main"):
        group(secondary={"side": "nope"})


def test_secondary_seeds_give_a_secondary_arm_its_own_seeds() -> None:
    g = group(secondary={"side": "main", "sweep": "base"}, secondary_seeds={"sweep": (0, 1)})
    names = {r["run"] for r in simulate([g])}
    lr_base = chosen_lrs(g, simulate([g]))["base"]
    assert {n for n in names if n.startswith("sweep_")} == {f"sweep_lr{lr_base:g}_s0", f"sweep_lr{lr_base:g}_s1"}
    side = [n for n in names if n.startswith("side_")]
    assert len(side) == 1 and side[0].endswith("_s0")     # no secondary_seeds entry: seed 0 only
    assert g.summary(simulate([g]))["secondary_seeds"] == {"sweep": [0, 1]}
    with pytest.raises(ValueError, match="names 'nope', which is not a secondary arm"):
        group(secondary_seeds={"nope": (0, 1)})
    with pytest.raises(ValueError, match="'side' is a seed arm"):
        group(seed_arms=("base", "side"), secondary_seeds={"side": (0, 1)})


def test_run_jobs_resumes_and_appends_each_record(tmp_path) -> None:
    workers = 1
    g = group(lr_grid=(1e-3, 2e-3, 4e-3), grid_arms=("base",), seed_arms=("base",), secondary={})
    log = tmp_path / "runs.jsonl"
    first = fake_record(g.job("base", 1e-3))
    log.write_text(json.dumps(first) + "\n")
    out = run_jobs([g], log, fake_record, workers=workers)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["run"] for x in lines].count(first["run"]) == 1      # the finished run was not recomputed
    assert len(lines) == len(out) == 3 + 2
    assert run_jobs([g], log, fake_record, workers=workers) and len(log.read_text().splitlines()) == 5


def test_run_jobs_keeps_finished_records_when_a_job_fails(tmp_path) -> None:
    """Two worker processes: a failing job stops new submissions, the running ones still finish and count."""
    g = group(grid_arms=("crash",), seed_arms=("crash",), secondary={})   # seed 2 of arm "crash" raises
    log = tmp_path / "runs.jsonl"
    with pytest.raises(RuntimeError, match="boom"):
        run_jobs([g], log, fake_record, workers=2)
    names = [json.loads(x)["run"] for x in log.read_text().splitlines()]
    assert len(names) == 4 and "crash_lr0.002_s1" in names and "crash_lr0.002_s2" not in names


@pytest.mark.parametrize("workers", [1, 2])
def test_a_diverged_run_is_recorded_ranks_last_and_is_never_retried(tmp_path, workers) -> None:
    # optimum 8e-3, but every LR >= 4e-3 diverges: the best trained LR 2e-3 is bracketed by 1e-3 and the
    # diverged 4e-3; the seeds run at 2e-3; the plan goes on past the divergence
    import reprokit.testing as T

    assert T.PARABOLA_OPTIMA["diverge"] == 8e-3      # module-level: spawned workers see the same optimum
    g = group(grid_arms=("diverge",), seed_arms=("diverge",), secondary={})
    log = tmp_path / "runs.jsonl"
    records = run_jobs([g], log, T.parabola_record, workers=workers)
    by = {r["run"]: r for r in records}
    assert by["diverge_lr0.004_s0"]["diverged"] is True and "non-finite" in by["diverge_lr0.004_s0"]["error"]
    assert "val_loss" not in by["diverge_lr0.004_s0"]
    assert chosen_lrs(g, records) == {"diverge": 2e-3} and bracketed(g, "diverge", records) is True
    assert {"diverge_lr0.002_s1", "diverge_lr0.002_s2"} <= set(by)
    assert [r["run"] for r in trained(records)] == [r["run"] for r in records if r["lr"] < 4e-3]
    n = len(log.read_text().splitlines())
    run_jobs([g], log, T.parabola_record, workers=1)        # resume: nothing re-run, the divergence included
    assert len(log.read_text().splitlines()) == n


def test_all_diverged_extends_the_grid_downwards() -> None:
    g = group(grid_arms=("x",), seed_arms=(), secondary={}, max_extensions=1)
    recs = [diverged_record(g.job("x", lr), "nan") for lr in g.lr_grid]
    decided, lr, jobs = lr_decision(g, "x", {r["run"]: r for r in recs})
    assert not decided and jobs[-1].lr == 5e-4           # the smallest LR ranks first among diverged runs
    with pytest.raises(KeyError, match="has no 'val_loss'"):
        g.best([{"run": "x_lr0.001_s0", "lr": 1e-3}])


def test_lr_grid_rows_marks_extensions_divergence_and_the_choice():
    from reprokit.plan import bracketed_note, lr_grid_rows

    recs = [{"arm": "base", "lr": 1e-3, "seed": 0, "m": 2.0}, {"arm": "base", "lr": 2e-3, "seed": 0, "m": 1.5},
            {"arm": "base", "lr": 4e-3, "seed": 0, "m": 1.7}, {"arm": "base", "lr": 2e-3, "seed": 1, "m": 9.0},
            {"arm": "main", "lr": 1e-3, "seed": 0, "m": 1.9}, {"arm": "main", "lr": 5e-4, "seed": 0, "m": 1.8},
            {"arm": "main", "lr": 2e-3, "seed": 0, "diverged": True},
            {"arm": "main", "lr": 4e-3, "seed": 0, "m": float("nan")}]
    rows = lr_grid_rows(recs, ("base", "main"), (1e-3, 2e-3, 4e-3), {"base": 2e-3, "main": 5e-4},
                        lambda r: None if r["m"] != r["m"] else f"{r['m']:.2f}")
    assert rows == [["0.0005 (extension)", "—", "1.80 ◀ chosen"], ["0.001", "2.00", "1.90"],
                    ["0.002", "1.50 ◀ chosen", "diverged"], ["0.004", "1.70", "—"]]
    from reprokit.plan import metric_cell

    cell = metric_cell("m", note=("acc", "acc."))
    assert cell({"m": 1.23456, "acc": 0.9}) == "1.2346 (acc. 0.900)" and cell({"m": 1.0}) == "1.0000"
    assert cell({"m": float("nan"), "acc": 0.9}) is None and cell({}) is None
    assert bracketed_note(("base", "main", "x"), {"base": True, "main": False}) == \
        "bracketed (best LR strictly inside the LRs tried): base yes, main no, x n/a"


def test_run_plan_timed_records_a_stopped_invocation_and_sums_the_resumed_one(tmp_path) -> None:
    g, log = group(tag="st10"), tmp_path / "runs.jsonl"
    calls: list[str] = []

    def stop_after_two(job: Job) -> dict:
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(job.name)
        return fake_record(job)

    with pytest.raises(KeyboardInterrupt):
        run_plan_timed(g, log, stop_after_two, out=tmp_path, t_start=0.0)
    assert plan_runs_done(g, log) == 2
    inv = json.loads((tmp_path / "wall_time.json").read_text())["invocations"]
    assert len(inv) == 1 and inv[0]["interrupted"] and inv[0]["from_scratch"] and inv[0]["runs_recorded"] == 2
    records, wall = run_plan_timed(g, log, fake_record, out=tmp_path, t_start=0.0)
    inv = json.loads((tmp_path / "wall_time.json").read_text())["invocations"]
    assert [i.get("interrupted", False) for i in inv] == [True, False] and not inv[1]["from_scratch"]
    assert inv[1]["tag"] == "st10" and inv[1]["runs_recorded"] == len(records) == plan_runs_done(g, log)
    assert wall == pytest.approx(sum(i["elapsed_s"] for i in inv), abs=0.2)


def test_run_jobs_with_a_planner_and_workers_stops_submitting_after_ctrl_c(tmp_path) -> None:
    """A member's own plan logic (``planner``) drives run_jobs; a run that is stopped (a worker's Ctrl-C arrives
    as KeyboardInterrupt from its future) ends the invocation with at most the runs already in flight recorded,
    never the rest of the plan."""
    from reprokit.plan import run_planner_timed

    log = tmp_path / "runs.jsonl"
    records, wall = run_planner_timed(_chain_planner, "t1", log, named_record, out=tmp_path, t_start=0.0)
    assert [r["run"] for r in records] == [f"j{i}" for i in range(6)]  # each job planned only after the last one
    log.unlink()
    with pytest.raises(KeyboardInterrupt):
        run_planner_timed(_wide_planner, "t2", log, named_record, out=tmp_path, t_start=0.0, workers=2)
    done = [json.loads(x)["run"] for x in log.read_text().splitlines()]
    assert "stop2" not in done and len(done) <= 3, done  # the in-flight ones at most, not the 7 left
    inv = json.loads((tmp_path / "wall_time.json").read_text())["invocations"]
    assert inv[-1]["tag"] == "t2" and inv[-1]["interrupted"] and inv[-1]["runs_recorded"] == len(done)


def _chain_planner(records: list[dict]) -> list[NamedJob]:
    return [NamedJob(f"j{i}") for i in range(min(len(records) + 1, 6))]


def _wide_planner(records: list[dict]) -> list[NamedJob]:
    return [NamedJob("stop2" if i == 2 else f"j{i}") for i in range(10)]


def _long_planner(records: list[dict]) -> list[NamedJob]:
    return [NamedJob(f"long{i}") for i in range(10)]


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_a_stopped_plan_ends_its_workers_at_once_and_records_the_invocation(tmp_path, how) -> None:
    """Ctrl-C in the main process (or SIGTERM: ``kill``, ``timeout``, a scheduler) stops the plan without waiting
    for the runs in flight: no worker is left running, the wall time is recorded as interrupted, and the SIGTERM
    handler of the caller is restored."""
    import multiprocessing
    import os
    import signal
    import threading
    import time

    from reprokit.plan import run_planner_timed

    def caller_handler(signum, frame):  # a SIGTERM the plan does not handle fails the test, not the session
        raise RuntimeError("SIGTERM reached the caller's handler: the plan did not turn it into a stop")

    sig = signal.SIGINT if how == "ctrl-c" else signal.SIGTERM
    # Ctrl-C as an interactive Python sees it (a background job, as in CI, starts with SIGINT ignored)
    former_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    former = signal.signal(signal.SIGTERM, caller_handler)
    timer = threading.Timer(8.0, os.kill, (os.getpid(), sig))  # after the two spawned workers have started their runs
    t0 = time.time()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_planner_timed(_long_planner, "t3", tmp_path / "runs.jsonl", named_record, out=tmp_path,
                              t_start=t0, workers=2)
        assert signal.getsignal(signal.SIGTERM) is caller_handler
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, former)
        signal.signal(signal.SIGINT, former_int)
    assert time.time() - t0 < 40, "the stop waited for the runs in flight"
    assert not multiprocessing.active_children()
    inv = json.loads((tmp_path / "wall_time.json").read_text())["invocations"]
    assert inv[-1]["interrupted"] and inv[-1]["runs_recorded"] == 0


@pytest.mark.parametrize("kw", [{}, {"maximize": True, "require": ("val_loss", 0.5), "tag": "st10",
                                     "secondary_seeds": {"side": (0, 1)}}])
def test_a_group_is_rebuilt_from_its_stored_summary(kw) -> None:
    """A results.json keeps its plan's summary (JSON: lists, not tuples); the group rebuilt from it plans exactly
    the same runs, so committed results stay checkable after the member's plan has changed."""
    g = group(**kw)
    recs = simulate([g])
    stored = json.loads(json.dumps(g.summary(recs)))
    back = Group.from_summary(stored)
    assert back == g
    assert [j.name for j in planned_jobs([back], recs)] == [j.name for j in planned_jobs([g], recs)]


def test_check_budget_refuses_a_tag_that_does_not_name_the_steps():
    from reprokit.config import ConfigError

    g = Group(name="", lr_grid=(1e-3,), grid_arms=("a",), select_by="val", tag="st2000")
    g.check_budget(2000, "small.yaml")                                  # matches: nothing raised
    with pytest.raises(ConfigError, match=r"'st2000'.*small.yaml.*train.steps=4000"):
        g.check_budget(4000, "small.yaml")
    Group(name="", lr_grid=(1e-3,), grid_arms=("a",), select_by="val", tag="it1500").check_budget(1500, "x", prefix="it")
    Group(name="", lr_grid=(1e-3,), grid_arms=("a",), select_by="val").check_budget(7, "x")   # untagged: not checked
