"""Synthetic data and tolerance helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reprokit.testing import (
    assert_close,
    markov_chain,
    markov_entropy_rate,
    synthetic_images,
    synthetic_tokens,
    tolerance,
)


def test_synthetic_images_shape_range_and_separable() -> None:
    x, y = synthetic_images(200, channels=3, size=16, num_classes=5, seed=0)
    assert x.shape == (200, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert torch.bincount(y, minlength=5).tolist() == [40] * 5
    x2, y2 = synthetic_images(200, channels=3, size=16, num_classes=5, seed=0)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    # nearest class centroid on |FFT| (phase-invariant) features, centroids from another seed
    def feats(im: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft2(im.double()).abs().flatten(1)

    tx, ty = synthetic_images(200, channels=3, size=16, num_classes=5, seed=1)
    cent = torch.stack([feats(tx[ty == c]).mean(0) for c in range(5)])
    pred = torch.cdist(feats(x), cent).argmin(1)
    assert (pred == y).float().mean().item() > 0.9


def test_synthetic_tokens_markov_structure() -> None:
    vocab = 16
    t = synthetic_tokens(20000, vocab=vocab, seed=0)
    assert t.shape == (20000,) and t.dtype == torch.int64 and int(t.max()) < vocab
    assert torch.equal(t, synthetic_tokens(20000, vocab=vocab, seed=0))
    assert not torch.equal(t, synthetic_tokens(20000, vocab=vocab, seed=1))
    p = markov_chain(vocab)
    np.testing.assert_allclose(p.sum(1), 1.0)
    h = markov_entropy_rate(p)
    assert h < 0.5 * math.log(vocab)
    # empirical bigram NLL under the true chain ~ entropy rate
    a, b = t[:-1].numpy(), t[1:].numpy()
    assert -np.log(p[a, b]).mean() == pytest.approx(h, rel=0.05)


def test_tolerance_ordering_and_names() -> None:
    assert tolerance(torch.float64)[0] < tolerance(torch.float32)[0] < tolerance("tf32")[0]
    assert tolerance("fp16")[0] < tolerance(torch.bfloat16)[0]
    assert tolerance("bf16") == tolerance(torch.bfloat16) and tolerance(np.float32) == tolerance("float32")
    with pytest.raises(ValueError):
        tolerance("int8")


def test_assert_close_passes_and_fails() -> None:
    a = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert_close(a, a + 1e-12)
    with pytest.raises(AssertionError, match="max abs err"):
        assert_close(a, a + 1e-3)
    assert_close(a.bfloat16(), a + 1e-3)  # inferred bf16 tolerance
    assert_close(a, a + 1e-3, dtype="fp16")
    with pytest.raises(AssertionError, match="shape"):
        assert_close(a, a[:2])
    with pytest.raises(AssertionError, match="mine"):
        assert_close(np.array([1.0]), np.array([1.1]), dtype="float32", msg="mine")


def test_check_golden(tmp_path, monkeypatch):
    import pytest

    from reprokit.testing import GOLDEN_ENV, check_golden

    p = tmp_path / "golden.json"
    with pytest.raises(AssertionError, match="missing"):
        check_golden(p, [1.0, 2.0])
    monkeypatch.setenv(GOLDEN_ENV, "1")
    check_golden(p, [1.0, 2.0])
    monkeypatch.delenv(GOLDEN_ENV)
    check_golden(p, [1.0, 2.00001])
    with pytest.raises(AssertionError, match="value 1 drifted"):
        check_golden(p, [1.0, 2.1])
    with pytest.raises(AssertionError, match="golden file has 2"):
        check_golden(p, [1.0])


def test_check_results_rebuilt_catches_a_hand_edited_table(tmp_path):
    import json as _json

    from reprokit.results import write_results
    from reprokit.testing import check_results_rebuilt

    def write(d, tables):
        d.mkdir(parents=True, exist_ok=True)
        (d / "runs.jsonl").write_text(_json.dumps({"run": "a", "v": 1.0}) + "\n")
        (d / "wall_time.json").write_text(_json.dumps({"invocations": [{"elapsed_s": 2.0}, {"elapsed_s": 3.0}]}))
        return write_results(d / "results.json", paper="p", scale="small", arms={}, tables=tables, claims=[],
                             floors=[], protocol={}, config={}, seeds=[0], wall_time_s=5.0)

    def table(v):
        return {"main": {"columns": ["run", "v"], "rows": [["a", v]], "caption": ""}}

    def rebuild(records, res):
        return write(tmp_path / "rebuilt", table(records[0]["v"]))

    write(tmp_path / "small", table(1.0))
    res, records = check_results_rebuilt(tmp_path / "small", rebuild)
    assert res["wall_time_s"] == 5.0 and records == [{"run": "a", "v": 1.0}]
    write(tmp_path / "small", table(2.0))                          # typed by hand: not what runs.jsonl gives
    with pytest.raises(AssertionError, match="tables"):
        check_results_rebuilt(tmp_path / "small", rebuild)
