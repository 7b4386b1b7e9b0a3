"""End-to-end per paper: the smoke reproduction, and a 2-process torchrun (gloo, CPU) smoke train."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reprokit.results import load_results


def _env():
    # member conftests set TRITON_INTERPRET=1 for their parity tests; a run must not inherit it
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _git_status(folder: Path) -> str | None:
    r = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", "."],
                       capture_output=True, text=True, cwd=folder)
    return r.stdout if r.returncode == 0 else None


def test_reproduce_smoke_leaves_git_clean(member):
    """The README's first command, as a user runs it (default output folder): it works, writes its
    results to the ignored runs/smoke/, and leaves `git status` of the member as it was."""
    before = _git_status(member.folder)
    r = subprocess.run([sys.executable, "-m", member.cli_module, "reproduce", "--scale", "smoke"],
                       capture_output=True, text=True, timeout=600, env=_env(), cwd=member.folder)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = load_results(member.folder / "runs" / "smoke" / "results.json")
    assert res["scale"] == "smoke" and res["arms"]
    if before is not None:
        assert _git_status(member.folder) == before, "reproduce --scale smoke changed files that git tracks or sees"


@pytest.mark.distributed
def test_torchrun_two_rank_smoke_train(member, tmp_path):
    out, logs = tmp_path / "ddp", tmp_path / "ddp_logs"
    # --log-dir/--tee: each rank's own stdout/stderr also lands in a file, so a failing rank's error is shown
    # below even when the launcher's summary fills the tail of the combined stderr
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "--log-dir", str(logs), "--tee", "3",
                        "-m", member.cli_module, "train", "--config", str(member.folder / "configs" / "smoke.yaml"),
                        "--out-dir", str(out)], capture_output=True, text=True, timeout=600, env=_env(),
                       cwd=member.folder)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:] + "".join(
        f"\n--- {f.relative_to(logs)} (tail) ---\n{f.read_text(errors='replace')[-2000:]}"
        for f in sorted(logs.rglob("stderr.log")))
    assert (out / "metrics.jsonl").is_file()
