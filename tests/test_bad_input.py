"""The bad-input table every member inherits, run through the member's console script.

Each case checks the exit code 2, the culprit named in a one-line message, no traceback (without
--debug), and that nothing already saved changed. A separate case corrupts each file of the newest
checkpoint in turn and checks that training resumes from the previous one with the losses a clean
run had.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BASE = ["train.log_every=1", "train.threads=1"]


def _env():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _cli(member, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", member.cli_module, *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(), cwd=member.folder)


def _smoke(member) -> str:
    return str(member.folder / "configs" / "smoke.yaml")


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _expect_user_error(r, *culprits):
    msg = f"exit {r.returncode}\nstdout: {r.stdout[-1500:]}\nstderr: {r.stderr[-3000:]}"
    assert r.returncode == 2, msg
    assert "Traceback" not in r.stderr, msg
    for c in culprits:
        assert c in r.stderr, f"{c!r} not named: {msg}"


def _losses(run: Path) -> list[tuple[int, float]]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [(r["step"], r["loss"]) for r in recs if r.get("split") == "train" and "loss" in r]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, member):
    """A 4-step smoke run with checkpoints at steps 2 and 4 (keep_last 2), logging every step."""
    out = tmp_path_factory.mktemp(f"bad_{member.name}") / "run"
    r = _cli(member, "train", "--config", _smoke(member), "--out-dir", str(out), *BASE,
             "train.steps=4", "train.ckpt_every=2", "train.keep_last=2")
    assert r.returncode == 0, r.stderr[-3000:]
    ckpts = sorted((out / "ckpt").glob("step_*"))
    assert [p.name for p in ckpts] == ["step_00000002", "step_00000004"], ckpts
    return out


def test_missing_data_path(member, tmp_path):
    missing = tmp_path / "no_such_data"
    overrides = [o.replace("{missing}", str(missing)) for o in member.bad_input["missing-data"]]
    out = tmp_path / "run"
    r = _cli(member, "train", "--config", _smoke(member), "--out-dir", str(out), *overrides)
    _expect_user_error(r, str(missing))
    assert not out.exists() or not any(out.iterdir()), "a failed start must not write a run folder"


@pytest.mark.parametrize("override, key", [
    ("train.stepz=3", "train.stepz"),
    ("train.steps=abc", "train.steps"),
    ("train.lr=fast", "train.lr"),
    ("model.depth=[1, 2]", "model.depth"),
    ("nosection.x=1", "nosection"),
])
def test_bad_override(member, tmp_path, override, key):
    out = tmp_path / "run"
    r = _cli(member, "train", "--config", _smoke(member), "--out-dir", str(out), override)
    _expect_user_error(r, key)
    assert not out.exists()


def test_bad_config_file(member, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {steps: [unclosed\n")
    r = _cli(member, "train", "--config", str(bad), "--out-dir", str(tmp_path / "run"))
    _expect_user_error(r, str(bad))
    r = _cli(member, "train", "--config", str(tmp_path / "absent.yaml"), "--out-dir", str(tmp_path / "run"))
    _expect_user_error(r, "absent.yaml")


def test_overrides_on_both_sides_of_an_option(member, tmp_path):
    import yaml

    out = tmp_path / "run"
    r = _cli(member, "train", "train.steps=2", "--config", _smoke(member), "train.log_every=1",
             "--out-dir", str(out), "train.threads=1")
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["train"]["steps"] == 2 and cfg["train"]["log_every"] == 1
    assert [s for s, _ in _losses(out)] == [1, 2]


def test_evaluate_reloads_the_runs_own_config(member, trained):
    r = _cli(member, "evaluate", "--run", str(trained))
    assert r.returncode == 0, r.stderr[-3000:]


def _ckpt_files(run: Path, step: int) -> list[str]:
    return sorted(p.name for p in (run / "ckpt" / f"step_{step:08d}").iterdir())


def test_truncated_checkpoint_files_are_named_and_nothing_changes(member, trained, tmp_path):
    """The only checkpoint corrupt: train and evaluate stop with exit 2 naming the file."""
    names = _ckpt_files(trained, 4)
    assert {"model.safetensors", "optim.pt", "state.json"} <= set(names)
    for name in names:
        run = tmp_path / name
        shutil.copytree(trained, run)
        shutil.rmtree(run / "ckpt" / "step_00000002")  # no older checkpoint to fall back to
        f = run / "ckpt" / "step_00000004" / name
        f.write_bytes(f.read_bytes()[: max(1, f.stat().st_size // 2)])
        before = _tree_digest(run)
        r = _cli(member, "train", "--config", _smoke(member), "--out-dir", str(run), *BASE, "train.steps=6")
        _expect_user_error(r, name)
        r2 = _cli(member, "evaluate", "--run", str(run))
        _expect_user_error(r2, name)
        assert _tree_digest(run) == before, f"{name}: a failed command changed saved files"


def test_corrupt_newest_checkpoint_falls_back_with_identical_losses(member, trained, tmp_path):
    reference = dict(_losses(trained))
    assert sorted(reference) == [1, 2, 3, 4]
    for name in _ckpt_files(trained, 4):
        run = tmp_path / name
        shutil.copytree(trained, run)
        f = run / "ckpt" / "step_00000004" / name
        data = f.read_bytes()
        f.write_bytes(data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:])
        older = _tree_digest(run / "ckpt" / "step_00000002")
        r = _cli(member, "train", "--config", _smoke(member), "--out-dir", str(run), *BASE,
                 "train.steps=4", "train.ckpt_every=2", "train.keep_last=2")
        assert r.returncode == 0, f"{name}: {r.stderr[-3000:]}"
        assert "step_00000004" in r.stderr and name in r.stderr, f"{name}: the skipped checkpoint is not reported"
        resumed = _losses(run)[4:]
        assert [s for s, _ in resumed] == [3, 4], f"{name}: resumed at the wrong step: {resumed}"
        assert all(loss == reference[s] for s, loss in resumed), f"{name}: {resumed} vs {reference}"
        assert _tree_digest(run / "ckpt" / "step_00000002") == older
