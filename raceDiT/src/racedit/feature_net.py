"""The FID feature network: a Fashion-MNIST classifier trained in-repo (``racedit classifier``).

FID/KID computed in its feature space are *non-standard FID (Fashion-MNIST classifier
features)*: comparable only between runs that use the same network, identified by its **tensor
digest** (``reprokit.metrics.feature_net.state_dict_sha256``, returned by ``save_classifier`` and
stored in the report as ``weights_digest``), never with the paper's Inception FID. The weights are
cached under ``reprokit.fetch.data_dir()/racedit/`` (not committed); training is deterministic on
CPU (fixed seed, single thread recommended). Concurrent processes (the reproduction's workers)
train it once: the others wait on ``reprokit.runs.exclusive``, which says whom they wait for.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from reprokit.errors import DataError
from reprokit.fetch import data_dir
from reprokit.metrics.feature_net import (
    SmallClassifier,
    load_classifier,
    save_classifier,
    state_dict_sha256,
    train_classifier,
)
from reprokit.runs import exclusive

from .data import fashion_mnist

MIN_ACCURACY = 0.90
EPOCHS = 10
LR = 3e-3


def default_path(seed: int = 0) -> Path:
    return data_dir() / "racedit" / f"fmnist_classifier_seed{seed}.safetensors"


def _cached_report(path: Path, epochs: int) -> dict | None:
    """The cached report if it describes a usable network for ``epochs``; an old report without
    ``weights_digest`` gets the digest recomputed from the weights file and is rewritten (no retraining)."""
    report_path = path.with_suffix(".json")
    if not (path.is_file() and report_path.is_file()):
        return None
    rep = json.loads(report_path.read_text())
    if rep.get("test_accuracy", 0.0) < MIN_ACCURACY or rep.get("epochs") != epochs:
        return None
    if "weights_digest" not in rep:
        from safetensors.torch import load_file

        rep["weights_digest"] = state_dict_sha256(load_file(str(path)))
        rep.pop("sha256", None)  # the old file digest; the identity is now the tensor digest
        _write_json(report_path, rep)
    return rep


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    tmp.replace(path)


def train_feature_net(seed: int = 0, epochs: int = EPOCHS, lr: float = LR, path: str | Path | None = None,
                      force: bool = False) -> dict:
    """Train (or reuse the cached) classifier; returns the report (accuracy, weights_digest, path)."""
    path = Path(path) if path is not None else default_path(seed)
    if not force and (rep := _cached_report(path, epochs)) is not None:
        return rep
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path.with_suffix(".lock"), "the FID feature classifier"):
        if not force and (rep := _cached_report(path, epochs)) is not None:  # trained while we waited
            return rep
        return _train(seed, epochs, lr, path)


def _train(seed: int, epochs: int, lr: float, path: Path) -> dict:
    train, test = fashion_mnist("train"), fashion_mnist("test")      # unpadded 28x28, [-1, 1]
    torch.manual_seed(seed)
    net = SmallClassifier(in_channels=1, num_classes=10, image_size=28)
    t0 = time.time()
    rep = train_classifier(net, train.images, train.labels, epochs=epochs, lr=lr, seed=seed,
                           val=(test.images, test.labels))
    rep["train_seconds"] = round(time.time() - t0, 1)
    rep["seed"] = seed
    rep["weights_digest"] = save_classifier(net, path, meta={"dataset": "fashion-mnist", "seed": seed})
    rep["path"] = str(path)
    _write_json(path.with_suffix(".json"), rep)
    if rep["test_accuracy"] < MIN_ACCURACY:
        raise RuntimeError(f"feature classifier reached only {rep['test_accuracy']:.4f} test accuracy "
                           f"(< {MIN_ACCURACY}); FID in its feature space would be meaningless")
    return rep


def load_feature_net(seed: int = 0, path: str | Path | None = None) -> tuple[SmallClassifier, dict]:
    """The cached classifier (its tensor digest checked against the report) and its training report."""
    path = Path(path) if path is not None else default_path(seed)
    rep = _cached_report(path, EPOCHS) if path.is_file() else None
    if rep is None:
        raise DataError(f"no usable FID feature classifier at {path} (or its report {path.with_suffix('.json')}); "
                        "run `racedit classifier` first (about 5 min on one CPU core)")
    try:
        net = load_classifier(path, expected_sha256=rep["weights_digest"])
    except ValueError as e:  # tensor digest differs from the report: other weights
        raise DataError(f"{path}: {e}; delete it and its report and rerun `racedit classifier`") from e
    return net, rep
