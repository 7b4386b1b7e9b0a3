"""Dataset-level semantic-segmentation metrics from an accumulated confusion matrix.

Conventions (those of mmsegmentation's ``mIoU``/``mFscore``, except F1, see below):

* ``mat[t, p]`` counts pixels with ground truth ``t`` predicted as ``p``; pixels whose target is
  ``ignore_index`` are skipped.
* Per class: ``IoU = TP / (TP + FP + FN)``, ``accuracy = recall = TP / (TP + FN)``,
  ``precision = TP / (TP + FP)``, ``F1 = 2 TP / (2 TP + FP + FN)``.
* A ratio whose denominator is 0 is NaN, and means are ``nanmean``: a class absent from both ground
  truth and predictions is left out of mIoU and mean F1; a class with no ground-truth pixels is left
  out of mean accuracy/recall, one never predicted out of mean precision.
* F1 is computed directly from counts (``2TP / (2TP + FP + FN)``), so a class that is present but
  never predicted has F1 = 0 (mmsegmentation derives F from precision and recall and would give NaN).
* ``pixel_accuracy = sum TP / number of counted pixels``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["ConfusionMatrix"]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan, dtype=np.float64)
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return out


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.any(~np.isnan(x)) else float("nan")


class ConfusionMatrix:
    """Accumulates an int64 ``(num_classes, num_classes)`` confusion matrix with ``torch.bincount``.

    Args:
        num_classes: number of classes K; targets must be in ``[0, K)`` or ``ignore_index``.
        ignore_index: target value that is not counted (default 255).
        device: where the matrix lives (it follows the inputs on the first update if None).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255,
                 device: str | torch.device | None = None) -> None:
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64,
                               device=device if device is not None else "cpu")
        self._device_fixed = device is not None
        self._reduced: torch.Tensor | None = None

    def reset(self) -> None:
        """Zero the matrix."""
        self.mat.zero_()
        self._reduced = None

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch. ``pred`` is class indices shaped like ``target`` or logits with an extra class
        dimension at dim 1 (``(B, K, H, W)`` vs ``(B, H, W)``), which are argmax-ed."""
        pred = torch.as_tensor(pred)
        target = torch.as_tensor(target)
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(dim=1)
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        if not self._device_fixed and self.mat.device != target.device:
            self.mat = self.mat.to(target.device)
        self._device_fixed = True
        p = pred.reshape(-1).to(self.mat.device, torch.int64)
        t = target.reshape(-1).to(self.mat.device, torch.int64)
        keep = torch.ones_like(t, dtype=torch.bool) if self.ignore_index is None else t != self.ignore_index
        p, t = p[keep], t[keep]
        k = self.num_classes
        if t.numel():
            if int(t.min()) < 0 or int(t.max()) >= k:
                raise ValueError(f"target values outside [0, {k}) (and != ignore_index={self.ignore_index})")
            if int(p.min()) < 0 or int(p.max()) >= k:
                raise ValueError(f"prediction values outside [0, {k})")
        self.mat += torch.bincount(t * k + p, minlength=k * k).reshape(k, k)
        self._reduced = None

    def reduce(self) -> ConfusionMatrix:
        """Sum the local matrices across ranks (torch.distributed); no-op if not initialised.
        Idempotent: always reduces the local counts; the result is used until the next update."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
            torch.distributed.get_world_size() == 1
        ):
            self._reduced = self.mat.clone()
            return self
        dev = (torch.device("cuda", torch.cuda.current_device())
               if torch.distributed.get_backend() == "nccl" else torch.device("cpu"))
        t = self.mat.to(dev).clone()
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        self._reduced = t.to(self.mat.device)
        return self

    @property
    def matrix(self) -> torch.Tensor:
        """The confusion matrix (the reduced one after ``reduce()``)."""
        return self._reduced if self._reduced is not None else self.mat

    def compute(self) -> dict[str, Any]:
        """Metrics as a dict: scalars (float) ``pixel_accuracy, mean_accuracy, miou, precision,
        recall, f1`` and per-class float64 arrays ``iou_per_class, accuracy_per_class,
        precision_per_class, recall_per_class, f1_per_class`` (NaN where undefined), plus
        ``confusion`` (int64 array) and ``n_pixels``."""
        m = self.matrix.detach().cpu().numpy().astype(np.float64)
        tp = np.diag(m)
        gt = m.sum(axis=1)
        pd = m.sum(axis=0)
        total = m.sum()
        iou = _ratio(tp, gt + pd - tp)
        recall = _ratio(tp, gt)
        precision = _ratio(tp, pd)
        f1 = _ratio(2.0 * tp, gt + pd)
        return {
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
            "mean_accuracy": _nanmean(recall),
            "miou": _nanmean(iou),
            "precision": _nanmean(precision),
            "recall": _nanmean(recall),
            "f1": _nanmean(f1),
            "iou_per_class": iou,
            "accuracy_per_class": recall,
            "precision_per_class": precision,
            "recall_per_class": recall.copy(),
            "f1_per_class": f1,
            "confusion": self.matrix.detach().cpu().numpy().copy(),
            "n_pixels": int(total),
        }
