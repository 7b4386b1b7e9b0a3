"""Data construction (user token files, keyed batches) and the honesty of the LM bit metrics."""

from pathlib import Path

import numpy as np
import pytest
import torch

from hyperfrac.config import Cfg
from hyperfrac.data import LMData, image_batch, lm_batch, load_image_data, make_data
from hyperfrac.evaluate import evaluate_lm
from hyperfrac.model import build_model
from reprokit.config import ConfigError, load_config
from reprokit.errors import DataError

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def _memmap_cfg(tmp_path, *over, n=4000, vocab=32, npy=False):
    toks = (np.arange(n) * 7 % vocab).astype(np.uint16)
    paths = {}
    for split in ("train", "val"):
        p = tmp_path / f"{split}.{'npy' if npy else 'bin'}"
        np.save(p, toks) if npy else toks.tofile(p)
        paths[split] = p
    return load_config(Cfg, SMOKE, overrides=["data.source=memmap", f"data.train_path={paths['train']}",
                                              f"data.val_path={paths['val']}", *over])


@pytest.mark.parametrize("npy", [False, True])
def test_memmap_source_reads_raw_and_npy_files(tmp_path, npy):
    cfg = _memmap_cfg(tmp_path, npy=npy)
    data = make_data(cfg)
    assert len(data.train) == 4000 and int(data.train[3]) == 21  # test_path empty: the val file is the test split
    assert np.array_equal(np.asarray(data.test[:10]), np.asarray(data.val[:10]))


def test_memmap_metrics_are_bits_per_token_not_per_byte(tmp_path):
    cfg = _memmap_cfg(tmp_path, "eval.max_tokens=256")
    data = make_data(cfg)
    assert data.n_bytes(np.arange(5)) is None
    m = evaluate_lm(build_model(cfg.model), cfg, data, "val")
    assert "bpb" not in m and m["bpt"] == pytest.approx(m["loss"] / np.log(2))


def test_text_with_a_decoder_reports_bits_per_byte():
    cfg = load_config(Cfg, SMOKE, overrides=["eval.max_tokens=128"])
    toks = (np.arange(2000) % 32).astype(np.int64)
    data = LMData(32, toks, toks, toks, decode=lambda ids: "".join("é" if i == 0 else "a" for i in ids))
    m = evaluate_lm(build_model(cfg.model), cfg, data, "val")
    n_bytes = sum(2 if i == 0 else 1 for i in toks[1:129])
    assert m["bpb"] == pytest.approx(m["loss"] * m["tokens"] / (np.log(2) * n_bytes))
    assert m["bpt"] == pytest.approx(m["loss"] / np.log(2))


def test_missing_token_file_names_the_key_and_the_path(tmp_path):
    cfg = _memmap_cfg(tmp_path)
    cfg.data.val_path = str(tmp_path / "gone.bin")
    with pytest.raises(DataError, match=f"data.val_path: token file '{tmp_path / 'gone.bin'}' does not exist"):
        make_data(cfg)
    cfg.data.val_path, cfg.data.train_path = str(tmp_path / "val.bin"), ""
    with pytest.raises(DataError, match="data.train_path"):
        make_data(cfg)


def test_memmap_needs_a_vocabulary_and_ids_inside_it(tmp_path):
    with pytest.raises(ConfigError, match="model.vocab_size"):
        make_data(_memmap_cfg(tmp_path, "model.vocab_size=0"))
    with pytest.raises(DataError, match="token id 31 >= model.vocab_size=16"):
        make_data(_memmap_cfg(tmp_path, "model.vocab_size=16"))
    with pytest.raises(DataError, match="fewer than one window"):
        make_data(_memmap_cfg(tmp_path, n=20))


def test_source_must_fit_the_model_kind():
    with pytest.raises(ConfigError, match="data.source='fashion_mnist' is not a text source"):
        make_data(load_config(Cfg, SMOKE, overrides=["data.source=fashion_mnist"]))


def test_batches_are_keyed_by_seed_rank_step():
    toks = np.arange(1000)
    a = lm_batch(toks, 8, 4, 0, 0, 5)[0]
    assert torch.equal(a, lm_batch(toks, 8, 4, 0, 0, 5)[0])
    for other in (lm_batch(toks, 8, 4, 1, 0, 5), lm_batch(toks, 8, 4, 0, 1, 5), lm_batch(toks, 8, 4, 0, 0, 6)):
        assert not torch.equal(a, other[0])
    x, y = lm_batch(toks, 8, 4, 0, 0, 5)
    assert torch.equal(x[:, 1:], y[:, :-1])
    cfg = load_config(Cfg, SMOKE.with_name("smoke_vit.yaml"))
    imgs = load_image_data(cfg)
    assert torch.equal(image_batch(imgs, 4, 0, 0, 3)[1], image_batch(imgs, 4, 0, 0, 3)[1])
