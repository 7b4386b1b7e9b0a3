"""The reproduction plan (a pure function of the base grid), the claim rules of the report, B2's byte model."""

import math

from reprokit.claims import NOT_TESTABLE, REPRODUCED
from ultramem.plan import PLANS, edge_extension, flattening_pct, run_name, stage_jobs


def _rec(arm, lr, seed, val, role="dense", steps=100, curve=None, nonemb=1000):
    return {"run": f"{arm}_lr{lr:g}_s{seed}", "arm": arm, "role": role, "lr": lr, "seed": seed,
            "metrics": {"val_loss": val, "test_loss": val, "steps": steps, "tokens": 40_000,
                        "params_non_embedding": nonemb, "params_sparse": 0, "count_activated_macs": 1,
                        "s_per_step": 0.1},
            "curve": [], "val_curve": curve or [[75, val + 0.01], [100, val]], "wall_s": 1.0}


def test_stage_0_and_run_names():
    jobs = stage_jobs("small", 0, [])
    assert len(jobs) == 2 * len(PLANS["small"]["lr_grid"])
    names = [run_name(*j) for j in jobs]
    assert len(set(names)) == len(names)
    assert "ultramem_lr0.006_s0" in names and "dense_lr0.003_s0" in names


def test_edge_extension_is_decided_from_the_base_grid():
    grid = [3e-3, 6e-3, 1.2e-2]
    recs = [_rec("dense", lr, 0, v) for lr, v in zip(grid, [3.0, 2.9, 2.8])]
    assert edge_extension(recs, "dense", grid) == 2.4e-2
    recs = [_rec("dense", lr, 0, v) for lr, v in zip(grid, [2.8, 2.9, 3.0])]
    assert edge_extension(recs, "dense", grid) == 1.5e-3
    recs = [_rec("dense", lr, 0, v) for lr, v in zip(grid, [2.9, 2.8, 3.0])]
    assert edge_extension(recs, "dense", grid) is None
    recs.append(_rec("dense", 2.4e-2, 0, 1.0))       # a later record never changes the stage-1 decision
    assert edge_extension(recs, "dense", grid) is None


def test_stage_2_uses_each_familys_chosen_lr():
    grid = PLANS["small"]["lr_grid"]
    recs = [_rec("dense", lr, 0, v) for lr, v in zip(grid, [3.0, 2.8, 2.9])]
    recs += [_rec("ultramem", lr, 0, v, role="ultramem") for lr, v in zip(grid, [2.7, 2.75, 2.9])]
    jobs = stage_jobs("small", 2, recs)
    lrs = {(a.name, s): lr for a, lr, s in jobs}
    assert lrs[("dense", 1)] == 6e-3 and lrs[("moe", 0)] == 6e-3
    assert lrs[("ultramem", 2)] == 3e-3 and lrs[("pkm", 0)] == 3e-3
    assert sum(1 for a, _, _ in jobs if a.role == "ladder") == 2
    assert len(jobs) == 2 * 2 + 2 * 3 + 2


def test_flattening():
    rec = _rec("dense", 1e-3, 0, 2.0, curve=[[50, 2.5], [75, 2.04], [100, 2.0]])
    assert math.isclose(flattening_pct(rec), 100 * 0.04 / 2.04)


def test_claims_follow_the_floors():
    from ultramem.report import make_claims, make_floors, summarize

    plan = PLANS["small"]
    recs = []
    for s in (0, 1, 2):
        recs.append(_rec("dense", 6e-3, s, 3.0 + 0.001 * s))
        recs.append(_rec("pkm", 6e-3, s, 2.95 + 0.001 * s, role="pkm"))
        recs.append(_rec("ultramem", 6e-3, s, 2.9 + 0.001 * s, role="ultramem"))
    summary = summarize(recs, plan)
    floors = make_floors(summary)
    assert all(f["ok"] for f in floors)
    claims = {c["id"]: c for c in make_claims(summary, floors)}
    assert claims["ultramem_beats_pkm"]["status"] == REPRODUCED
    assert claims["ultramem_beats_dense"]["status"] == REPRODUCED
    bad = [_rec(r["arm"], r["lr"], r["seed"], r["metrics"]["val_loss"], role=r["role"], nonemb=10**6) for r in recs]
    summary = summarize(bad, plan)
    floors = make_floors(summary)
    assert not floors[0]["ok"]
    claims = {c["id"]: c for c in make_claims(summary, floors)}
    assert claims["ultramem_beats_pkm"]["status"] == NOT_TESTABLE


def test_first_small_results_replace_the_not_yet_run_paragraph(tmp_path):
    import shutil
    from pathlib import Path

    from ultramem.report import NOT_YET_RUN, ensure_result_markers

    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "README.md", tmp_path / "README.md")
    ensure_result_markers(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert NOT_YET_RUN not in text and "has not been run yet" not in text
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


def test_latency_bench_runs_and_records_medians_and_bytes():
    from ultramem.bench import latency_bench

    res = latency_bench(batches=[1, 4], min_runs=2)
    assert [r["batch"] for r in res["rows"]] == [1, 4]
    for r in res["rows"]:
        for k in ("dense", "moe", "memory"):
            assert r[f"{k}_ms"] > 0 and r[f"{k}_runs"] >= 2 and r[f"{k}_mb_read"] > 0
    assert 24e6 < res["params"]["moe"] < 27e6 and 24e6 < res["params"]["memory"] < 27e6
