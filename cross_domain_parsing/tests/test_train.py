"""Training: smoke train, exact resume, the golden smoke losses, checkpoint fallback, expected failures
changing nothing, load_run reading the run's own config, evaluation and fine-tuning plumbing."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from crossparse.config import Cfg
from crossparse.train import load_run, train
from reprokit.checkpoint import CheckpointError, CheckpointMismatch
from reprokit.config import ConfigError, load_config
from reprokit.errors import DataError
from reprokit.runs import read_jsonl
from reprokit.testing import check_golden

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
GOLDEN = Path(__file__).parent / "golden" / "smoke_loss.json"


def _cfg(*ov):
    return load_config(Cfg, str(SMOKE), ["train.log_every=1", "train.steps=4", "train.ckpt_every=0",
                                         "train.eval_every=0", *ov])


def _losses(run, key="loss"):
    return [r[key] for r in read_jsonl(Path(run) / "metrics.jsonl") if r.get("split") == "train" and key in r]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_smoke_train_returns_final_metrics(tmp_path):
    res = train(_cfg("train.steps=2", "train.eval_every=1"), tmp_path)
    json.dumps(res)
    assert res["step"] == 2 and res["world_size"] == 1 and "ref_loss" in res and "c_loss" in res
    assert (tmp_path / "ckpt" / "step_00000002").is_dir()
    ev = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["split"] == "eval"]
    assert [r["step"] for r in ev] == [1, 2] and {"source_val", "indoor_val", "outdoor_test"} <= set(ev[0])


def test_resume_is_exact(tmp_path):
    """4 steps straight == 2 steps + resume + 2 steps: every logged loss and every weight."""
    ov = ["train.ckpt_every=2", "adapt.label_every=1"]
    train(_cfg(*ov), tmp_path / "straight")
    train(_cfg(*ov), tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "ckpt" / "step_00000004")
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()[:2]
    (tmp_path / "resumed" / "metrics.jsonl").write_text("".join(x + "\n" for x in lines))
    train(_cfg(*ov), tmp_path / "resumed")
    for key in ("loss", "c_loss", "df_loss", "adv_loss", "dl_loss", "ref_loss"):
        assert _losses(tmp_path / "straight", key) == _losses(tmp_path / "resumed", key), key
    a, b = load_run(tmp_path / "straight"), load_run(tmp_path / "resumed")
    for (k, x), y in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(x, y), k


def test_golden_smoke_losses():
    """configs/smoke.yaml, one process, a loss every step (regenerate with REPROKIT_UPDATE_GOLDEN=1)."""
    with tempfile.TemporaryDirectory() as d:
        cfg = load_config(Cfg, str(SMOKE), ["train.log_every=1"])
        train(cfg, d)
        losses = _losses(d)
    assert len(losses) == cfg.train.steps
    check_golden(GOLDEN, losses, note="crossparse train --config configs/smoke.yaml train.log_every=1 (one process, "
                                      "CPU): the parsing loss 'loss' of metrics.jsonl at every step")


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
    with pytest.raises(CheckpointMismatch, match="model.width_mult"):
        train(_cfg("model.width_mult=0.125"), tmp_path)
    with pytest.raises(CheckpointMismatch, match="adapt.label"):
        train(_cfg("adapt.label=false"), tmp_path)
    with pytest.raises(DataError, match=str(tmp_path / "missing")):
        train(_cfg("data.source=lip", f"data.path={tmp_path / 'missing'}"), tmp_path)
    with pytest.raises(DataError, match="trunk"):
        train(_cfg(f"model.trunk_checkpoint={tmp_path / 'vgg.pth'}"), tmp_path / "other")
    assert _snapshot(tmp_path) == before and not (tmp_path / "other").exists()
    ck = tmp_path / "ckpt" / "step_00000002" / "optim.pt"
    ck.write_bytes(ck.read_bytes()[:-10])
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="optim.pt"):
        train(_cfg(), tmp_path)
    assert _snapshot(tmp_path) == before


def test_trunk_checkpoint_loads_a_local_timm_state_dict(tmp_path):
    from crossparse.model import Parser, timm_vgg16_features

    cfg = _cfg()
    torch.manual_seed(1)
    feats = timm_vgg16_features(cfg.model.width_mult)
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, tmp_path / "vgg.pth")
    p = Parser(load_config(Cfg, str(SMOKE), [f"model.trunk_checkpoint={tmp_path / 'vgg.pth'}"]))
    convs = [m for m in [*p.p1, *p.p2] if isinstance(m, torch.nn.Conv2d)]
    assert torch.equal(convs[0].weight, feats[0].weight) and torch.equal(convs[-1].bias, feats[28].bias)


def test_load_run_evaluate_and_finetune(tmp_path):
    from crossparse.data import load_data
    from crossparse.evaluate import evaluate_all, save_overlays

    train(_cfg("train.steps=2", "adapt.feature=false", "adapt.label=false"), tmp_path / "so")
    run = load_run(tmp_path / "so", ["eval.max_images=8"])
    assert run.step == 2 and not run.parser.training
    data = load_data(run.cfg)
    res = evaluate_all(run.parser, data, run.cfg)
    assert set(res) == {"source_val", "indoor_test", "outdoor_test", "movie_test", "runway_test"}
    assert res["outdoor_test"]["n_classes"] == 11 and 0 <= res["indoor_test"]["miou"] <= 1
    assert len(save_overlays(run.parser, data, run.cfg, tmp_path)) == 4
    with pytest.raises(CheckpointMismatch, match="model.width_mult"):
        load_run(tmp_path / "so", ["model.width_mult=0.5"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_run(tmp_path / "nope")
    ft = ["adapt.feature=false", "adapt.label=false", "adapt.finetune_n=5", "train.steps=1"]
    with pytest.raises(ConfigError, match="init_from"):
        train(_cfg(*ft), tmp_path / "ft0")
    train(_cfg(*ft, f"train.init_from={tmp_path / 'so'}"), tmp_path / "ft")
    assert _losses(tmp_path / "ft")[0] < _losses(tmp_path / "so")[0]


def test_cli_evaluate_reads_the_run(tmp_path):
    from crossparse.cli import main

    train(_cfg("train.steps=1"), tmp_path)
    assert main(["evaluate", "--run", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "eval.json").read_text())
    assert res["step"] == 1 and (tmp_path / "overlay_indoor.png").is_file()


def test_train_and_evaluate_on_lip_style_fixture_files(tmp_path):
    """The real-data path end to end: a LIP-style source root, an unlabelled target folder and a
    labelled target test folder, written here as tiny files."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for root, n in ((tmp_path / "lip", 10), (tmp_path / "tgt_test", 2)):
        (root / "images").mkdir(parents=True)
        (root / "labels").mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (40, 20, 3), dtype=np.uint8)).save(root / "images" / f"{i}.jpg")
            Image.fromarray(rng.integers(0, 20, (40, 20), dtype=np.uint8)).save(root / "labels" / f"{i}.png")
    (tmp_path / "tgt").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(tmp_path / "tgt" / f"t{i}.png")
    ov = ["data.source=lip", f"data.path={tmp_path / 'lip'}", f"data.target_path={tmp_path / 'tgt'}",
          f"data.target_test_path={tmp_path / 'tgt_test'}", "train.steps=2", "train.eval_every=1"]
    res = train(_cfg(*ov), tmp_path / "run")
    assert res["step"] == 2
    ev = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["split"] == "eval"]
    assert {"source_val", "target_val", "target_test"} <= set(ev[0])
    (tmp_path / "tgt" / "t0.png").unlink()
    (tmp_path / "tgt" / "t1.png").unlink()
    (tmp_path / "tgt" / "t2.png").unlink()
    with pytest.raises(DataError, match="no images"):
        train(_cfg(*ov), tmp_path / "run2")
    assert not (tmp_path / "run2").exists()
