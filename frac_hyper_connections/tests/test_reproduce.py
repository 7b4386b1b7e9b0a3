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
