"""Training loop: exact resume, config mismatch, bad inputs, end-to-end evaluate/sample on the smoke config."""

import json
from pathlib import Path

import pytest
import torch

from racedit.config import Cfg, DataCfg, ModelCfg
from racedit.data import load_data
from racedit.model import DiT
from racedit.train import load_trained, train
from reprokit.checkpoint import CheckpointMismatch
from reprokit.config import ConfigError, load_config
from reprokit.runs import read_jsonl

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def _cfg(*ov):
    # explicit torch path (auto would pick it too on CPU; the interpreter is never chosen implicitly)
    return load_config(Cfg, str(SMOKE), ["train.log_every=1", "train.steps=8", "model.moe.kernel_impl=torch", *ov])


def _losses(run):
    return [r["total_loss"] for r in read_jsonl(Path(run) / "metrics.jsonl") if r.get("split") == "train"]


@pytest.mark.parametrize("routing", ["race", "tc"])
def test_resume_is_exact(tmp_path, routing):
    ov = [f"model.moe.routing={routing}"]
    train(_cfg(*ov), tmp_path / "straight")
    train(_cfg(*ov, "train.steps=4"), tmp_path / "resumed")
    res = train(_cfg(*ov), tmp_path / "resumed")
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "resumed")
    m1, _, _ = load_trained(_cfg(*ov), tmp_path / "straight")
    for (k, a), b in zip(m1.state_dict().items(), res["ema"].state_dict().values()):
        assert torch.equal(a, b), k


def test_checkpoint_from_another_config_is_a_clear_error(tmp_path):
    train(_cfg("train.steps=2"), tmp_path)
    with pytest.raises(CheckpointMismatch, match="num_experts"):
        train(_cfg("train.steps=4", "model.moe.num_experts=8"), tmp_path)
    with pytest.raises(CheckpointMismatch):
        load_trained(_cfg("model.hidden=48"), tmp_path)


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="patch size 5 does not divide the image size 16"):
        DiT(ModelCfg(image_size=16, patch=5))
    with pytest.raises(ConfigError, match="routing"):
        load_config(Cfg, str(SMOKE), ["model.moe.routing=switch"])
    with pytest.raises(ConfigError, match="gating"):
        load_config(Cfg, str(SMOKE), ["model.moe.gating=relu"])
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "cls" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="holds no images"):
        load_data(DataCfg(source="folder", path=str(tmp_path / "empty")), "train")
    with pytest.raises(FileNotFoundError, match="no latent shards"):
        load_data(DataCfg(source="latents", path=str(tmp_path)), "train")
    with pytest.raises(ValueError, match="k=5 > num_experts E=4"):
        train(_cfg("model.moe.top_k=5"), tmp_path / "k")


def test_image_folder_and_latent_shards(tmp_path):
    import numpy as np
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray((np.random.rand(20, 20) * 255).astype("uint8")).save(tmp_path / "imgs" / c / f"{i}.png")
    d = load_data(DataCfg(source="folder", path=str(tmp_path / "imgs")), "train", channels=1, image_size=16)
    assert d.images.shape == (6, 1, 16, 16) and d.num_classes == 2 and d.images.min() >= -1
    np.savez(tmp_path / "s0.npz", latents=np.zeros((4, 4, 8, 8), "float32"), labels=np.arange(4))
    d = load_data(DataCfg(source="latents", path=str(tmp_path)), "train")
    assert d.images.shape == (4, 4, 8, 8) and d.num_classes == 4


def test_cli_train_evaluate_sample(tmp_path):
    from racedit.cli import main

    run = tmp_path / "run"
    assert main(["train", "--config", str(SMOKE), "--out-dir", str(run), "train.steps=6",
                 "model.moe.kernel_impl=torch"]) == 0
    assert main(["evaluate", "--out-dir", str(run)]) == 0
    ev = json.loads((run / "eval.json").read_text())
    assert ev["heldout_loss"] > 0 and "experts_per_token_by_t" in ev
    assert main(["sample", "--out-dir", str(run)]) == 0
    assert len(list((run / "samples").glob("class_*.png"))) == 4
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(SMOKE), "--out-dir", str(tmp_path / "bad"), "model.nope=1"])
    assert e.value.code == 2 and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("kind", ["flow", "ddpm"])
def test_both_objectives_train_and_sample(tmp_path, kind):
    from racedit.evaluate import generate

    cfg = _cfg(f"diffusion.kind={kind}", "train.steps=3")
    res = train(cfg, tmp_path)
    x, y, per_step = generate(res["ema"], res["diffusion"], cfg, 2, 4, seed=0, steps=3)
    assert x.shape == (8, 1, 16, 16) and torch.isfinite(x).all() and len(per_step) == 3
