"""The console script: train / evaluate / sample via --run (no --config), intermixed overrides, and
expected failures as exit 2 with one line and no traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from racedit.cli import main

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def test_train_then_evaluate_and_sample_via_run_without_config(tmp_path):
    run = tmp_path / "run"
    # options and overrides intermixed
    assert main(["train", "train.steps=4", "--config", str(SMOKE), "model.hidden=48", "--out-dir", str(run),
                 "model.impl=torch"]) == 0
    assert main(["evaluate", "--run", str(run), "eval.heldout_n=32"]) == 0
    ev = json.loads((run / "eval.json").read_text())
    assert ev["heldout_loss"] > 0 and "experts_per_token_by_t" in ev and ev["step"] == 4
    assert (run / "samples_grid.png").is_file()
    assert main(["sample", "--run", str(run), "--per-class", "2"]) == 0
    assert len(list((run / "samples").glob("class_*.png"))) == 4


def _cli(*argv, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "racedit.cli", *argv], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


@pytest.mark.parametrize("argv,needle", [
    (["train", "--config", str(SMOKE), "data.source=folder", "data.path={missing}"], "{missing}"),
    (["train", "--config", str(SMOKE), "model.nope=1"], "model.nope"),
    (["train", "--config", str(SMOKE), "model.size=B"], "model.depth=2 conflicts with model.size=B"),
    (["evaluate", "--run", "{missing}"], "{missing}"),
])
def test_expected_failures_exit_2_with_one_line(tmp_path, argv, needle):
    missing = str(tmp_path / "missing")
    out = tmp_path / "out"
    argv = [a.replace("{missing}", missing) for a in argv]
    if argv[0] == "train":
        argv += ["--out-dir", str(out)]
    r = _cli(*argv)
    assert r.returncode == 2, r.stderr
    assert needle.replace("{missing}", missing) in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("command", ["train", "evaluate", "sample", "reproduce", "bench", "classifier",
                                     "encode-latents"])
def test_every_command_has_help(command):
    r = _cli(command, "--help")
    assert r.returncode == 0 and "--debug" in r.stdout
