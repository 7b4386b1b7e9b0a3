"""The FID feature network: a Fashion-MNIST classifier trained in-repo (``racedit classifier``).

FID/KID computed in its feature space are *non-standard FID (Fashion-MNIST classifier
features)*: comparable only between runs that use the same weights (same sha256), never with the
paper's Inception FID. The weights are cached under ``reprokit.fetch.data_dir()/racedit/`` (not
committed); training is deterministic on CPU (fixed seed, single thread recommended).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from reprokit.fetch import data_dir
from reprokit.metrics.feature_net import SmallClassifier, load_classifier, save_classifier, train_classifier

MIN_ACCURACY = 0.90


def to_unit_range(x_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) -> float32 (N, 1, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(x_uint8)).float().div(127.5).sub(1.0).unsqueeze(1)


def default_path(seed: int = 0) -> Path:
    return data_dir() / "racedit" / f"fmnist_classifier_seed{seed}.safetensors"


def train_feature_net(seed: int = 0, epochs: int = 10, lr: float = 3e-3, path: str | Path | None = None, force: bool = False) -> dict:
    """Train (or reuse the cached) classifier; returns the report (accuracy, sha256, path)."""

    path = Path(path) if path is not None else default_path(seed)
    report_path = path.with_suffix(".json")
    if path.is_file() and report_path.is_file() and not force:
        rep = json.loads(report_path.read_text())
        if rep["test_accuracy"] >= MIN_ACCURACY and rep.get("epochs") == epochs:
            return rep
    lock = path.with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    if lock.exists() and _alive(lock):
        print(f"another process is training the classifier ({lock}); waiting", flush=True)
        while lock.exists() and _alive(lock):
            time.sleep(10)
        return train_feature_net(seed, epochs, lr, path, force=False)
    lock.write_text(str(os.getpid()))
    try:
        return _train(seed, epochs, lr, path, report_path)
    finally:
        lock.unlink(missing_ok=True)


def _alive(lock: Path) -> bool:
    try:
        os.kill(int(lock.read_text().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


def _train(seed: int, epochs: int, lr: float, path: Path, report_path: Path) -> dict:
    from reprokit.datasets import load_fashion_mnist

    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("test")
    torch.manual_seed(seed)
    net = SmallClassifier(in_channels=1, num_classes=10, image_size=28)
    t0 = time.time()
    rep = train_classifier(net, to_unit_range(xtr), torch.from_numpy(ytr), epochs=epochs, lr=lr, seed=seed,
                           val=(to_unit_range(xte), torch.from_numpy(yte)))
    rep["train_seconds"] = round(time.time() - t0, 1)
    rep["seed"] = seed
    rep["sha256"] = save_classifier(net, path, meta={"dataset": "fashion-mnist", "seed": seed})
    rep["path"] = str(path)
    report_path.write_text(json.dumps(rep, indent=1) + "\n")
    if rep["test_accuracy"] < MIN_ACCURACY:
        raise RuntimeError(f"feature classifier reached only {rep['test_accuracy']:.4f} test accuracy "
                           f"(< {MIN_ACCURACY}); FID in its feature space would be meaningless")
    return rep


def load_feature_net(seed: int = 0, path: str | Path | None = None) -> tuple[SmallClassifier, dict]:
    """The cached classifier and its training report; a clear error when it was never trained."""
    path = Path(path) if path is not None else default_path(seed)
    report_path = path.with_suffix(".json")
    if not path.is_file() or not report_path.is_file():
        raise FileNotFoundError(f"no trained FID feature classifier at {path}; run "
                                "`racedit classifier` first (about 5 min on one CPU core)")
    rep = json.loads(report_path.read_text())
    if rep["test_accuracy"] < MIN_ACCURACY:
        raise RuntimeError(f"the cached FID classifier at {path} has test accuracy {rep['test_accuracy']:.4f} "
                           f"< {MIN_ACCURACY}; retrain it (`racedit classifier`)")
    return load_classifier(path, expected_sha256=rep["sha256"]), rep


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps(train_feature_net(), indent=1))
