"""The reproduction plan (a pure function of the base grid), the claim rules of the report, B2's byte model."""

import json
import math

import pytest

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
