import json
from pathlib import Path

import pytest

from hyperfrac.config import Cfg
from hyperfrac.train import train
from reprokit.checkpoint import CheckpointMismatch
from reprokit.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def _cfg(*over):
    return load_config(Cfg, ROOT / "configs" / "smoke.yaml", overrides=list(over))


def _losses(path):
    recs = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if r["split"] == "train"}


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


def test_resume_from_other_model_config_is_an_error(tmp_path):
    train(_cfg("train.stop_after=2"), tmp_path)
    with pytest.raises(CheckpointMismatch, match="model.connection"):
        train(_cfg("model.connection=dfcx2"), tmp_path)


def test_vit_trains_on_synthetic_images(tmp_path):
    m = train(_cfg("model.kind=vit", "model.mlp=gelu", "model.pos=learned", "model.norm_affine=true",
                   "model.image_size=8", "model.patch=4", "model.num_classes=4", "data.source=synthetic_images",
                   "data.synthetic_images=128", "data.eval_tokens=0", "train.batch_size=16", "train.steps=6"),
              tmp_path)
    assert 0.0 <= m["val_top1"] <= 1.0 and m["test_top1"] >= 0.0


def test_cli_train_evaluate_sample_analyze_and_bad_config(tmp_path):
    from hyperfrac.cli import main
    cfg = str(ROOT / "configs/smoke.yaml")
    for cmd in ("train", "evaluate", "sample", "analyze"):
        assert main([cmd, "--config", cfg, "--out-dir", str(tmp_path)]) == 0, cmd
    assert (tmp_path / "connection_matrix.png").is_file() and (tmp_path / "sample.txt").is_file()
    bad = tmp_path / "bad"
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", cfg, "--out-dir", str(bad), "model.nonsense=3"])
    assert e.value.code == 2 and not bad.exists()
