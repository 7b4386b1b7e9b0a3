"""Data: document starts, keyed batches, evaluation windows, n-gram counts, user memmaps."""

import numpy as np
import pytest

from overtok.data import eval_targets, eval_windows, load_data, ngram_counts, train_batch
from reprokit.errors import DataError


def test_synthetic_documents_and_keyed_batches(smoke_cfg):
    data = load_data(smoke_cfg())
    assert data.starts["train"][::200].all() and data.starts["train"].sum() == -(-len(data.tokens["train"]) // 200)
    a = train_batch(data, 32, 4, seed=0, rank=0, step=5)
    b = train_batch(data, 32, 4, seed=0, rank=0, step=5)
    c = train_batch(data, 32, 4, seed=0, rank=1, step=5)
    assert all((x == y).all() for x, y in zip(a, b)) and not (a[0] == c[0]).all()
    x, y, ds = a
    assert (x[:, 1:] == y[:, :-1]).all() and ds.dtype.is_floating_point is False


def test_eval_windows_score_every_target_once(smoke_cfg):
    data = load_data(smoke_cfg())
    for world in (1, 2):
        n = sum(int(y.numel()) for r in range(world) for _, y, _ in eval_windows(data, "val", 32, 5, 0, r, world))
        assert n == eval_targets(data, "val") == len(data.tokens["val"]) - 1
    n = sum(int(y.numel()) for _, y, _ in eval_windows(data, "val", 32, 5, max_tokens=100))
    assert n == 99


def test_ngram_counts_against_a_set(smoke_cfg):
    data = load_data(smoke_cfg())
    ids, doc = data.tokens["train"], np.cumsum(data.starts["train"])
    pairs = {(int(ids[i]), int(ids[i + 1])) for i in range(len(ids) - 1) if doc[i] == doc[i + 1]}
    assert ngram_counts(data, (2,))[2] == len(pairs)


def test_memmap_source(tmp_path, smoke_cfg):
    for split in ("train", "val"):
        np.array([1, 2, 3, 9, 4, 5, 9] * 50, dtype=np.uint16).tofile(tmp_path / f"{split}.bin")
    data = load_data(smoke_cfg("data.source=memmap", f"data.path={tmp_path}", "data.eos_id=9"))
    assert set(data.tokens) == {"train", "val"} and data.n_bytes is None
    st = data.starts["train"]
    assert st[0] == 1 and st[4] == 1 and st[7] == 1 and st[3] == 0
    with pytest.raises(DataError, match="val.bin"):
        (tmp_path / "val.bin").unlink()
        load_data(smoke_cfg("data.source=memmap", f"data.path={tmp_path}"))


@pytest.mark.slow
def test_brown_document_starts():
    """Needs the Brown corpus (reprokit.fetch, npm) and a BPE training: several seconds."""
    from overtok.config import Cfg
    from reprokit.config import load_config

    cfg = load_config(Cfg, None, ["data.source=brown", "data.vocab_size=2048"])
    data = load_data(cfg)
    assert data.vocab_size == 2048 and data.n_bytes["val"] > 0
    assert data.starts["train"].sum() == 400 and data.starts["val"].sum() == 50
