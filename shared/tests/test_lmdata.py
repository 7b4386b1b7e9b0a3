"""reprokit.lmdata: the LM data shared by over_tokenized and ultramem (their own tests cover Brown and text)."""

import numpy as np
import pytest

from reprokit.config import ConfigError
from reprokit.errors import DataError
from reprokit.lmdata import LMDataCfg, eval_targets, eval_windows, load_lm_data, train_batch


def test_synthetic_documents_batches_and_windows():
    d = load_lm_data(LMDataCfg(source="synthetic", synthetic_tokens=2000, synthetic_doc_len=50), vocab_size=16)
    assert set(d.tokens) == {"train", "val", "test"} and d.n_bytes is None
    assert d.starts["train"][::50].all() and d.starts["train"].sum() == len(d.tokens["train"]) // 50 + (
        len(d.tokens["train"]) % 50 > 0)
    x, y, st = train_batch(d, 16, 4, seed=0, rank=0, step=3)
    x2, _, _ = train_batch(d, 16, 4, seed=0, rank=0, step=3)
    assert x.shape == y.shape == st.shape == (4, 16) and (x == x2).all() and (x[:, 1:] == y[:, :-1]).all()
    n = 0
    for _x, yb, _ in eval_windows(d, "val", 16, 3):
        n += yb.numel()
    assert n == eval_targets(d, "val")  # every target once
    with pytest.raises(ConfigError, match="model.vocab_size"):
        load_lm_data(LMDataCfg(source="synthetic"), vocab_size=0)


def test_memmap_errors_and_eos_documents(tmp_path):
    with pytest.raises(DataError, match="data.path"):
        load_lm_data(LMDataCfg(source="memmap", path=str(tmp_path / "absent")), vocab_size=10)
    ids = np.array([1, 2, 0, 3, 4, 0, 5], dtype=np.uint16)
    ids.tofile(tmp_path / "train.bin")
    with pytest.raises(DataError, match="val.bin"):
        load_lm_data(LMDataCfg(source="memmap", path=str(tmp_path), eos_id=0), vocab_size=10)
    ids.tofile(tmp_path / "val.bin")
    d = load_lm_data(LMDataCfg(source="memmap", path=str(tmp_path), eos_id=0), vocab_size=10)
    assert d.starts["train"].tolist() == [1, 0, 0, 1, 0, 0, 1] and "test" not in d.tokens
    (tmp_path / "val.bin").write_bytes(b"\x01")
    with pytest.raises(DataError, match="not a whole"):
        load_lm_data(LMDataCfg(source="memmap", path=str(tmp_path)), vocab_size=10)
