"""Tests for reprokit.text: document split, tokenizers, byte counts, samplers, eval windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from reprokit.text import SEPARATOR, SPLITS, TextData, WindowSampler, prepare_text, split_documents


def _corpus(n_docs: int = 20, seed: int = 0) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "délta", "ε", "zeta", "eta", "théta", "iota", "kappa", "😀"]
    docs = {}
    for i in range(n_docs):
        lines = [" ".join(rng.choice(words, size=8)) + f" doc{i}." for _ in range(30)]
        docs[f"doc{i:02d}"] = "\n".join(lines) + "\n"
    return docs


def test_split_documents_partition_and_determinism() -> None:
    names = [f"d{i}" for i in range(37)]
    a = split_documents(names, (0.8, 0.1, 0.1), seed=0)
    assert sorted(sum(a.values(), [])) == sorted(names)
    assert all(not set(a[s]) & set(a[t]) for s in SPLITS for t in SPLITS if s != t)
    assert [len(a[s]) for s in SPLITS] == [29, 4, 4]
    assert split_documents(list(reversed(names)), (0.8, 0.1, 0.1), seed=0) == a
    assert split_documents(names, (0.8, 0.1, 0.1), seed=1) != a
    with pytest.raises(ValueError, match="sum"):
        split_documents(names, (0.8, 0.1, 0.2))
    with pytest.raises(ValueError, match="non-empty train"):
        split_documents(["a", "b"], (0.4, 0.3, 0.3))


@pytest.mark.parametrize("tok", ["char", "bpe"])
def test_prepare_text_by_document_bytes_and_roundtrip(tok: str, tmp_path: Path) -> None:
    docs = _corpus()
    td = prepare_text(
        docs, tokenizer=tok, vocab_size=300, split=(0.7, 0.15, 0.15), seed=3, cache_dir=tmp_path
    )
    assert sorted(sum(td.docs.values(), [])) == sorted(docs)
    assert all(not set(td.docs[s]) & set(td.docs[t]) for s in SPLITS for t in SPLITS if s != t)
    for s in SPLITS:
        text = SEPARATOR.join(docs[d] for d in td.docs[s])
        assert td.bytes[s] == len(text.encode("utf-8"))
        assert td.bytes[s] > len(text)  # non-ASCII characters count several bytes
        ids = td.split(s)
        assert isinstance(ids, np.memmap) and ids.dtype == np.uint16
        assert td.decode(ids) == text
        assert int(ids.max()) < td.vocab_size
    assert td.encode("alpha beta") and td.decode(td.encode("alpha beta")) == "alpha beta"
    meta = json.loads((td.path / "meta.json").read_text())
    assert meta["vocab_size"] == td.vocab_size and meta["bytes"] == td.bytes
    assert (td.path / "tokenizer.json").is_file()
    if tok == "bpe":
        assert td.vocab_size == 300
    # same inputs: served from the cache; another seed: another split and cache entry
    again = prepare_text(
        docs, tokenizer=tok, vocab_size=300, split=(0.7, 0.15, 0.15), seed=3, cache_dir=tmp_path
    )
    assert again.path == td.path and again.docs == td.docs
    other = prepare_text(
        docs, tokenizer=tok, vocab_size=300, split=(0.7, 0.15, 0.15), seed=4, cache_dir=tmp_path
    )
    assert other.path != td.path and other.docs != td.docs


def test_bpe_deterministic_and_trained_on_train_only(tmp_path: Path) -> None:
    docs = _corpus(12)
    docs["doc11"] = "QQQQXXXX " * 200  # text seen by BPE only if doc11 is in the train split
    a = prepare_text(docs, tokenizer="bpe", vocab_size=320, seed=0, cache_dir=tmp_path / "a")
    b = prepare_text(docs, tokenizer="bpe", vocab_size=320, seed=0, cache_dir=tmp_path / "b")
    for s in SPLITS:
        np.testing.assert_array_equal(np.asarray(a.split(s)), np.asarray(b.split(s)))
    assert (a.path / "tokenizer.json").read_text() == (b.path / "tokenizer.json").read_text()
    merged = len(a.encode("QQQQXXXX QQQQXXXX")) < 10
    assert merged == ("doc11" in a.docs["train"])


def test_char_vocab_and_dtype(tmp_path: Path) -> None:
    td = prepare_text({"a": "abc", "b": "cde", "c": "xyz!"}, tokenizer="char", split=(0.34, 0.33, 0.33),
                      cache_dir=tmp_path)  # fmt: skip
    assert td.vocab_size == len(set("abccdexyz!" + SEPARATOR))
    assert td.train.dtype == np.uint16
    reloaded = TextData.load(td.path)
    assert reloaded.decode(reloaded.train) == td.decode(td.train)


def test_sampler_reproducible_per_rank_and_shifted() -> None:
    tokens = np.arange(10_000, dtype=np.uint16)
    s0 = WindowSampler(tokens, seq_len=32, batch_size=4, seed=7, rank=0)
    s0b = WindowSampler(tokens, seq_len=32, batch_size=4, seed=7, rank=0)
    s1 = WindowSampler(tokens, seq_len=32, batch_size=4, seed=7, rank=1)
    x0, y0 = s0.next_batch()
    x0b, y0b = s0b.next_batch()
    x1, _ = s1.next_batch()
    assert x0.dtype == torch.long and x0.shape == (4, 32) and y0.shape == (4, 32)
    assert torch.equal(x0, x0b) and torch.equal(y0, y0b)
    assert not torch.equal(x0, x1)
    assert torch.equal(y0[:, :-1], x0[:, 1:]) and torch.equal(y0[:, -1], x0[:, -1] + 1)
    other_seed = WindowSampler(tokens, seq_len=32, batch_size=4, seed=8, rank=0)
    assert not torch.equal(other_seed.next_batch()[0], x0)


def test_sampler_resume_via_state_dict() -> None:
    tokens = np.arange(5000, dtype=np.uint16)
    a = WindowSampler(tokens, seq_len=16, batch_size=3, seed=1, rank=2)
    for _ in range(5):
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))  # must survive a JSON round trip
    expected = [a.next_batch() for _ in range(3)]
    b = WindowSampler(tokens, seq_len=16, batch_size=3, seed=1, rank=2)
    b.load_state_dict(state)
    assert b.step == 5
    for ex, ey in expected:
        x, y = b.next_batch()
        assert torch.equal(x, ex) and torch.equal(y, ey)
    with pytest.raises(ValueError, match="rank"):
        WindowSampler(tokens, seq_len=16, batch_size=3, seed=1, rank=0).load_state_dict(state)


@pytest.mark.parametrize(("seq_len", "batch_size"), [(7, 3), (10, 4), (200, 2)])
def test_eval_batches_cover_split_once(seq_len: int, batch_size: int, tmp_path: Path) -> None:
    td = prepare_text(_corpus(10), tokenizer="char", seed=0, cache_dir=tmp_path)
    ids = np.asarray(td.val, dtype=np.int64)
    xs, ys = [], []
    for x, y in td.eval_batches("val", seq_len, batch_size):
        assert x.dtype == torch.long and x.shape == y.shape and x.shape[1] <= seq_len
        assert x.shape[0] <= batch_size
        xs.append(x.reshape(-1))
        ys.append(y.reshape(-1))
    np.testing.assert_array_equal(torch.cat(ys).numpy(), ids[1:])
    np.testing.assert_array_equal(torch.cat(xs).numpy(), ids[:-1])


def test_real_shakespeare_char_split_by_play() -> None:
    td = prepare_text("shakespeare", tokenizer="char", seed=0)
    assert [len(td.docs[s]) for s in SPLITS] == [29, 4, 4]
    assert all(not set(td.docs[s]) & set(td.docs[t]) for s in SPLITS for t in SPLITS if s != t)
    assert sum(td.bytes.values()) > 4_000_000
    x, y = WindowSampler(td.train, seq_len=64, batch_size=2, seed=0, rank=0).next_batch()
    assert x.shape == (2, 64)


@pytest.mark.slow
def test_real_shakespeare_bpe() -> None:
    td = prepare_text("shakespeare", tokenizer="bpe", vocab_size=1024, seed=0)
    assert td.vocab_size == 1024
    assert len(td.train) < td.bytes["train"] / 2  # BPE compresses
    assert len(td.decode(td.val[:50])) > 50
