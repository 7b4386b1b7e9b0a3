"""Evaluation of a parser: one dataset-level confusion matrix per split (``kernels``' fused
upsample + argmax + confusion, or its reference), and from it (reprokit.metrics.segmentation):

mIoU over the evaluated classes (12, or 11 for ``outdoor``: dress is left out of every class mean,
a pixel predicted as dress still counts as an error), pixel accuracy, foreground accuracy (pixels
whose ground truth is not background), average precision / recall / F1 over the evaluated classes
(the official code's family, notes §4.2) and per-class IoU. Prediction overlays (image, ground truth,
prediction) as PNG. Never imports train.py.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from reprokit.metrics.segmentation import ConfusionMatrix

from . import procparse as pp
from .data import IGNORE, to_display
from .kernels import upsample_argmax_confusion


def _mean(v: np.ndarray, keep: list[int]) -> float:
    x = v[keep]
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else float("nan")


def metrics_from_confusion(mat: torch.Tensor | np.ndarray, classes: list[int] | None = None) -> dict:
    """The metric family from a (K, K) matrix m[t, p]; class means over ``classes`` (default all)."""
    mat = torch.as_tensor(np.asarray(mat), dtype=torch.int64)
    K = mat.shape[0]
    keep = list(range(K)) if classes is None else list(classes)
    cm = ConfusionMatrix(K, ignore_index=IGNORE)
    cm.mat += mat
    r = cm.compute()
    m = mat.double().numpy()
    fg_total = m[1:].sum()
    return {"miou": _mean(r["iou_per_class"], keep), "pixel_acc": r["pixel_accuracy"],
            "fg_acc": float(np.trace(m[1:, 1:]) / fg_total) if fg_total > 0 else float("nan"),
            "precision": _mean(r["precision_per_class"], keep), "recall": _mean(r["recall_per_class"], keep),
            "f1": _mean(r["f1_per_class"], keep), "n_classes": len(keep),
            "iou_per_class": [None if math.isnan(v) else float(v) for v in r["iou_per_class"]]}


@torch.no_grad()
def confusion(parser, x: torch.Tensor, y: torch.Tensor, K: int, batch: int, impl: str = "torch",
              max_images: int = 0) -> torch.Tensor:
    parser.eval()
    n = len(x) if not max_images else min(max_images, len(x))
    dev = next(parser.parameters()).device
    mat = torch.zeros(K, K, dtype=torch.int64)
    for i in range(0, n, batch):
        logits = parser(x[i:min(n, i + batch)].to(dev))
        mat += upsample_argmax_confusion(logits, y[i:min(n, i + batch)].to(dev), K, IGNORE, impl=impl).cpu()
    return mat


def evaluate_split(parser, x, y, classes, cfg, impl: str | None = None) -> dict:
    mat = confusion(parser, x, y, cfg.model.num_classes, cfg.eval.batch_size, impl or cfg.model.impl,
                    cfg.eval.max_images)
    return metrics_from_confusion(mat, classes)


def evaluate_all(parser, data, cfg, splits: tuple[str, ...] = ("test",), full: bool = True) -> dict:
    """Source-val plus every target's requested splits. ``full=False`` keeps only mIoU (curves)."""
    res = {"source_val": evaluate_split(parser, data.val_x, data.val_y, None, cfg)}
    for t, d in data.targets.items():
        for s in splits:
            res[f"{t}_{s}"] = evaluate_split(parser, d[f"{s}_x"], d[f"{s}_y"], data.classes[t], cfg)
    if not full:
        return {k: v["miou"] for k, v in res.items()}
    return res


@torch.no_grad()
def save_overlays(parser, data, cfg, out_dir, prefix: str = "overlay") -> list[str]:
    """One PNG per target: rows = image, ground truth, prediction (``eval.overlays`` columns)."""
    from pathlib import Path

    from reprokit.plots import save_image_grid

    parser.eval()
    dev = next(parser.parameters()).device
    paths = []
    for t, d in data.targets.items():
        k = min(cfg.eval.overlays, len(d["test_x"]))
        if k == 0:
            continue
        x = d["test_x"][:k].to(dev)
        pred = parser.upsample(parser(x)).argmax(1).cpu().numpy()
        img = to_display(x.cpu(), cfg.data.preprocess)
        gt = torch.from_numpy(pp.colorize(d["test_y"][:k].numpy()))
        pr = torch.from_numpy(pp.colorize(pred))
        p = Path(out_dir) / f"{prefix}_{t}.png"
        save_image_grid(torch.cat([img, gt, pr]), p, nrow=k, value_range=(0, 1))
        paths.append(str(p))
    return paths
