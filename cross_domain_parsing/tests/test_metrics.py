"""Metrics from one confusion matrix: a hand-computed example, the 11-class (no dress) means, and a
cross-check of mIoU against torchmetrics' MulticlassJaccardIndex on the same predictions."""

import numpy as np
import pytest
import torch

from crossparse.evaluate import metrics_from_confusion


def test_hand_computed_example():
    # 3 classes; rows = ground truth, columns = prediction
    m = np.array([[4, 1, 0],
                  [1, 2, 1],
                  [0, 0, 3]])
    r = metrics_from_confusion(m)
    iou = [4 / 6, 2 / 5, 3 / 4]                # TP / (GT + PRED - TP)
    assert r["iou_per_class"] == pytest.approx(iou)
    assert r["miou"] == pytest.approx(np.mean(iou))
    assert r["pixel_acc"] == pytest.approx(9 / 12)
    assert r["fg_acc"] == pytest.approx(5 / 7)   # rows 1..2, diagonal 2 + 3 of 4 + 3 pixels
    prec, rec = [4 / 5, 2 / 3, 3 / 4], [4 / 5, 2 / 4, 3 / 3]
    assert r["precision"] == pytest.approx(np.mean(prec)) and r["recall"] == pytest.approx(np.mean(rec))
    assert r["f1"] == pytest.approx(np.mean([8 / 10, 4 / 7, 6 / 7]))


def test_class_subset_leaves_dress_out_of_the_means():
    m = np.diag([5] * 12)
    m[3, 9] = 5                                 # upper-clothes predicted as dress (dress absent in the target)
    r12, r11 = metrics_from_confusion(m), metrics_from_confusion(m, [k for k in range(12) if k != 9])
    assert r11["n_classes"] == 11
    assert r11["miou"] == pytest.approx((10 + 0.5) / 11)
    assert r12["miou"] == pytest.approx((10 + 0.5 + 0.5) / 12)


def test_miou_matches_torchmetrics_jaccard():
    tm = pytest.importorskip("torchmetrics.classification")
    g = torch.Generator().manual_seed(0)
    K = 12
    target = torch.randint(0, K, (4, 16, 8), generator=g)
    pred = torch.where(torch.rand(4, 16, 8, generator=g) < 0.6, target, torch.randint(0, K, (4, 16, 8), generator=g))
    target[0, :2] = 255
    m = torch.zeros(K, K, dtype=torch.int64)
    keep = target != 255
    m += torch.bincount(target[keep] * K + pred[keep], minlength=K * K).reshape(K, K)
    ours = metrics_from_confusion(m)["miou"]
    ref = tm.MulticlassJaccardIndex(num_classes=K, average="macro", ignore_index=255)(pred, target)
    assert ours == pytest.approx(float(ref), abs=1e-6)
