"""Training: smoke train, exact resume, the golden smoke losses, checkpoint fallback, expected
failures changing nothing, load_run reading the run's own config, evaluation plumbing."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from reprokit.checkpoint import CheckpointError, CheckpointMismatch
from reprokit.config import ConfigError, load_config
from reprokit.errors import DataError
from reprokit.runs import read_jsonl
from reprokit.testing import check_golden
from ugan.config import Cfg
from ugan.train import load_run, train

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
GOLDEN = Path(__file__).parent / "golden" / "smoke_loss.json"


def _cfg(*ov):
    return load_config(Cfg, str(SMOKE), ["train.log_every=1", "train.steps=4", "train.ckpt_every=0", *ov])


def _losses(run, key="loss"):
    return [r[key] for r in read_jsonl(Path(run) / "metrics.jsonl") if r.get("split") == "train"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_smoke_train_returns_final_metrics(tmp_path):
    res = train(_cfg("train.steps=2"), tmp_path)
    json.dumps(res)
    assert res["step"] == 2 and res["world_size"] == 1 and "d_loss" in res and "g_trace" in res
    assert (tmp_path / "ckpt" / "step_00000002").is_dir()
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]


@pytest.mark.parametrize("arm", [["ugan.prototype=none"], ["ugan.prototype=pixel"],
                                 ["ugan.prototype=feature", "ugan.g_variant=confusion"]])
def test_resume_is_exact(tmp_path, arm):
    """4 steps straight == 2 steps + resume + 2 steps: every logged loss and every weight."""
    ov = [*arm, "train.ckpt_every=2"]
    train(_cfg(*ov), tmp_path / "straight")
    train(_cfg(*ov), tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "ckpt" / "step_00000004")
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()[:2]
    (tmp_path / "resumed" / "metrics.jsonl").write_text("".join(x + "\n" for x in lines))
    train(_cfg(*ov), tmp_path / "resumed")
    for key in ("loss", "d_loss", "g_rec"):
        assert _losses(tmp_path / "straight", key) == _losses(tmp_path / "resumed", key)
    a, b = load_run(tmp_path / "straight"), load_run(tmp_path / "resumed")
    for (k, x), y in zip(a.G.state_dict().items(), b.G.state_dict().values()):
        assert torch.equal(x, y), k
    for (k, x), y in zip(a.protos.state_dict().items(), b.protos.state_dict().values()):
        assert torch.equal(x, y), k


def test_golden_smoke_losses():
    """configs/smoke.yaml, one process, a loss every step (regenerate with REPROKIT_UPDATE_GOLDEN=1)."""
    with tempfile.TemporaryDirectory() as d:
        cfg = load_config(Cfg, str(SMOKE), ["train.log_every=1"])
        train(cfg, d)
        losses = _losses(d)
    assert len(losses) == cfg.train.steps
    check_golden(GOLDEN, losses, note="ugan train --config configs/smoke.yaml train.log_every=1 (one process, CPU): "
                                      "the generator loss 'loss' of metrics.jsonl at every step")


def test_corrupt_newest_checkpoint_falls_back(tmp_path, capfd):
    cfg = _cfg("train.ckpt_every=2", "train.keep_last=2")
    train(cfg, tmp_path)
    ref = _losses(tmp_path)
    f = tmp_path / "ckpt" / "step_00000004" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    train(cfg, tmp_path)
    assert "step_00000004" in capfd.readouterr().err
    assert _losses(tmp_path) == [*ref, *ref[2:]]


def test_expected_failures_change_nothing_saved(tmp_path):
    train(_cfg("train.steps=2"), tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointMismatch, match="model.hidden"):
        train(_cfg("model.hidden=4"), tmp_path)
    with pytest.raises(CheckpointMismatch, match="ugan.prototype"):
        train(_cfg("ugan.prototype=pixel"), tmp_path)
    with pytest.raises(DataError, match=str(tmp_path / "missing")):
        train(_cfg("data.source=folder", f"data.path={tmp_path / 'missing'}"), tmp_path)
    assert _snapshot(tmp_path) == before
    ck = tmp_path / "ckpt" / "step_00000002" / "optim.pt"
    ck.write_bytes(ck.read_bytes()[:-10])
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="optim.pt"):
        train(_cfg(), tmp_path)
    assert _snapshot(tmp_path) == before


def test_load_run_and_evaluate(tmp_path):
    from ugan.evaluate import evaluate

    train(_cfg("train.steps=2", "ugan.prototype=pixel"), tmp_path)
    run = load_run(tmp_path, ["eval.max_images=16", "eval.evaluator_train=64", "eval.evaluator_epochs=1",
                              "eval.tracer_epochs=1"])
    assert run.step == 2 and run.cfg.ugan.prototype == "pixel" and not run.G.training
    assert run.protos.pixel.abs().sum() > 0                          # prototypes travel with the checkpoint
    res = evaluate(run, run.cfg, grid_path=tmp_path / "grid.png")
    assert (tmp_path / "grid.png").is_file() and res["n_translations"] == 16 * 3
    for k in ("tracer_acc", "target_acc", "cf_l1", "cycle_l1", "fid", "kid"):
        assert 0 <= res[k] < 1e6, k
    assert res["tracer_chance"] == pytest.approx(1 / 3)
    with pytest.raises(CheckpointMismatch, match="model.hidden"):
        load_run(tmp_path, ["model.hidden=4"])
    # inference-only: the same checkpoint under the other IN inference mode; and a checkpoint whose saved
    # config predates the key (runs written before model.eval_norm existed) still loads
    assert load_run(tmp_path, ["model.eval_norm=running"]).G.in_in.eval_stats == "running"
    from reprokit.checkpoint import check_config_compatible
    from ugan.train import CHECK_KEYS, INFERENCE_ONLY
    check_config_compatible({"model": {"hidden": 4}}, {"model": {"eval_norm": "running", "hidden": 4}},
                            keys=CHECK_KEYS, ignore=INFERENCE_ONLY)
    with pytest.raises(ConfigError, match="does not exist"):
        load_run(tmp_path / "nope")


def test_cli_sample_and_evaluate_read_the_run(tmp_path):
    from ugan.cli import main

    train(_cfg("train.steps=1"), tmp_path)
    assert main(["sample", "--run", str(tmp_path)]) == 0
    assert (tmp_path / "samples_grid.png").is_file()
    assert main(["evaluate", "--run", str(tmp_path), "eval.max_images=8", "eval.evaluator_train=64",
                 "eval.evaluator_epochs=1", "eval.tracer_epochs=1"]) == 0
    res = json.loads((tmp_path / "eval.json").read_text())
    assert res["step"] == 1 and res["n_translations"] == 24
    # the LR-selection metrics on the validation identities, as reproduce records them (so a probe is one command)
    assert {"val_cf_l1", "val_target_acc", "n_val_sources"} <= set(res)
