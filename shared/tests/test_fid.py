"""FID / KID against float64 SciPy and brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from reprokit.metrics.fid import (
    InceptionFeatures,
    extract_features,
    feature_stats,
    fid_from_features,
    frechet_distance,
    kid_from_features,
    polynomial_mmd2_unbiased,
)


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fid_matches_scipy_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = 16
    mix = rng.normal(size=(d, d))
    a = rng.normal(size=(400, d)) @ mix
    b = rng.normal(size=(300, d)) @ (mix + 0.3 * rng.normal(size=(d, d))) + 0.5
    ours = fid_from_features(a, b)
    ref = _scipy_fid(a, b)
    assert ref > 1.0
    assert abs(ours - ref) <= 1e-6 * abs(ref)


def test_feature_stats_float64_and_unbiased() -> None:
    x = torch.randn(50, 5, generator=torch.Generator().manual_seed(0))  # float32 input
    mu, sigma = feature_stats(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, np.cov(x.double().numpy(), rowvar=False), rtol=1e-12, atol=1e-14)


def test_fid_identical_is_zero_and_mean_shift() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 32))
    assert fid_from_features(a, a) < 1e-6
    # a pure mean shift by v gives |v|^2 exactly (same covariance)
    v = np.full(32, 0.25)
    assert fid_from_features(a, a + v) == pytest.approx(32 * 0.0625, rel=1e-6)


def test_frechet_distance_closed_form_diagonal() -> None:
    # diagonal covariances: d = sum (sqrt(s1) - sqrt(s2))^2 + |mu1-mu2|^2 = (1-2)^2 + (3-1)^2 + 1 = 6
    d = frechet_distance([0.0, 0.0], np.diag([1.0, 9.0]), [1.0, 0.0], np.diag([4.0, 1.0]))
    assert d == pytest.approx(6.0, rel=1e-12)


def test_kid_matches_bruteforce_loop() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(7, 3)) + 0.2
    d = 3

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (float(a @ b) / d + 1.0) ** 3

    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    assert polynomial_mmd2_unbiased(x, y) == pytest.approx(sxx + syy - 2 * sxy, rel=1e-12)
    # subset_size >= len: every subset is a permutation of the full sets -> zero std, same value
    mean, std = kid_from_features(x, y[:6], num_subsets=5, subset_size=100, seed=3)
    assert mean == pytest.approx(polynomial_mmd2_unbiased(x, y[:6]), rel=1e-10)
    assert std < 1e-12


def test_kid_std_is_the_population_std_over_subsets() -> None:
    """std uses ddof=0, as torchmetrics' KernelInceptionDistance (``kid_scores.std(unbiased=False)``)."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(40, 3)) + 0.3
    mean, std = kid_from_features(x, y, num_subsets=7, subset_size=10, seed=5)
    r = np.random.default_rng(5)
    vals = []
    for _ in range(7):
        xi = x[r.choice(40, 10, replace=False)]
        yi = y[r.choice(40, 10, replace=False)]
        vals.append(polynomial_mmd2_unbiased(xi, yi))
    assert mean == pytest.approx(np.mean(vals), rel=1e-12)
    assert std == pytest.approx(np.std(vals, ddof=0), rel=1e-12)
    assert std != pytest.approx(np.std(vals, ddof=1), rel=1e-6)


def test_kid_same_vs_shifted_and_seeded() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(600, 8)), rng.normal(size=(600, 8))
    shifted = rng.normal(size=(600, 8)) + 0.5
    same_mean, same_std = kid_from_features(a, b, num_subsets=20, subset_size=200, seed=0)
    diff_mean, _ = kid_from_features(a, shifted, num_subsets=20, subset_size=200, seed=0)
    assert abs(same_mean) < 0.02
    assert diff_mean > 0.2
    assert diff_mean > 10 * (abs(same_mean) + same_std)
    assert kid_from_features(a, b, 20, 200, seed=0) == (same_mean, same_std)
    assert kid_from_features(a, b, 20, 200, seed=1) != (same_mean, same_std)


def test_extract_features_batches_and_flattens() -> None:
    imgs = torch.arange(2 * 5 * 1 * 2 * 2, dtype=torch.float32).reshape(10, 1, 2, 2)
    calls: list[int] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return x.sum(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)

    f = extract_features(fn, imgs, batch_size=4)
    assert calls == [4, 4, 2]
    assert f.shape == (10, 1) and f.dtype == np.float64
    np.testing.assert_array_equal(f[:, 0], imgs.sum(dim=(1, 2, 3)).double().numpy())


def test_inception_requires_local_file(tmp_path) -> None:
    with pytest.raises(ValueError, match="weights"):
        InceptionFeatures(None)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        InceptionFeatures(tmp_path / "missing.pth")


def test_inception_loads_local_file_without_download(tmp_path, monkeypatch) -> None:
    """With a stand-in pytorch_fid module: the local state dict reaches the builder; no URL loader runs."""
    import sys
    import types

    sd = {"w": torch.ones(3)}
    path = tmp_path / "pt_inception.pth"
    torch.save(sd, path)
    seen: dict[str, object] = {}

    def url_loader(*_a, **_k):
        raise AssertionError("download attempted")

    class FakeInception(torch.nn.Module):
        BLOCK_INDEX_BY_DIM = {64: 0, 192: 1, 768: 2, 2048: 3}

        def __init__(self, blocks, **kwargs):
            super().__init__()
            seen["state"] = mod.load_state_dict_from_url("https://example.invalid/w.pth")
            seen["blocks"] = blocks

        def forward(self, x):
            return [x.mean(dim=(2, 3), keepdim=True)]

    mod = types.ModuleType("pytorch_fid.inception")
    mod.load_state_dict_from_url = url_loader
    mod.InceptionV3 = FakeInception
    pkg = types.ModuleType("pytorch_fid")
    pkg.inception = mod
    monkeypatch.setitem(sys.modules, "pytorch_fid", pkg)
    monkeypatch.setitem(sys.modules, "pytorch_fid.inception", mod)
    net = InceptionFeatures(path)
    assert torch.equal(seen["state"]["w"], sd["w"]) and seen["blocks"] == [3]
    assert mod.load_state_dict_from_url is url_loader  # restored
    feats = net(-torch.ones(2, 1, 4, 4))  # [-1, 1] -> [0, 1], grey -> 3 channels
    assert feats.shape == (2, 3) and torch.all(feats == 0)
