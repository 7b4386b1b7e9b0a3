"""The paper console script: intermixed overrides, per-command options, one error path for users."""

import subprocess
import sys
import textwrap

import pytest

from reprokit.papercli import Command, build_cli

SCRIPT = textwrap.dedent("""
    import json, sys
    from dataclasses import dataclass, field
    from reprokit.config import load_config
    from reprokit.errors import DataError
    from reprokit.papercli import Command, build_cli

    @dataclass
    class T:
        steps: int = 1
        log_every: int = 1

    @dataclass
    class C:
        train: T = field(default_factory=T)
        path: str = ""

    def train(args):
        cfg = load_config(C, args.config, args.overrides)
        if cfg.path:
            raise DataError(f"data.path {cfg.path!r} does not exist")
        print(json.dumps({"steps": cfg.train.steps, "log_every": cfg.train.log_every}))

    def crash(args):
        raise RuntimeError("a bug")

    def stop(args):
        raise KeyboardInterrupt

    main = build_cli("prog", {"train": Command(train), "bench": Command(crash, config=False),
                              "sample": Command(stop, config=False)})
    main()
""")


@pytest.fixture
def prog(tmp_path):
    p = tmp_path / "prog.py"
    p.write_text(SCRIPT)
    (tmp_path / "c.yaml").write_text("train: {steps: 5}\n")
    return lambda *a: subprocess.run([sys.executable, str(p), *a], capture_output=True, text=True, cwd=tmp_path)


def test_overrides_on_both_sides_of_an_option(prog):
    r = prog("train", "train.steps=2", "--config", "c.yaml", "train.log_every=3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == '{"steps": 2, "log_every": 3}'


def test_user_error_is_one_line_exit_2_and_debug_shows_the_traceback(prog):
    r = prog("train", "path=/no/such")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "prog train: error: data.path '/no/such' does not exist"
    r = prog("train", "--debug", "path=/no/such")
    assert r.returncode == 2 and "Traceback" in r.stderr and "DataError" in r.stderr
    r = prog("train", "train.stepz=1")
    assert r.returncode == 2 and "train.stepz" in r.stderr and "steps" in r.stderr
    r = prog("train", "train.steps=abc")
    assert r.returncode == 2 and "train.steps" in r.stderr and "Traceback" not in r.stderr


def test_bugs_keep_their_traceback(prog):
    r = prog("bench")
    assert r.returncode == 1 and "Traceback" in r.stderr and "a bug" in r.stderr


def test_a_stop_is_one_line_exit_130(prog):
    r = prog("sample")
    assert r.returncode == 130 and r.stderr.strip() == "prog sample: stopped"
    r = prog("sample", "--debug")
    assert r.returncode == 130 and "Traceback" in r.stderr and "KeyboardInterrupt" in r.stderr


def test_commands_without_config_reject_it(prog):
    r = prog("bench", "--config", "c.yaml")
    assert r.returncode == 2 and "--config" in r.stderr


def test_in_process_and_reproduce_options():
    seen = {}

    def rep(args):
        seen.update(vars(args))
        return 0

    main = build_cli("p", {"reproduce": Command(rep), "evaluate": Command(rep, run=True)})
    assert main(["reproduce", "--scale", "small", "--workers", "2"]) == 0
    assert seen["scale"] == "small" and seen["workers"] == 2 and seen["overrides"] == []
    assert main(["evaluate", "--run", "runs/x", "eval.n=3"]) == 0
    assert seen["run"] == "runs/x" and seen["overrides"] == ["eval.n=3"]
    with pytest.raises(SystemExit) as e:
        main(["nope"])
    assert e.value.code == 2
