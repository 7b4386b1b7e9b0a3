"""The reproduction's execution: the smoke plan end to end, in one process and in spawned workers."""

import hashlib
import json
from pathlib import Path

import pytest

from hyperfrac.reproduce import PLANS, planned_jobs, run_reproduce
from reprokit.config import ConfigError
from reprokit.results import load_results

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_scale_and_workers_are_user_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown scale 'huge'"):
        run_reproduce("huge", str(tmp_path))
    with pytest.raises(ConfigError, match="--workers"):
        run_reproduce("smoke", str(tmp_path), workers=0)


@pytest.mark.slow
def test_smoke_reproduce_in_workers_equals_one_process_and_leaves_the_readme(tmp_path):
    readme = hashlib.sha256((ROOT / "README.md").read_bytes()).hexdigest()
    res = {}
    for w in (1, 2):
        out = tmp_path / f"w{w}"
        load_results(run_reproduce("smoke", str(out), workers=w))
        recs = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines() if x.strip()]
        assert sorted(r["run"] for r in recs) == sorted(j.name for j in planned_jobs(PLANS["smoke"], recs))
        assert all((out / "arms" / r["run"] / "ckpt").is_dir() and r["curve"] for r in recs)
        res[w] = {r["run"]: (r.get("test_loss"), r.get("test_top1")) for r in recs}
    assert res[1] == res[2]  # one thread per run: the same numbers whatever the number of workers
    assert hashlib.sha256((ROOT / "README.md").read_bytes()).hexdigest() == readme


def _fake_run_one(calls: list):
    """A stand-in for ``run_one``: the committed record of the same kind and arm (the latest one), renamed to the
    job, with a validation score that is best at the middle LR of the base grid (so every grid arm brackets)."""
    import copy
    import math

    recs = [json.loads(x) for x in (ROOT / "results" / "small" / "runs.jsonl").read_text().splitlines() if x.strip()]
    tmpl = {(r["kind"], r["arm"]): r for r in recs}

    def fake(bases, runs_root, job):
        calls.append(job.name)
        r = copy.deepcopy(tmpl[(job.kind, job.arm)])
        d = 0.01 * math.log2(job.lr / (4e-3 if job.kind == "lm" else 2e-3)) ** 2 + 0.001 * job.seed
        r.update(arm=job.arm, lr=job.lr, seed=job.seed, run=job.name, tag=job.tag)
        if job.kind == "lm":
            r.update(val_loss=1.65 + d, test_loss=1.64 + d)
        else:
            r.update(val_top1=0.88 - d, test_top1=0.87 - d)
        return r

    return fake


def test_a_stopped_small_reproduction_keeps_its_wall_time_and_the_resumed_one_adds_to_it(tmp_path, monkeypatch):
    """Ctrl-C during ``reproduce --scale small``: the stopped invocation is recorded in wall_time.json (marked
    interrupted), the resumed one finishes the plan, and results.json's wall time is the sum of both."""
    from hyperfrac import reproduce as rp
    from reprokit.testing import check_stopped_reproduction_wall_time

    calls: list[str] = []
    check_stopped_reproduction_wall_time(rp, _fake_run_one(calls), calls, tmp_path, monkeypatch)
    inv = json.loads((tmp_path / "wall_time.json").read_text())["invocations"]
    assert {i["tag"] for i in inv} == {rp.plan_tag(PLANS["small"])} == {"lm-st8000+vit-st4500"}
    recs = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines() if x.strip()]
    assert sorted(calls) == sorted(r["run"] for r in recs)  # each planned run trained once, none re-run on resume
    assert sorted(calls) == sorted(j.name for j in planned_jobs(PLANS["small"], recs))
