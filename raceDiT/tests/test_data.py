"""Data construction: ImageFolder and latent shards, DataError / ShapeError naming the culprit, and the
keyed batch order."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from racedit.config import Cfg, DataCfg
from racedit.data import batch_indices, load_data, load_split
from reprokit.config import load_config
from reprokit.errors import DataError, ShapeError

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def test_image_folder_and_latent_shards(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray((np.random.rand(20, 20) * 255).astype("uint8")).save(tmp_path / "imgs" / c / f"{i}.png")
    d = load_data(DataCfg(source="folder", path=str(tmp_path / "imgs")), "train", channels=1, image_size=16)
    assert d.images.shape == (6, 1, 16, 16) and d.num_classes == 2 and d.images.min() >= -1
    np.savez(tmp_path / "s0.npz", latents=np.zeros((4, 4, 8, 8), "float32"), labels=np.arange(4))
    d = load_data(DataCfg(source="latents", path=str(tmp_path)), "train")
    assert d.images.shape == (4, 4, 8, 8) and d.num_classes == 4


def test_missing_or_empty_paths_are_data_errors_naming_path_and_key(tmp_path):
    missing = tmp_path / "does" / "not" / "exist"
    for source in ("folder", "latents"):
        with pytest.raises(DataError, match=rf"data\.path \(data\.source={source}\): {missing}"):
            load_data(DataCfg(source=source, path=str(missing)), "train")
        with pytest.raises(DataError, match=r"data\.path .* is empty"):
            load_data(DataCfg(source=source, path=""), "train")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "cls" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="holds no images"):
        load_data(DataCfg(source="folder", path=str(tmp_path / "empty")), "train")
    with pytest.raises(DataError, match="no latent shards"):
        load_data(DataCfg(source="latents", path=str(tmp_path / "empty")), "train")
    np.savez(tmp_path / "bad.npz", x=np.zeros(3))
    with pytest.raises(DataError, match="bad.npz"):
        load_data(DataCfg(source="latents", path=str(tmp_path)), "train")


def test_data_that_does_not_fit_the_model_is_a_shape_error():
    with pytest.raises(ShapeError, match=r"model\.channels, model\.image_size"):
        load_split(load_config(Cfg, str(SMOKE), ["model.image_size=32"]), "train")
    with pytest.raises(ShapeError, match="model.num_classes=2"):
        load_split(load_config(Cfg, str(SMOKE), ["model.num_classes=2"]), "train")
    with pytest.raises(ShapeError, match="batch_size=600"):
        batch_indices(512, 600, 0, seed=0)


def test_batch_order_is_keyed_by_seed_and_epoch():
    n, b = 64, 16
    epoch0 = torch.cat([batch_indices(n, b, s, seed=3) for s in range(4)])
    assert sorted(epoch0.tolist()) == list(range(n))                       # a permutation per epoch
    assert torch.equal(batch_indices(n, b, 5, seed=3), batch_indices(n, b, 5, seed=3))
    assert not torch.equal(batch_indices(n, b, 4, seed=3), batch_indices(n, b, 0, seed=3))   # next epoch
    assert not torch.equal(batch_indices(n, b, 0, seed=4), batch_indices(n, b, 0, seed=3))
    halves = [batch_indices(n, b, 7, seed=3, rank=r, world=2) for r in range(2)]
    assert torch.equal(torch.cat(halves), batch_indices(n, b, 7, seed=3))  # ranks split the global batch
