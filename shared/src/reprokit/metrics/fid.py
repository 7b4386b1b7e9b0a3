"""Fréchet Inception Distance (FID) and Kernel Inception Distance (KID) on feature arrays.

The feature extractor is injectable: anything that maps a batch of images ``(B, C, H, W)`` to
``(B, D)`` features works with :func:`extract_features`. Two extractors are provided:

* :class:`InceptionFeatures` -- the standard pytorch-fid InceptionV3 (2048-d pool features), built
  from a *local* weights file only (``pip install reprokit[inception]``); it never downloads.
* :class:`reprokit.metrics.feature_net.SmallClassifier` -- a small domain classifier you train
  yourself. FID computed with it is "non-standard FID" and is not comparable to Inception FID.

All statistics are computed in float64. The Fréchet distance uses symmetric eigen-decompositions
instead of a general matrix square root::

    tr sqrt(S1 S2) = tr sqrt(R S2 R),  R = S1^(1/2)   (R S2 R is symmetric PSD)

which is real by construction; tiny negative eigenvalues from round-off are clamped to zero.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "InceptionFeatures",
    "extract_features",
    "feature_stats",
    "fid_from_features",
    "frechet_distance",
    "kid_from_features",
    "polynomial_mmd2_unbiased",
]


def _as_float64_2d(x: Any, name: str = "features") -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contain NaN or inf")
    return arr


def feature_stats(feats: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of ``feats`` ``(N, D)``, both float64."""
    x = _as_float64_2d(feats)
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {x.shape[0]}")
    mu = x.mean(axis=0)
    xc = x - mu
    sigma = xc.T @ xc / (x.shape[0] - 1)
    return mu, sigma


def _sym_sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix via ``eigh`` (negative round-off eigenvalues -> 0)."""
    a = 0.5 * (a + a.T)
    w, v = np.linalg.eigh(a)
    w = np.sqrt(np.clip(w, 0.0, None))
    return (v * w) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr sqrt(sigma1 @ sigma2)`` for symmetric PSD matrices, computed as ``sum sqrt(eig(R S2 R))``."""
    r = _sym_sqrt_psd(np.asarray(sigma1, dtype=np.float64))
    m = r @ np.asarray(sigma2, dtype=np.float64) @ r
    m = 0.5 * (m + m.T)
    w = np.linalg.eigvalsh(m)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2) (float64).

    ``d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2)``. The result is clamped at 0
    (it can come out at -1e-12 for identical inputs).
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    diff = mu1 - mu2
    d = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))
    return max(d, 0.0)


def fid_from_features(feats_a: Any, feats_b: Any) -> float:
    """FID between two feature sets ``(N, D)`` and ``(M, D)`` (statistics in float64)."""
    mu1, s1 = feature_stats(feats_a)
    mu2, s2 = feature_stats(feats_b)
    return frechet_distance(mu1, s1, mu2, s2)


def polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between samples ``x`` (m, d) and ``y`` (n, d) with k(a, b) = (a.b/d + 1)^3."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    m, d = x.shape
    n = y.shape[0]
    if m < 2 or n < 2:
        raise ValueError("unbiased MMD needs at least 2 samples per set")
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kid_from_features(
    a: Any, b: Any, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: unbiased polynomial-kernel MMD^2 averaged over random subsets; returns ``(mean, std)``.

    ``std`` is the population standard deviation over the subsets (ddof=0), exactly as torchmetrics'
    ``KernelInceptionDistance.compute`` reports it (``kid_scores.std(unbiased=False)``, checked in
    torchmetrics 1.9.0), so the two are comparable.

    Each subset draws ``min(subset_size, len(a), len(b))`` rows without replacement from each set
    using ``numpy.random.default_rng(seed)``, so the result is reproducible.
    """
    x = _as_float64_2d(a, "a")
    y = _as_float64_2d(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dims differ: {x.shape[1]} vs {y.shape[1]}")
    m = min(subset_size, x.shape[0], y.shape[0])
    rng = np.random.default_rng(seed)
    vals = np.empty(num_subsets, dtype=np.float64)
    for i in range(num_subsets):
        xi = x[rng.choice(x.shape[0], m, replace=False)]
        yi = y[rng.choice(y.shape[0], m, replace=False)]
        vals[i] = polynomial_mmd2_unbiased(xi, yi)
    return float(vals.mean()), float(vals.std(ddof=0))


@torch.no_grad()
def extract_features(
    fn: Callable[[torch.Tensor], Any],
    images: Any,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Apply ``fn`` to ``images`` ``(N, C, H, W)`` in batches; returns float64 features ``(N, D)``.

    ``images`` may be a tensor, a NumPy array or an iterable of image batches. ``fn``'s output may
    be a tensor or array of shape ``(B, D)`` or ``(B, D, 1, 1)``. If ``device`` is given each batch is
    moved there before calling ``fn``.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if isinstance(images, torch.Tensor):
        batches = (images[i : i + batch_size] for i in range(0, images.shape[0], batch_size))
    else:
        batches = iter(images)
    out: list[np.ndarray] = []
    for xb in batches:
        if isinstance(xb, (list, tuple)):  # (images, labels) from a DataLoader
            xb = xb[0]
        if isinstance(xb, np.ndarray):
            xb = torch.from_numpy(xb)
        if device is not None:
            xb = xb.to(device)
        f = fn(xb)
        if isinstance(f, torch.Tensor):
            f = f.detach().cpu().double().numpy()
        f = np.asarray(f, dtype=np.float64)
        out.append(f.reshape(f.shape[0], -1))
    if not out:
        raise ValueError("no images given")
    return np.concatenate(out, axis=0)


_INCEPTION_HELP = (
    "Standard (Inception) FID needs the pytorch-fid InceptionV3 weights as a local file, e.g. "
    "pt_inception-2015-12-05-6726825d.pth from the pytorch-fid GitHub releases, copied onto this "
    "machine by hand; pass its path as InceptionFeatures(weights_path=...). reprokit never downloads "
    "weights. Without them, train a domain feature network (reprokit.metrics.feature_net) and report "
    "'non-standard FID'."
)


class InceptionFeatures:
    """pytorch-fid's InceptionV3 (FID variant) as a feature extractor, built from a local file.

    Args:
        weights_path: path to the FID Inception state dict (``pt_inception-2015-12-05-*.pth``, the
            file pytorch-fid would otherwise download), loaded with ``weights_only=True``.
        device: where to run the network.
        dims: 2048 (pool3, the standard FID features), 768, 192 or 64.
        value_range: the range of the input images; they are mapped to [0, 1] and 1-channel images
            are repeated to 3 channels; pytorch-fid then resizes to 299x299 and normalises.

    Raises:
        ValueError: ``weights_path`` is None.
        FileNotFoundError: the file does not exist.
        ImportError: pytorch-fid is not installed (``uv sync --extra inception``).

    Calling the object on ``(B, C, H, W)`` images returns a float32 tensor ``(B, dims)``.
    """

    def __init__(
        self,
        weights_path: str | Path | None,
        device: str | torch.device = "cpu",
        dims: int = 2048,
        value_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        if weights_path is None:
            raise ValueError("InceptionFeatures: weights_path is None. " + _INCEPTION_HELP)
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"InceptionFeatures: no weights file at {path}. " + _INCEPTION_HELP)
        try:
            from pytorch_fid import inception as pfi
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "InceptionFeatures needs the optional dependency pytorch-fid: install reprokit with "
                "the 'inception' extra (uv sync --extra inception)."
            ) from e
        state = torch.load(path, map_location="cpu", weights_only=True)

        def _local_only(*_args: Any, **_kwargs: Any) -> dict[str, torch.Tensor]:
            # Replaces pytorch-fid's URL loader while the network is built: the local file, no network.
            return state

        original = getattr(pfi, "load_state_dict_from_url", None)
        pfi.load_state_dict_from_url = _local_only
        try:
            block = pfi.InceptionV3.BLOCK_INDEX_BY_DIM[dims]
            self.model = pfi.InceptionV3(
                [block], resize_input=True, normalize_input=True, use_fid_inception=True
            )
        finally:
            if original is not None:
                pfi.load_state_dict_from_url = original
        self.model.eval().to(device)
        self.device = torch.device(device)
        self.dims = dims
        self.value_range = value_range
        self.weights_path = path

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        lo, hi = self.value_range
        x = images.to(self.device, torch.float32)
        x = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[1] != 3:
            raise ValueError(f"InceptionFeatures expects 1 or 3 channels, got {x.shape[1]}")
        f = self.model(x)[0]
        return f.reshape(f.shape[0], -1)

