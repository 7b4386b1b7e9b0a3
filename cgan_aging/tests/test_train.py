"""Training: smoke train, exact resume, the golden smoke losses, checkpoint fallback, expected
failures changing nothing, load_run reading the run's own config, evaluation and CLI plumbing."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from cgan_aging.config import Cfg
from cgan_aging.train import load_run, train
from reprokit.checkpoint import CheckpointError, CheckpointMismatch
from reprokit.config import ConfigError, load_config
from reprokit.errors import DataError
from reprokit.runs import read_jsonl
from reprokit.testing import check_golden

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
GOLDEN = Path(__file__).parent / "golden" / "smoke_loss.json"
FAST_EVAL = ["eval.max_images=8", "eval.evaluator_train=64", "eval.evaluator_epochs=1", "eval.verif_people=8",
             "eval.verif_epochs=1"]


def _cfg(*ov):
    return load_config(Cfg, str(SMOKE), ["train.log_every=1", "train.steps=4", "train.ckpt_every=0", *ov])


def _losses(run, key="loss"):
    return [r[key] for r in read_jsonl(Path(run) / "metrics.jsonl") if r.get("split") == "train"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_smoke_train_returns_final_metrics(tmp_path):
    res = train(_cfg("train.steps=2"), tmp_path)
    json.dumps(res)
    assert res["step"] == 2 and res["world_size"] == 1 and "d_trans" in res and "g_trans" in res
    assert res["n_pairs"] > 0 and (tmp_path / "ckpt" / "step_00000002").is_dir()
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]


@pytest.mark.parametrize("arm", [["gan.lambda_t=0.0"], ["gan.lambda_t=1.0"],
                                 ["gan.loss=wgan-gp", "gan.lambda_id=1.0", "model.age_cin=false",
                                  "model.d_cond=concat", "gan.lambda_cls=0.0"]])
def test_resume_is_exact(tmp_path, arm):
    """4 steps straight == 2 steps + resume + 2 steps: every logged loss and every weight."""
    ov = [*arm, "train.ckpt_every=2"]
    train(_cfg(*ov), tmp_path / "straight")
    train(_cfg(*ov), tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "ckpt" / "step_00000004")
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()[:2]
    (tmp_path / "resumed" / "metrics.jsonl").write_text("".join(x + "\n" for x in lines))
    train(_cfg(*ov), tmp_path / "resumed")
    for key in ("loss", "d_loss", "d_age"):
        assert _losses(tmp_path / "straight", key) == _losses(tmp_path / "resumed", key)
    a, b = load_run(tmp_path / "straight"), load_run(tmp_path / "resumed")
    for (k, x), y in zip(a.G.state_dict().items(), b.G.state_dict().values()):
        assert torch.equal(x, y), k


def test_golden_smoke_losses():
    """configs/smoke.yaml, one process, a loss every step (regenerate with REPROKIT_UPDATE_GOLDEN=1)."""
    with tempfile.TemporaryDirectory() as d:
        cfg = load_config(Cfg, str(SMOKE), ["train.log_every=1"])
        train(cfg, d)
        losses = _losses(d)
    assert len(losses) == cfg.train.steps
    check_golden(GOLDEN, losses, note="cgan-aging train --config configs/smoke.yaml train.log_every=1 (one process, "
                                      "CPU): the generator loss 'loss' of metrics.jsonl at every step")


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
        train(_cfg("model.hidden=3"), tmp_path)
    with pytest.raises(DataError, match=str(tmp_path / "missing")):
        train(_cfg("data.source=cacd", "data.groups=five", f"data.path={tmp_path / 'missing'}"), tmp_path)
    assert _snapshot(tmp_path) == before
    ck = tmp_path / "ckpt" / "step_00000002" / "optim.pt"
    ck.write_bytes(ck.read_bytes()[:-10])
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="optim.pt"):
        train(_cfg(), tmp_path)
    assert _snapshot(tmp_path) == before


def test_load_run_and_evaluate(tmp_path):
    from cgan_aging.evaluate import evaluate, validate

    train(_cfg("train.steps=2"), tmp_path)
    run = load_run(tmp_path, FAST_EVAL)
    assert run.step == 2 and not run.G.training
    res = evaluate(run, run.cfg, grid_path=tmp_path / "grid.png", cache_dir=tmp_path / "ev")
    assert (tmp_path / "grid.png").is_file() and res["n_targets"] == 8 * 4
    for k in ("age_acc", "age_mae", "gt_l1", "gt_feat", "param_mae", "monotone_frac", "id_auc", "fid", "kid",
              "verif_auc_aug", "verif_auc_none"):
        assert 0 <= res[k] < 1e6, k
    assert len(res["floors"]) == 4 and len(res["fid_per_group"]) == 5
    val = validate(run, run.cfg, cache_dir=tmp_path / "ev")              # the LR-selection split
    assert val["n_val_inputs"] == run.cfg.data.num_val and 0 < val["val_gt_l1"] < 2 and 0 <= val["val_age_acc"] <= 1
    again = evaluate(run, run.cfg, cache_dir=tmp_path / "ev")            # cached evaluators: identical metrics
    assert again["gt_l1"] == res["gt_l1"] and again["evaluator_sha256"] == res["evaluator_sha256"]
    with pytest.raises(CheckpointMismatch, match="model.hidden"):
        load_run(tmp_path, ["model.hidden=3"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_run(tmp_path / "nope")


def test_cli_sample_and_evaluate_read_the_run(tmp_path):
    from cgan_aging.cli import main

    train(_cfg("train.steps=1"), tmp_path)
    assert main(["sample", "--run", str(tmp_path)]) == 0
    assert (tmp_path / "samples_grid.png").is_file()
    assert main(["evaluate", "--run", str(tmp_path), *FAST_EVAL]) == 0
    res = json.loads((tmp_path / "eval.json").read_text())
    assert res["step"] == 1 and res["n_targets"] == 32
