"""ConfusionMatrix metrics on a hand-computed example."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reprokit.metrics.segmentation import ConfusionMatrix

# 4 classes, class 3 absent from both ground truth and prediction; two ignored pixels (255).
TARGET = torch.tensor([[0, 0, 0, 1], [1, 2, 255, 255]])
PRED = torch.tensor([[0, 0, 1, 1], [2, 2, 0, 1]])
# counted (t, p) pairs: (0,0) (0,0) (0,1) (1,1) (1,2) (2,2)
# TP = [2, 1, 1, 0], GT area = [3, 2, 1, 0], predicted area = [2, 2, 2, 0], 6 pixels counted.


def test_hand_computed_metrics() -> None:
    cm = ConfusionMatrix(4, ignore_index=255)
    cm.update(PRED, TARGET)
    r = cm.compute()
    assert r["confusion"].tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert r["n_pixels"] == 6
    # IoU = TP / (GT + P - TP): 2/3, 1/3, 1/2, NaN -> mIoU = (2/3 + 1/3 + 1/2) / 3 = 0.5
    iou = r["iou_per_class"]
    np.testing.assert_allclose(iou[:3], [2 / 3, 1 / 3, 1 / 2], rtol=1e-12)
    assert math.isnan(iou[3])
    assert r["miou"] == pytest.approx(0.5, rel=1e-12)
    # F1 = 2TP / (GT + P): 4/5, 2/4, 2/3, NaN -> mean = (24 + 15 + 20) / 30 / 3 = 59/90
    np.testing.assert_allclose(r["f1_per_class"][:3], [0.8, 0.5, 2 / 3], rtol=1e-12)
    assert math.isnan(r["f1_per_class"][3])
    assert r["f1"] == pytest.approx(59 / 90, rel=1e-12)
    # pixel accuracy = 4 / 6; mean accuracy (recall) = (2/3 + 1/2 + 1) / 3 = 13/18
    assert r["pixel_accuracy"] == pytest.approx(4 / 6, rel=1e-12)
    assert r["mean_accuracy"] == pytest.approx(13 / 18, rel=1e-12)
    assert r["recall"] == pytest.approx(13 / 18, rel=1e-12)
    # precision = TP / P: 1, 1/2, 1/2 -> 2/3
    assert r["precision"] == pytest.approx(2 / 3, rel=1e-12)


def test_accumulates_over_batches_and_accepts_logits() -> None:
    one = ConfusionMatrix(4)
    one.update(PRED, TARGET)
    two = ConfusionMatrix(4)
    logits = torch.nn.functional.one_hot(PRED, 4).permute(2, 0, 1)[None].float()  # (1, K, H, W)
    two.update(logits[:, :, :1], TARGET[None, :1])
    two.update(logits[:, :, 1:], TARGET[None, 1:])
    assert torch.equal(one.mat, two.mat) and two.mat.dtype == torch.int64


def test_class_missing_from_prediction_counts_as_zero_f1() -> None:
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 1, 1]))
    r = cm.compute()
    # class 1: TP 0, GT 2, P 0 -> IoU 0, F1 0 (kept in means), precision NaN; class 0: IoU 2/4, F1 4/6
    assert r["miou"] == pytest.approx(0.25)
    assert r["f1"] == pytest.approx((4 / 6 + 0) / 2)
    assert math.isnan(r["precision_per_class"][1])


def test_out_of_range_and_reduce_without_dist() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError):
        cm.update(torch.tensor([0]), torch.tensor([5]))
    cm.update(torch.tensor([1, 2]), torch.tensor([1, 1]))
    assert cm.reduce() is cm and torch.equal(cm.matrix, cm.mat)
