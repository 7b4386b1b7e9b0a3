"""The FID feature network's identity is its tensor digest: kept in the report as weights_digest,
checked on load, and recomputed (never retrained) for an old cached report without it."""

import json

import pytest
import torch

import racedit.feature_net as fn
from reprokit.errors import DataError
from reprokit.metrics.feature_net import SmallClassifier, save_classifier


@pytest.fixture
def cached(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "clf.safetensors"
    digest = save_classifier(SmallClassifier(in_channels=1, num_classes=10, image_size=28), path)
    # a report written by the older code: the file's sha256, no weights_digest
    path.with_suffix(".json").write_text(json.dumps({"test_accuracy": 0.95, "epochs": fn.EPOCHS, "sha256": "f" * 64}))
    return path, digest


def test_old_report_gets_the_tensor_digest_without_retraining(cached, monkeypatch):
    path, digest = cached

    def no_training(*a, **k):
        raise AssertionError("the cached classifier must not be retrained")

    monkeypatch.setattr(fn, "_train", no_training)
    rep = fn.train_feature_net(path=path)
    assert rep["weights_digest"] == digest and "sha256" not in rep
    assert json.loads(path.with_suffix(".json").read_text())["weights_digest"] == digest
    net, rep2 = fn.load_feature_net(path=path)
    assert rep2["weights_digest"] == digest and not net.training


def test_other_weights_are_refused(cached):
    path, _ = cached
    fn.train_feature_net(path=path)
    rep = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**rep, "weights_digest": "0" * 64}))
    with pytest.raises(DataError, match="tensor digest"):
        fn.load_feature_net(path=path)
    with pytest.raises(DataError, match="racedit classifier"):
        fn.load_feature_net(path=path.with_name("absent.safetensors"))
