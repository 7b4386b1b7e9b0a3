"""SmallClassifier recipe: learns a separable synthetic task, deterministic, save/load with sha256."""

from __future__ import annotations

import pytest
import torch

from reprokit.metrics.feature_net import (
    SmallClassifier,
    file_sha256,
    load_classifier,
    save_classifier,
    state_dict_sha256,
    train_classifier,
)
from reprokit.testing import synthetic_images


def _train(seed: int = 0) -> tuple[SmallClassifier, dict]:
    x, y = synthetic_images(128, channels=1, size=12, num_classes=4, seed=0)
    vx, vy = synthetic_images(128, channels=1, size=12, num_classes=4, seed=1)
    torch.manual_seed(seed)
    net = SmallClassifier(1, 4, image_size=12, feat_dim=32, width=8)
    rep = train_classifier(net, x, y, epochs=6, batch_size=16, lr=5e-3, seed=seed, val=(vx, vy))
    return net, rep


def test_learns_and_is_deterministic(tmp_path) -> None:
    net, rep = _train(0)
    assert rep["test_accuracy"] >= 0.9, rep
    assert rep["train_accuracy"] >= 0.9
    net2, rep2 = _train(0)
    assert state_dict_sha256(net) == state_dict_sha256(net2)
    assert rep2 == rep
    x = torch.zeros(3, 1, 12, 12)
    assert net.features(x).shape == (3, 32) and net(x).shape == (3, 4)

    path = tmp_path / "fnet.safetensors"
    sha = save_classifier(net, path, meta={"test_accuracy": rep["test_accuracy"]})
    assert sha == state_dict_sha256(net) and (tmp_path / "fnet.safetensors.sha256").read_text().startswith(sha)
    # the identity is the network's, not the file's: the same weights saved with other metadata (or
    # retrained bit-identically elsewhere) hash the same, while the files differ
    path2 = tmp_path / "fnet2.safetensors"
    assert save_classifier(net2, path2, meta={"note": "other metadata"}) == sha
    assert file_sha256(path2) != file_sha256(path)
    loaded = load_classifier(path, expected_sha256=sha)
    assert state_dict_sha256(loaded) == state_dict_sha256(net)
    xb = synthetic_images(5, 1, 12, 4, seed=3)[0]
    assert torch.equal(loaded.features(xb), net.features(xb))
    with pytest.raises(ValueError, match="digest"):
        load_classifier(path, expected_sha256="0" * 64)


def test_untrained_is_near_chance() -> None:
    vx, vy = synthetic_images(200, channels=1, size=12, num_classes=4, seed=1)
    torch.manual_seed(0)
    net = SmallClassifier(1, 4, image_size=12, feat_dim=32, width=8).eval()
    with torch.no_grad():
        acc = (net(vx).argmax(1) == vy).float().mean().item()
    assert acc < 0.6
