"""Training: the smoke run, exact resume, the golden smoke losses, checkpoint fallback and mismatch,
nothing written on an expected failure, and load_run reading the run's own config."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from racedit.config import Cfg
from racedit.evaluate import generate
from racedit.train import load_run, train
from reprokit.checkpoint import CheckpointError, CheckpointMismatch
from reprokit.config import ConfigError, load_config
from reprokit.errors import DataError
from reprokit.runs import read_jsonl
from reprokit.testing import check_golden

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
GOLDEN = Path(__file__).parent / "golden" / "smoke_loss.json"


def _cfg(*ov):
    # explicit torch path (auto would pick it too on CPU; the interpreter is never chosen implicitly)
    return load_config(Cfg, str(SMOKE), ["train.log_every=1", "train.steps=8", "model.impl=torch", *ov])


def _losses(run, key="loss"):
    return [r[key] for r in read_jsonl(Path(run) / "metrics.jsonl") if r.get("split") == "train"]


def _steps(run):
    return [r["step"] for r in read_jsonl(Path(run) / "metrics.jsonl") if r.get("split") == "train"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_smoke_train_returns_final_metrics(tmp_path):
    res = train(_cfg("train.steps=3"), tmp_path)
    json.dumps(res)  # JSON-able, no live objects
    assert res["step"] == 3 and res["world_size"] == 1 and res["loss"] > 0 and "train_seconds" in res
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "ckpt" / "step_00000003").is_dir()
    logged = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in logged if r["split"] == "train"] == [1, 2, 3]
    # smoke.yaml: validation every 10 steps and at the last one, on the last eval.val_n held-out images
    val = [r for r in logged if r["split"] == "val"]
    assert [r["step"] for r in val] == [3] and val[0]["val_loss"] > 0


def test_eval_every_needs_validation_images(tmp_path):
    from reprokit.config import ConfigError

    with pytest.raises(ConfigError, match="eval.val_n"):
        train(_cfg("train.steps=2", "eval.val_n=0"), tmp_path)
    assert not (tmp_path / "config.yaml").exists()     # nothing written before the check


@pytest.mark.parametrize("routing", ["race", "tc"])
def test_resume_is_exact(tmp_path, routing):
    """8 steps straight == 4 steps + resume + 4 steps (same config, so the same LR schedule: the run is
    cut after its step-4 checkpoint by deleting everything later): losses, metric lines and weights."""
    ov = [f"model.moe.routing={routing}", "train.schedule=cosine", "train.ckpt_every=4"]
    train(_cfg(*ov), tmp_path / "straight")
    train(_cfg(*ov), tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "ckpt" / "step_00000008")   # as if killed after step 4's save
    (tmp_path / "resumed" / "metrics.jsonl").write_text(
        "".join(line + "\n" for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()[:4]))
    train(_cfg(*ov), tmp_path / "resumed")                             # resumes at step 4
    assert _steps(tmp_path / "resumed") == list(range(1, 9))
    for key in ("loss", "total_loss", "grad_norm"):
        assert _losses(tmp_path / "straight", key) == _losses(tmp_path / "resumed", key)
    a, b = load_run(tmp_path / "straight"), load_run(tmp_path / "resumed")
    for (k, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), k


def test_golden_smoke_losses():
    """configs/smoke.yaml, one process, a loss every step, against tests/golden/smoke_loss.json
    (regenerate on purpose with REPROKIT_UPDATE_GOLDEN=1)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        cfg = load_config(Cfg, str(SMOKE), ["train.log_every=1"])
        train(cfg, d)
        losses = _losses(d)
    assert len(losses) == cfg.train.steps
    check_golden(GOLDEN, losses, note="racedit train --config configs/smoke.yaml train.log_every=1 (one process, "
                                      "CPU): the 'loss' of metrics.jsonl at every step")


def test_corrupt_newest_checkpoint_falls_back_with_identical_losses(tmp_path, capfd):
    cfg = _cfg("train.ckpt_every=2", "train.keep_last=2")
    train(cfg, tmp_path / "a")
    ref = _losses(tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a" / "ckpt").iterdir()) == ["step_00000006", "step_00000008"]
    newest = tmp_path / "a" / "ckpt" / "step_00000008" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])                  # truncated
    train(cfg, tmp_path / "a")                                     # resumes from step 6, redoes 7-8
    assert "skipping checkpoint step_00000008" in capfd.readouterr().err
    assert _steps(tmp_path / "a") == [*range(1, 9), 7, 8]           # metrics.jsonl is appended to
    assert _losses(tmp_path / "a") == [*ref, *ref[6:]]


def test_expected_failures_change_nothing_saved(tmp_path):
    train(_cfg("train.steps=2"), tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointMismatch, match="num_experts"):
        train(_cfg("train.steps=4", "model.moe.num_experts=8"), tmp_path)
    with pytest.raises(DataError, match=str(tmp_path / "missing")):
        train(_cfg("train.steps=4", "data.source=folder", f"data.path={tmp_path / 'missing'}"), tmp_path)
    with pytest.raises(ConfigError, match="k=5 > num_experts E=4"):
        train(_cfg("model.moe.top_k=5"), tmp_path)
    assert _snapshot(tmp_path) == before
    ck = tmp_path / "ckpt" / "step_00000002" / "optim.pt"
    ck.write_bytes(ck.read_bytes()[:-10])                          # the only checkpoint, truncated
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="optim.pt"):
        train(_cfg("train.steps=4"), tmp_path)
    assert _snapshot(tmp_path) == before


def test_load_run_reads_the_runs_own_config(tmp_path):
    train(_cfg("train.steps=2", "model.hidden=48", "model.heads=4", "model.moe.routing=tc"), tmp_path)
    run = load_run(tmp_path)
    assert run.step == 2 and run.path == tmp_path
    assert run.cfg.model.hidden == 48 and run.cfg.model.moe.routing == "tc" and run.model.d == 48
    assert not run.model.training
    ev = load_run(tmp_path, ["eval.use_ema=false", "diffusion.sample_steps=2"])
    assert ev.cfg.diffusion.sample_steps == 2
    with pytest.raises(CheckpointMismatch, match="model.hidden"):
        load_run(tmp_path, ["model.hidden=32"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="config.yaml"):
        load_run(tmp_path / "empty")
    shutil.copy(tmp_path / "config.yaml", tmp_path / "empty" / "config.yaml")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_run(tmp_path / "empty")


@pytest.mark.parametrize("kind", ["flow", "ddpm"])
def test_both_objectives_train_and_sample(tmp_path, kind):
    train(_cfg(f"diffusion.kind={kind}", "train.steps=3"), tmp_path)
    run = load_run(tmp_path)
    x, y, per_step = generate(run.model, run.diffusion, run.cfg, 2, 4, seed=0, steps=3)
    assert x.shape == (8, 1, 16, 16) and torch.isfinite(x).all() and len(per_step) == 3
