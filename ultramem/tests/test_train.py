"""Smoke training: golden losses, exact resume (every arm), evaluate --run, value-LR schedule, bad input."""

import json
from pathlib import Path

import pytest

from reprokit.checkpoint import CheckpointMismatch, load_checkpoint
from reprokit.testing import check_golden
from ultramem.train import load_run, make_optimizer, train, value_lr_mult

GOLDEN = Path(__file__).parent / "golden" / "smoke_loss.json"


def _losses(run: Path) -> dict[int, float]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {r["step"]: r["loss"] for r in recs if r.get("split") == "train"}


def test_smoke_train_golden_losses(tmp_path, smoke_cfg):
    m = train(smoke_cfg("train.log_every=1"), tmp_path / "run", quiet=True)
    losses = _losses(tmp_path / "run")
    assert sorted(losses) == list(range(1, 9))
    assert m["val_loss"] < 4.3 and "val_bpt" in m and m["params_sparse"] == m["count_sparse_params"]
    check_golden(GOLDEN, [losses[s] for s in sorted(losses)], note="configs/smoke.yaml, train.log_every=1")


@pytest.mark.parametrize("extra", [[], ["model.arch=moe"], ["model.arch=dense"]])
def test_exact_resume(tmp_path, smoke_cfg, extra):
    over = ["train.log_every=1", "train.ckpt_every=2", *extra]
    straight = train(smoke_cfg(*over), tmp_path / "a", quiet=True)
    assert train(smoke_cfg(*over, "train.stop_after=4"), tmp_path / "b", quiet=True) == {"stopped_at": 4}
    assert load_checkpoint(tmp_path / "b" / "ckpt").optimizer["state"]
    resumed = train(smoke_cfg(*over), tmp_path / "b", quiet=True)
    la, lb = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert sorted(la) == sorted(lb) == list(range(1, 9))
    assert la == lb                                       # bit-identical on the CPU
    assert straight["val_loss"] == resumed["val_loss"] and straight["test_loss"] == resumed["test_loss"]


def test_resume_with_another_model_is_refused(tmp_path, smoke_cfg):
    train(smoke_cfg("train.stop_after=2"), tmp_path, quiet=True)
    with pytest.raises(CheckpointMismatch, match="model.mem.topm"):
        train(smoke_cfg("model.mem.topm=3"), tmp_path, quiet=True)


def test_value_lr_group_and_decay(smoke_cfg):
    from ultramem.model import build_model

    cfg = smoke_cfg()
    model = build_model(cfg.model)
    opt = make_optimizer(model, cfg)
    assert [id(p) for p in opt.param_groups[2]["params"]] == [id(p) for p in model.value_parameters()]
    assert opt.param_groups[2]["weight_decay"] == 0.0
    steps = cfg.train.steps
    assert value_lr_mult(0, cfg) == 10.0 and value_lr_mult(steps, cfg) == 1.0
    assert value_lr_mult(steps // 2, cfg) == pytest.approx(1 + 9 * 0.5)
    assert value_lr_mult(steps, smoke_cfg("train.value_lr_decay=false")) == 10.0   # PKM: fixed x10


def test_evaluate_via_run_without_config(tmp_path, smoke_cfg):
    from ultramem.cli import main

    run = tmp_path / "run"
    train(smoke_cfg(), run, quiet=True)
    assert main(["evaluate", "--run", str(run)]) == 0
    res = json.loads((run / "eval.json").read_text())
    assert res["step"] == 8 and res["val_loss"] > 0 and "val_bpb" not in res
    lr = load_run(run, ["eval.max_tokens=256"])
    assert lr.cfg.eval.max_tokens == 256 and lr.step == 8
    with pytest.raises(CheckpointMismatch, match="model.depth"):
        load_run(run, ["model.depth=3"])


def test_missing_text_folder_is_a_data_error(tmp_path, smoke_cfg):
    from reprokit.errors import DataError

    with pytest.raises(DataError, match="no_such"):
        train(smoke_cfg("data.source=text", f"data.path={tmp_path / 'no_such'}"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_train_arm_option_applies_the_plan_keys(monkeypatch, tmp_path):
    """`ultramem train --arm A` trains exactly the small plan's arm A (its keys, then the user's overrides)."""
    import ultramem.train as T
    from reprokit.config import to_dict
    from ultramem import cli
    from ultramem.plan import PKG_DIR, PLANS, job_config, plan_arms

    seen = {}
    monkeypatch.setattr(T, "train", lambda cfg, out, **kw: seen.update(cfg=cfg, out=out) or {"val_loss": 0.0})
    assert cli.main(["train", "--config", str(PKG_DIR / "configs" / "small.yaml"), "--arm", "ultramem",
                     "--out-dir", str(tmp_path), "train.lr=0.002", "train.seed=1"]) == 0
    want = to_dict(job_config(PLANS["small"], plan_arms(PLANS["small"])["ultramem"], 0.002, 1))
    got = to_dict(seen["cfg"])
    assert got["model"] == want["model"] and got["train"] == want["train"]
    assert got["model"]["mem"]["query_conv"] == 5 and got["model"]["mlp_hidden"] < 256
