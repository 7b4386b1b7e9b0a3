"""The reproduction plan (``reprokit.plan`` groups), the claim rules of the report, B2's byte model."""

import json
import math

import pytest

from reprokit.claims import NOT_TESTABLE, REPRODUCED
from reprokit.plan import bracketed, chosen_lrs, planned_jobs, run_jobs
from ultramem.plan import FAMILY, GROUPS, PLANS, base_config, flattening_pct, plan_arms

SMALL = GROUPS["small"]
GRID = (3e-3, 6e-3, 1.2e-2)


def _metrics(val, steps=100, nonemb=1000):
    return {"val_loss": val, "test_loss": val, "steps": steps, "tokens": 40_000, "params_non_embedding": nonemb,
            "params_sparse": 0, "count_activated_macs": 1, "s_per_step": 0.1}


def _rec(key, lr, seed, val, group=SMALL, role="dense", curve=None, nonemb=1000):
    """A runs.jsonl record as reproduce.run_job writes it (metrics made up)."""
    return {"run": group.job(key, lr, seed).name, "key": key, "arm": key, "role": role, "lr": lr, "seed": seed,
            "tag": group.tag, "val_loss": val, "metrics": _metrics(val, nonemb=nonemb), "curve": [[100, val]],
            "val_curve": curve or [[75, val + 0.01], [100, val]], "wall_s": 1.0}


def _simulate(group, optima, tmp_path):
    """Run the whole plan through ``reprokit.plan.run_jobs`` with a fake training run whose validation loss
    is a parabola in log2(lr) around the arm's optimum (secondary arms: their family's)."""
    def fake(job):
        opt = optima[FAMILY.get(job.arm, job.arm)]
        return _rec(job.arm, job.lr, job.seed, 3.0 + (math.log2(job.lr / opt)) ** 2 + 0.001 * job.seed, group)

    return run_jobs([group], tmp_path / "runs.jsonl", fake, workers=1)


def test_groups_budget_tags_and_arms():
    for scale, g in GROUPS.items():
        assert g.tag == f"st{base_config(scale).train.steps}"       # the budget the runs really train at
        assert g.select_by == "val_loss" and not g.maximize and g.max_extensions == 2
        assert g.grid_arms == ("dense", "ultramem")
        assert set(g.seed_arms) == {"dense", "ultramem", "pkm", "moe"}
        assert g.secondary == {"moe": "dense", "pkm": "ultramem", "ladder1": "ultramem", "ladder2": "ultramem"}
    assert SMALL.lr_grid == GRID and SMALL.seeds == (0, 1, 2)
    assert GROUPS["smoke"].lr_grid == (3e-3, 6e-3) and GROUPS["smoke"].seeds == (0, 1)
    # every planned arm maps back to one of the member's arms, whose family is the LR source of the plan
    arms = plan_arms(PLANS["small"])
    assert set(arms) == set(SMALL.grid_arms) | set(SMALL.secondary)
    assert all(arms[k].family == src for k, src in SMALL.secondary.items())
    assert SMALL.job("ultramem", 6e-3, 1).name == "ultramem_st1000_lr0.006_s1"


def test_base_grid_first():
    jobs = planned_jobs([SMALL], [])
    assert {(j.arm, j.lr, j.seed) for j in jobs} == {(a, lr, 0) for a in ("dense", "ultramem") for lr in GRID}
    assert len({j.name for j in jobs}) == len(jobs) == 6


def test_small_plan_runs_every_arm_and_seed_at_its_familys_lr(tmp_path):
    recs = _simulate(SMALL, {"dense": 5e-3, "ultramem": 7e-3}, tmp_path)
    got = sorted((r["key"], r["lr"], r["seed"]) for r in recs)
    d = u = 6e-3                              # the grid optima: interior for both, no extension
    want = [(a, lr, 0) for a in ("dense", "ultramem") for lr in GRID]
    want += [("dense", d, s) for s in (1, 2)] + [("ultramem", u, s) for s in (1, 2)]
    want += [("moe", d, s) for s in (0, 1, 2)] + [("pkm", u, s) for s in (0, 1, 2)]
    want += [("ladder1", u, 0), ("ladder2", u, 0)]
    assert got == sorted(want) and len(recs) == 18
    assert chosen_lrs(SMALL, recs) == {"dense": d, "ultramem": u, "moe": d, "pkm": u, "ladder1": u, "ladder2": u}
    assert bracketed(SMALL, "dense", recs) is True and bracketed(SMALL, "ultramem", recs) is True
    assert all(r["run"].startswith(f"{r['key']}_st1000_lr") for r in recs)
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 18
    assert _simulate(SMALL, {"dense": 1.0, "ultramem": 1.0}, tmp_path) == recs   # resumed: nothing reruns


@pytest.mark.parametrize("opt, tried, chosen, is_bracketed", [
    (3e-2, [3e-3, 6e-3, 1.2e-2, 2.4e-2, 4.8e-2], 2.4e-2, True),        # two extensions up, bracketed
    (2e-2, [3e-3, 6e-3, 1.2e-2, 2.4e-2, 4.8e-2], 2.4e-2, True),
    (1.0, [3e-3, 6e-3, 1.2e-2, 2.4e-2, 4.8e-2], 4.8e-2, False),         # still at the edge: no third one
    (1.6e-3, [7.5e-4, 1.5e-3, 3e-3, 6e-3, 1.2e-2], 1.5e-3, True),      # down
    (1e-5, [7.5e-4, 1.5e-3, 3e-3, 6e-3, 1.2e-2], 7.5e-4, False),
])
def test_extensions_until_bracketed_at_most_two(tmp_path, opt, tried, chosen, is_bracketed):
    recs = _simulate(SMALL, {"dense": opt, "ultramem": 6e-3}, tmp_path)
    grid0 = sorted(r["lr"] for r in recs if r["key"] == "dense" and r["seed"] == 0)
    assert grid0 == pytest.approx(tried)
    assert chosen_lrs(SMALL, recs)["dense"] == pytest.approx(chosen)
    assert bracketed(SMALL, "dense", recs) is is_bracketed
    assert sorted(r["seed"] for r in recs if r["key"] == "moe") == [0, 1, 2]
    assert {r["lr"] for r in recs if r["key"] in ("moe",) or (r["key"] == "dense" and r["seed"] > 0)} \
        == {chosen_lrs(SMALL, recs)["dense"]}
    assert len(recs) == 18 + len(tried) - 3


def test_one_extension_is_enough_when_it_brackets(tmp_path):
    recs = _simulate(SMALL, {"dense": 6e-3, "ultramem": 1.5e-2}, tmp_path)
    assert sorted(r["lr"] for r in recs if r["key"] == "ultramem" and r["seed"] == 0) == [3e-3, 6e-3, 1.2e-2, 2.4e-2]
    # 0.0120 and 0.0240 straddle 0.015: the nearer in log2 is 0.012, interior now
    assert chosen_lrs(SMALL, recs)["ultramem"] == 1.2e-2 and bracketed(SMALL, "ultramem", recs)
    assert {r["lr"] for r in recs if r["key"] in ("pkm", "ladder1", "ladder2")} == {1.2e-2}
    assert {r["lr"] for r in recs if r["key"] == "moe" or (r["key"] == "dense" and r["seed"])} == {6e-3}
    assert len(recs) == 19


def test_smoke_plan(tmp_path):
    g = GROUPS["smoke"]
    recs = _simulate(g, {"dense": 4e-3, "ultramem": 4e-3}, tmp_path)   # 3e-3 best, at the lower edge
    assert sorted(r["lr"] for r in recs if r["key"] == "dense" and r["seed"] == 0) == [1.5e-3, 3e-3, 6e-3]
    assert sorted((r["key"], r["seed"]) for r in recs if r["seed"] or r["key"] not in g.grid_arms) == sorted(
        [("dense", 1), ("ultramem", 1), ("moe", 0), ("moe", 1), ("pkm", 0), ("pkm", 1), ("ladder1", 0),
         ("ladder2", 0)])


def test_records_of_another_budget_are_not_the_plans(tmp_path):
    other = [dict(_rec(k, lr, s, 1.0), run=SMALL.job(k, lr, s).name.replace("_st1000_", "_st500_"), tag="st500")
             for k in ("dense", "ultramem") for lr in GRID for s in (0, 1, 2)]
    other += [dict(_rec("dense", 6e-3, 0, 1.0), run="dense_lr0.006_s0")]      # an untagged (old-style) name
    assert planned_jobs([SMALL], other) == planned_jobs([SMALL], [])
    assert chosen_lrs(SMALL, other) == {}
    from ultramem.report import summarize

    assert summarize(other, PLANS["small"], SMALL) == {}
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in other))
    recs = _simulate(SMALL, {"dense": 6e-3, "ultramem": 6e-3}, tmp_path)
    assert len(recs) == 18 and all(r["tag"] == "st1000" for r in recs)


def test_from_scratch_is_told_from_a_resume(tmp_path):
    from ultramem.reproduce import starts_from_scratch

    log, runs = tmp_path / "runs.jsonl", tmp_path / "runs"
    assert starts_from_scratch(SMALL, log, runs)
    log.write_text(json.dumps(dict(_rec("dense", 6e-3, 0, 1.0), run="dense_st500_lr0.006_s0")) + "\n")
    assert starts_from_scratch(SMALL, log, runs)                       # another budget's run: not the plan's
    (runs / "dense_st1000_lr0.003_s0" / "ckpt").mkdir(parents=True)
    assert not starts_from_scratch(SMALL, log, runs)                   # a checkpoint of a planned run
    log.write_text(json.dumps(_rec("dense", 6e-3, 0, 1.0)) + "\n")
    assert not starts_from_scratch(SMALL, log, tmp_path / "elsewhere")   # a finished run of the plan


def test_run_record_carries_select_by_and_the_job(tmp_path):
    from ultramem.reproduce import job_runner

    job = GROUPS["smoke"].job("ladder1", 6e-3, 1)
    rec = job_runner("smoke", tmp_path)(job)
    assert rec["run"] == job.name == "ladder1_st8_lr0.006_s1" and rec["key"] == "ladder1" and rec["tag"] == "st8"
    assert rec["val_loss"] == rec["metrics"]["val_loss"] and math.isfinite(rec["val_loss"])
    assert rec["arm"] == "pkm-rmsm-half-shq-qkln" and rec["family"] == "ultramem"
    assert rec["lr"] == 6e-3 and rec["seed"] == 1 and rec["metrics"]["steps"] == 8
    assert rec["config"]["train"]["seed"] == 1 and rec["config"]["model"]["mem"]["share_query"] is True
    assert (tmp_path / job.name / "ckpt").is_dir()


def test_run_fn_is_picklable_for_worker_processes(tmp_path):
    import pickle

    from ultramem.reproduce import _run_planned, job_runner

    fn = pickle.loads(pickle.dumps(job_runner("small", tmp_path)))
    assert fn.func is _run_planned and fn.args == (PLANS["small"], str(tmp_path), False)


def test_flattening():
    rec = _rec("dense", 1e-3, 0, 2.0, curve=[[50, 2.5], [75, 2.04], [100, 2.0]])
    assert math.isclose(flattening_pct(rec), 100 * 0.04 / 2.04)


def test_claims_follow_the_floors():
    from ultramem.report import make_claims, make_floors, summarize

    plan = PLANS["small"]
    recs = [_rec(a, lr, 0, v) for a in ("dense", "ultramem") for lr, v in zip(GRID, (3.1, 3.05, 3.2))]
    for s in (0, 1, 2):
        recs.append(_rec("dense", 6e-3, s, 3.0 + 0.001 * s))
        recs.append(_rec("pkm", 6e-3, s, 2.95 + 0.001 * s, role="pkm"))
        recs.append(_rec("ultramem", 6e-3, s, 2.9 + 0.001 * s, role="ultramem"))
    summary = summarize(recs, plan, SMALL)
    assert summary["pkm"]["seeds"] == [0, 1, 2] and summary["pkm"]["lr"] == 6e-3
    floors = make_floors(summary)
    assert all(f["ok"] for f in floors)
    claims = {c["id"]: c for c in make_claims(summary, floors)}
    assert claims["ultramem_beats_pkm"]["status"] == REPRODUCED
    assert claims["ultramem_beats_dense"]["status"] == REPRODUCED
    bad = [_rec(r["key"], r["lr"], r["seed"], r["metrics"]["val_loss"], role=r["role"], nonemb=10**6) for r in recs]
    summary = summarize(bad, plan, SMALL)
    floors = make_floors(summary)
    assert not floors[0]["ok"]
    claims = {c["id"]: c for c in make_claims(summary, floors)}
    assert claims["ultramem_beats_pkm"]["status"] == NOT_TESTABLE


def test_report_records_the_plan_from_reprokit(tmp_path):
    from ultramem.report import build_report

    recs = _simulate(SMALL, {"dense": 3e-2, "ultramem": 1.0}, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    res = json.loads(build_report("small", recs, out, tmp_path, elapsed_s=12.0, from_scratch=True).read_text())
    plan = res["protocol"]["plan"]
    assert plan["tag"] == "st1000" and plan["max_extensions"] == 2 and plan["select_by"] == "val_loss"
    assert plan["chosen_lrs"]["moe"] == 2.4e-2 and plan["chosen_lrs"]["pkm"] == 4.8e-2
    assert plan["bracketed"] == {"dense": True, "ultramem": False}
    assert sorted(plan["runs"]) == sorted(r["run"] for r in recs) and len(recs) == 22
    assert res["protocol"]["invocation"] == {"wall_s": 12.0, "from_scratch": True}
    rows = res["tables"]["lr_grid"]["rows"]
    assert len(rows) == 10 and [r[3] for r in rows if r[3]] == ["chosen (bracketed)", "chosen (at the edge)"]
    main = {r[0]: r for r in res["tables"]["main"]["rows"]}
    assert main["moe"][1] == "0.024" and main["moe"][2] == 3 and main["pkm-rmsm-half-shq-qkln"][2] == 1
    inv = json.loads((out / "wall_time.json").read_text())["invocations"]
    assert inv[-1]["from_scratch"] is True and inv[-1]["runs_recorded"] == 22


def test_a_diverged_run_is_reported_not_dropped(tmp_path, monkeypatch):
    """Through the real ``run_fn`` (training faked): dense diverges at the top grid LR (its best trained LR 6e-3 is
    then bracketed, although the fake loss keeps falling with the LR) and PKM loses seed 2. The run goes on, the
    report builds, the LR table says ``diverged``, and UltraMem vs PKM pairs the two seeds PKM trained."""
    import ultramem.reproduce as rp
    from ultramem.report import build_report

    diverge = {SMALL.job("dense", 1.2e-2, 0).name, SMALL.job("pkm", 6e-3, 2).name}
    optima = {"dense": 3e-2, "ultramem": 6e-3}
    calls = []

    def run_job(plan, job, runs_dir, threads=1, quiet=True):
        calls.append(job.name)
        if job.name in diverge:
            raise FloatingPointError(f"non-finite loss nan at step 9 ({job.name})")
        opt = optima[FAMILY.get(job.arm, job.arm)]
        return _rec(job.arm, job.lr, job.seed, 3.0 + math.log2(job.lr / opt) ** 2 + 0.001 * job.seed)

    monkeypatch.setattr(rp, "run_job", run_job)
    out = tmp_path / "out"
    out.mkdir()
    recs = rp.execute("small", out, tmp_path / "runs")
    assert sorted(r["run"] for r in recs if r.get("diverged")) == sorted(diverge) and len(recs) == 18
    res = json.loads(build_report("small", recs, out, tmp_path).read_text())
    plan = res["protocol"]["plan"]
    assert plan["chosen_lrs"]["dense"] == 6e-3 and plan["chosen_lrs"]["moe"] == 6e-3
    assert plan["bracketed"] == {"dense": True, "ultramem": True}
    assert sorted(res["diverged_runs"]) == sorted(diverge) and not set(res["protocol"]["run_wall_s"]) & diverge
    grid = {(r[0], r[1]): r for r in res["tables"]["lr_grid"]["rows"]}
    assert grid[("dense", "0.012")][2:] == ["diverged", ""] and grid[("dense", "0.006")][3] == "chosen (bracketed)"
    assert res["arms"]["pkm"]["seeds"] == [0, 1] and SMALL.job("pkm", 6e-3, 2).name in res["tables"]["main"]["caption"]
    main = {r[0]: r for r in res["tables"]["main"]["rows"]}
    assert main["pkm"][2] == 2 and main["dense"][2] == 3
    claim = next(c for c in res["claims"] if c["id"] == "ultramem_beats_pkm")
    assert "(2 paired seeds)" in claim["evidence"]
    calls.clear()
    assert rp.execute("small", out, tmp_path / "runs") == recs and calls == []   # never retried


def test_first_small_results_replace_the_not_yet_run_paragraph(tmp_path):
    import shutil
    from pathlib import Path

    from reprokit.results import NOT_YET_RUN
    from ultramem.report import ensure_result_markers

    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "README.md", tmp_path / "README.md")
    ensure_result_markers(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert NOT_YET_RUN not in text and "has not been run yet" not in text and "is in progress" not in text
    for key in ("results:small/main", "results:small/lr_grid", "floors:small", "claims:small"):
        assert f"<!-- BEGIN {key} -->" in text
    assert "## Performance" in text


def test_b2_byte_model():
    """MoE reads saturate at all experts by B ~ 3E/k; the memory layer's value reads grow ~ B m H D_v."""
    from ultramem.bench import _latency_cfgs, bytes_touched

    cfgs = _latency_cfgs()
    moe_all = bytes_touched("moe", cfgs["moe"], 10**6)
    assert bytes_touched("moe", cfgs["moe"], 64) > 0.95 * moe_all
    assert bytes_touched("moe", cfgs["moe"], 1) < 0.1 * moe_all
    mem1, mem2 = bytes_touched("memory", cfgs["memory"], 1), bytes_touched("memory", cfgs["memory"], 2)
    mc = cfgs["memory"].model.mem
    assert math.isclose(mem2 - mem1, 4 * mc.topm * mc.heads * 512, rel_tol=0.02)
    assert bytes_touched("memory", cfgs["memory"], 256) < 0.3 * moe_all
    assert 24e6 < mc.n_physical() * 512 < 27e6            # ~25M sparse parameters, like the MoE


def test_latency_bench_runs_and_records_medians_and_bytes(tmp_path):
    from reprokit.bench import load_bench, write_bench
    from reprokit.results import render_bench
    from ultramem.bench import latency_bench, plot_latency

    res = latency_bench(batches=[1, 4], min_runs=2)
    assert list(res["cases"]) == ["B = 1", "B = 4"]
    for rows in res["cases"].values():
        assert [r.name for r in rows] == ["dense", "moe", "memory"] and rows[0].ratio == 1.0
        assert all(r.median_ms > 0 for r in rows)
    ex = res["extra"]
    assert all(ex["runs"][k][b] >= 2 and ex["mb_read"][k][b] > 0 for k in ("dense", "moe", "memory") for b in (1, 4))
    assert 24e6 < ex["params"]["moe"] < 27e6 and 24e6 < ex["params"]["memory"] < 27e6
    assert ex["claim"]["verdict"] == "not measured"                      # no B = 64 in this quick run
    path = write_bench(tmp_path / "latency.json", res["cases"], command="test", extra=ex)
    assert "| memory |" in render_bench(json.loads(path.read_text()))    # the README block renders
    assert load_bench(path)["extra"]["mb_read"]["moe"]["4"] > 0
    assert plot_latency(res["cases"], ex, tmp_path / "latency.png").stat().st_size > 0


def test_latency_claim_verdicts():
    from reprokit.bench import BenchRow
    from ultramem.bench import latency_claim

    def case(dense, moe, mem):
        return [BenchRow(n, v, v, v, None, v / dense, None) for n, v in (("dense", dense), ("moe", moe), ("memory", mem))]

    good = {"B = 1": case(1, 1, 1), "B = 64": case(2, 5, 2.5), "B = 256": case(4, 9, 5.9), "B = 1024": case(8, 9, 30)}
    c = latency_claim(good)
    assert c["verdict"] == "reproduced" and c["moe_over_memory_at_64"] == 2.0
    assert c["max_memory_over_dense"] == pytest.approx(1.475)              # B = 1024 is beyond the claim's range
    bad = dict(good, **{"B = 256": case(4, 9, 6.1)})
    assert latency_claim(bad)["verdict"] == "not reproduced"
    assert latency_claim({"B = 1": case(1, 1, 1)})["verdict"] == "not measured"


def test_peer_bench_needs_the_bench_group(monkeypatch):
    import sys

    from reprokit.errors import UserError
    from ultramem.bench import peer_bench

    monkeypatch.setitem(sys.modules, "product_key_memory", None)
    with pytest.raises(UserError, match="--group bench"):
        peer_bench()


def test_peer_bench_runs_at_a_tiny_size():
    pytest.importorskip("product_key_memory")
    from ultramem.bench import peer_bench

    res = peer_bench(dim=32, heads=2, num_keys=8, topk=4, dim_head=8, batch=(2, 4), repeats=1)
    (rows,) = res["cases"].values()
    assert [r.name for r in rows] == ["ultramem (ours, torch)", "product-key-memory PKM"]
    p = res["extra"]["params"]
    assert abs(p["ours"] - p["theirs"]) <= 2 * 2 * 8                       # only the query LayerNorm widths differ
