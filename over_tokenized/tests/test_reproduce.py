"""The reproduction plan (a pure function of the base grid) and the claim rules of the report."""

import math

from overtok.plan import PLANS, edge_extension, fit_line, flattening_pct, plan_arms, run_name, stage_jobs
from reprokit.claims import NOT_TESTABLE, REPRODUCED


def _rec(arm, lr, seed, val, test=None, role="baseline", steps=100, curve=None, nonemb=1000):
    return {"run": f"{arm}_lr{lr:g}_s{seed}", "arm": arm, "role": role, "lr": lr, "seed": seed,
            "metrics": {"val_loss": val, "test_loss": val if test is None else test, "test_ppl": math.exp(val),
                        "test_bpt": val / math.log(2), "steps": steps, "tokens": 40_000,
                        "params_non_embedding": nonemb, "params_ngram_tables": 0, "params_embedding": 10,
                        "table_mb": 0, "table_optim_mb": 0, "ckpt_mb": 1, "s_per_step": 0.1},
            "curve": [], "val_curve": curve or [[75, val + 0.01], [100, val]], "wall_s": 1.0}


def test_stage_0_and_run_names():
    jobs = stage_jobs("small", 0, [])
    assert len(jobs) == 2 * len(PLANS["small"]["lr_grid"])
    names = [run_name(*j) for j in jobs]
    assert len(set(names)) == len(names)
    assert "oe-n3k1-m65537_lr0.006_s0" in names and "base_lr0.003_s0" in names


def test_edge_extension_is_decided_from_the_base_grid():
    grid = [3e-3, 6e-3, 1.2e-2]
    recs = [_rec("base", lr, 0, v) for lr, v in zip(grid, [3.0, 2.9, 2.8])]
    assert edge_extension(recs, "base", grid) == 2.4e-2
    recs = [_rec("base", lr, 0, v) for lr, v in zip(grid, [2.8, 2.9, 3.0])]
    assert edge_extension(recs, "base", grid) == 1.5e-3
    recs = [_rec("base", lr, 0, v) for lr, v in zip(grid, [2.9, 2.8, 3.0])]
    assert edge_extension(recs, "base", grid) is None
    recs.append(_rec("base", 2.4e-2, 0, 1.0))       # a later record never changes the stage-1 decision
    assert edge_extension(recs, "base", grid) is None


def test_stage_2_uses_each_familys_chosen_lr():
    grid = PLANS["small"]["lr_grid"]
    recs = [_rec("base", lr, 0, v) for lr, v in zip(grid, [3.0, 2.8, 2.9])]
    recs += [_rec("oe-n3k1-m65537", lr, 0, v, role="main") for lr, v in zip(grid, [2.9, 2.95, 2.7])]
    recs.append(_rec("oe-n3k1-m65537", 2.4e-2, 0, 2.75, role="main"))
    jobs = stage_jobs("small", 2, recs)
    by = {run_name(*j) for j in jobs}
    assert {"base_lr0.006_s1", "base_lr0.006_s2", "oe-n3k1-m65537_lr0.012_s1", "base-d4_lr0.006_s0",
            "oe-n2k1-m1025_lr0.012_s1", "oe-n2k1-m65537-no1g_lr0.012_s0", "ot-n3k1-m65537_lr0.012_s0"} <= by
    assert len(jobs) == 4 + 5 * 2 + 3
    arms = plan_arms(PLANS["small"])
    assert dict(arms["ot"].keys)["model.mtp.heads"] == 1 and dict(arms["hierarchy"].keys)["model.oe.unigram"] is False


def test_fit_and_flattening():
    a, b, r2 = fit_line([1, 2, 3, 4], [3.0, 2.9, 2.8, 2.7])
    assert math.isclose(b, -0.1) and math.isclose(a, 3.1) and math.isclose(r2, 1.0)
    rec = _rec("base", 1e-3, 0, 2.0, curve=[[50, 2.5], [75, 2.04], [100, 2.0]])
    assert math.isclose(flattening_pct(rec), 100 * 0.04 / 2.04)


def test_claims_follow_the_floors():
    from overtok.report import make_claims, make_floors, summarize, vocab_law

    plan = PLANS["small"]
    recs = []
    for s in (0, 1, 2):
        recs.append(_rec("base", 6e-3, s, 3.0 + 0.001 * s))
        recs.append(_rec("oe-n3k1-m65537", 6e-3, s, 2.9 + 0.001 * s, role="main"))
    summary = summarize(recs, plan)
    floors = make_floors(summary)
    assert all(f["ok"] for f in floors)
    claims = {c["id"]: c for c in make_claims(summary, vocab_law(summary, plan, 1000), floors)}
    assert claims["oe_beats_baseline"]["status"] == REPRODUCED
    bad = [_rec(r["arm"], r["lr"], r["seed"], r["metrics"]["val_loss"], role=r["role"], nonemb=10**6) for r in recs]
    summary = summarize(bad, plan)
    floors = make_floors(summary)
    assert not floors[0]["ok"]
    claims = {c["id"]: c for c in make_claims(summary, vocab_law(summary, plan, 1000), floors)}
    assert claims["oe_beats_baseline"]["status"] == NOT_TESTABLE


def test_first_small_results_replace_the_not_yet_run_paragraph(tmp_path):
    import shutil
    from pathlib import Path

    from overtok.report import NOT_YET_RUN, ensure_result_markers

    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "README.md", tmp_path / "README.md")
    ensure_result_markers(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert NOT_YET_RUN not in text and "has not been run yet" not in text
    for key in ("results:small/main", "results:small/vocab_law", "floors:small", "claims:small"):
        assert f"<!-- BEGIN {key} -->" in text
    assert "**Plan**" in text and "## Performance" in text
