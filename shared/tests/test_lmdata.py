"""reprokit.lmdata: the LM data shared by over_tokenized and ultramem (their own tests cover Brown and text)."""

import numpy as np
import pytest

from reprokit.config import ConfigError
from reprokit.errors import DataError
from reprokit.lmdata import LMDataCfg, eval_bytes, eval_targets, eval_windows, load_lm_data, train_batch


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
    assert eval_bytes(d, "val") is None and eval_bytes(d, "val", 20) is None   # ids without text: no bytes
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


def test_named_corpora_are_pooled_and_bad_names_are_config_errors(monkeypatch, tmp_path):
    import reprokit.datasets as ds
    import reprokit.datasets.text_corpora as tc

    monkeypatch.setenv("REPROKIT_DATA", str(tmp_path))
    words = ["the", "cat", "sat", "on", "a", "mat", "while", "the", "dog", "ran", "far", "and", "the", "bird", "flew", "high", "over", "green", "hills"]
    fake = {"brown": {f"b{i}": " ".join(words[i:] + words[:i]) * 3 for i in range(10)},
            "gcide": {f"g{i}": " ".join(words[::-1][i:]) * 4 for i in range(10)}}
    monkeypatch.setattr(tc, "_CORPORA", {k: (lambda k=k: fake[k]) for k in fake})
    monkeypatch.setattr(ds, "load_corpus", lambda name: fake[name])
    d = load_lm_data(LMDataCfg(source="corpus", corpora=["brown", "gcide"], vocab_size=300), cache_name="t")
    assert d.source == "brown+gcide" and d.vocab_size == 300
    # bits per byte: the whole split's text bytes; a prefix: the bytes of its decoded scored targets
    assert eval_bytes(d, "train") == d.n_bytes["train"] and eval_bytes(d, "train", 10 ** 9) == d.n_bytes["train"]
    ids = d.split("train")[:41].tolist()
    want = len(d.decode(ids[1:]).encode("utf-8"))
    assert eval_bytes(d, "train", 41) == want and 0 < want < d.n_bytes["train"]
    assert eval_bytes(d, "train", 81) > want                 # grows with the prefix
    n_docs = sum(int(d.starts[s].sum()) for s in ("train", "val", "test"))
    assert n_docs == 20                                   # every document of both corpora, each in one split
    for bad in ([], ["brown", "nope"], ["brown", "brown"]):
        with pytest.raises(ConfigError, match="data.corpora"):
            load_lm_data(LMDataCfg(source="corpus", corpora=bad))
