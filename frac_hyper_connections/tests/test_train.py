"""Training: smoke train + exact resume, the golden smoke losses, nothing saved changes on a failure, the
fallback of a corrupt newest checkpoint, load_run and the commands that reload a run (``--run DIR``)."""

import json
from pathlib import Path

import pytest

from hyperfrac.config import Cfg
from hyperfrac.train import load_run, lr_at, train
from reprokit.checkpoint import CheckpointError, CheckpointMismatch
from reprokit.config import ConfigError, load_config
from reprokit.errors import DataError, ShapeError, UserError
from reprokit.testing import check_golden

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


def _cfg(*over):
    return load_config(Cfg, SMOKE, overrides=list(over))


def _records(path):
    return [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines() if x.strip()]


def _losses(path):
    """step -> loss of the train records (metrics.jsonl is appended to; a re-done step counts by its last record)"""
    return {r["step"]: r["loss"] for r in _records(path) if r["split"] == "train"}


def test_golden_smoke_loss(tmp_path):
    """configs/smoke.yaml, one process, every step logged; regenerate on purpose with REPROKIT_UPDATE_GOLDEN=1."""
    train(_cfg("train.log_every=1"), tmp_path)
    losses = _losses(tmp_path)
    assert sorted(losses) == list(range(1, 9))
    check_golden(Path(__file__).parent / "golden" / "smoke_loss.json", [losses[s] for s in sorted(losses)],
                 note="hyperfrac train --config configs/smoke.yaml train.log_every=1 (one process, one thread): "
                      "train loss at steps 1..8; batches from reprokit.rng.step_rng(seed, 'batch', rank, step)")


@pytest.mark.parametrize("conn", ["dhcx2", "dfcx2"])
def test_exact_resume(tmp_path, conn):
    straight = train(_cfg(f"model.connection={conn}", "train.log_every=1"), tmp_path / "a")
    assert train(_cfg(f"model.connection={conn}", "train.log_every=1", "train.stop_after=4"),
                 tmp_path / "b") == {"stopped_at": 4}
    resumed = train(_cfg(f"model.connection={conn}", "train.log_every=1"), tmp_path / "b")
    la, lb = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert sorted(la) == sorted(lb) == list(range(1, 9))
    assert la == lb  # bit-identical on CPU
    assert straight["val_loss"] == resumed["val_loss"]


def test_corrupt_newest_checkpoint_falls_back_with_identical_losses(tmp_path):
    over = ["train.log_every=1", "train.ckpt_every=2", "train.keep_last=2"]
    train(_cfg(*over), tmp_path / "a")
    train(_cfg(*over, "train.stop_after=6"), tmp_path / "b")
    ckpts = sorted(p.name for p in (tmp_path / "b" / "ckpt").iterdir())
    assert ckpts == ["step_00000004", "step_00000006"]  # keep_last
    f = tmp_path / "b" / "ckpt" / "step_00000006" / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    train(_cfg(*over), tmp_path / "b")  # warns, resumes from step 4, re-logs 5..8
    assert [r["step"] for r in _records(tmp_path / "b") if r["split"] == "train"] == [1, 2, 3, 4, 5, 6, 5, 6, 7, 8]
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")


def test_schedule_and_keep_last(tmp_path):
    c = _cfg("train.steps=100", "train.warmup_frac=0.1", "train.lr=1.0")
    assert lr_at(0, c) == pytest.approx(0.1) and lr_at(9, c) == pytest.approx(1.0)
    assert lr_at(99, c) < 0.2
    c.train.schedule = "constant"
    assert lr_at(50, c) == lr_at(99, c) == 1.0
    train(_cfg("train.steps=5", "train.ckpt_every=1", "train.keep_last=3"), tmp_path)
    assert len(list((tmp_path / "ckpt").glob("step_*"))) == 3
    with pytest.raises(ConfigError, match="train.keep_last"):
        train(_cfg("train.keep_last=1"), tmp_path / "k")
    assert not (tmp_path / "k").exists()


def test_resume_from_other_model_config_is_an_error_and_changes_nothing(tmp_path):
    train(_cfg("train.stop_after=2"), tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointMismatch, match="model.connection"):
        train(_cfg("model.connection=dfcx2"), tmp_path)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("over,err,frag", [
    (["data.source=memmap", "data.train_path={m}", "data.val_path={m}", "data.test_path={m}"], DataError,
     "data.train_path: .*{m}"),
    (["model.heads=3"], ShapeError, "model.heads=3 must divide model.hidden=32"),
    (["model.connection=dfcx3"], ShapeError, "frac-rate m=3 must divide model.hidden=32"),
    (["model.connection=dhcx0"], ConfigError, "model.connection"),
    (["train.seq_len=64"], ShapeError, "train.seq_len=64 .* model.context=32"),
])
def test_bad_input_fails_before_writing(tmp_path, over, err, frag):
    m = str(tmp_path / "nowhere" / "tokens.bin")
    with pytest.raises(err, match=frag.format(m=m)):
        train(_cfg(*[o.format(m=m) for o in over]), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_vit_trains_on_synthetic_images(tmp_path):
    m = train(load_config(Cfg, ROOT / "configs" / "smoke_vit.yaml"), tmp_path)
    assert 0.0 <= m["val_top1"] <= 1.0 and m["test_top1"] >= 0.0


def test_load_run_reads_the_runs_own_config(tmp_path):
    train(_cfg("model.connection=dfcx2", "model.depth=1", "train.steps=2"), tmp_path)
    run = load_run(tmp_path)
    assert run.cfg.model.connection == "dfcx2" and run.cfg.model.depth == 1 and run.step == 2
    assert len(run.model.trunk.blocks) == 1 and not run.model.training
    assert load_run(tmp_path, ["eval.max_tokens=64"]).cfg.eval.max_tokens == 64
    with pytest.raises(CheckpointMismatch, match="model.depth"):
        load_run(tmp_path, ["model.depth=2"])
    with pytest.raises(UserError, match=str(tmp_path / "absent")):
        load_run(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="config.yaml"):
        load_run(tmp_path / "empty")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text((tmp_path / "config.yaml").read_text())
    with pytest.raises(CheckpointError, match=str(bare / "ckpt")):
        load_run(bare)


def test_cli_train_then_evaluate_sample_analyze_by_run_without_config(tmp_path, capsys):
    from hyperfrac.cli import main
    run = tmp_path / "r"
    assert main(["train", "model.connection=dfcx2", "--config", str(SMOKE), "train.steps=2",
                 "--out-dir", str(run)]) == 0
    assert main(["evaluate", "--run", str(run)]) == 0
    ev = json.loads((run / "eval.json").read_text())
    assert ev["step"] == 2 and "test_bpt" in ev and "test_bpb" not in ev  # synthetic tokens: no bytes
    assert main(["evaluate", "--run", str(run), "eval.max_tokens=64"]) == 0
    assert json.loads((run / "eval.json").read_text())["test_tokens"] == 64
    assert main(["sample", "--run", str(run), "--tokens", "5"]) == 0 and (run / "sample.txt").is_file()
    assert main(["analyze", "--run", str(run)]) == 0 and (run / "connection_matrix.png").is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--run", str(run), "model.connection=dhcx2"])
    assert e.value.code == 2 and "model.connection" in capsys.readouterr().err


def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys):
    from hyperfrac.cli import main
    bad = tmp_path / "bad"
    for over in (["model.nonsense=3"], ["data.source=memmap", f"data.train_path={tmp_path / 'x.bin'}"]):
        with pytest.raises(SystemExit) as e:
            main(["train", "--config", str(SMOKE), "--out-dir", str(bad), *over])
        err = capsys.readouterr().err
        assert e.value.code == 2 and not bad.exists()
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(tmp_path / "x.bin") in err
