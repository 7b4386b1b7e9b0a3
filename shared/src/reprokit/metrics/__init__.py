"""Evaluation metrics: FID/KID (:mod:`.fid`), a domain feature network (:mod:`.feature_net`),
language-model accumulators (:mod:`.lm`) and segmentation confusion matrices (:mod:`.segmentation`).

Submodules are imported explicitly (``from reprokit.metrics.fid import fid_from_features``) so that
importing :mod:`reprokit.metrics` stays cheap.
"""

__all__ = ["feature_net", "fid", "lm", "segmentation"]
