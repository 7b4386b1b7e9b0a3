"""Data of this member: ``reprokit.lmdata`` (synthetic Markov tokens, the Brown corpus, a user's text folder or
token memmaps; document starts; train batches and evaluation windows), shared unchanged with ultramem.
The n-gram hash uses the document starts to stop its window at document boundaries (our choice; ngram.py);
``ngram_counts`` (the A1 saturation reference) is this member's own.
"""

from __future__ import annotations

import numpy as np

from reprokit.lmdata import SPLITS, LMData, eval_targets, eval_windows, load_lm_data, train_batch

from .config import Cfg

__all__ = ["SPLITS", "LMData", "load_data", "train_batch", "eval_windows", "eval_targets", "ngram_counts"]


def load_data(cfg: Cfg) -> LMData:
    """The data of ``cfg.data``; sets nothing on ``cfg`` (``train`` copies the vocabulary size)."""
    return load_lm_data(cfg.data, cfg.model.vocab_size, cache_name="overtok")


def ngram_counts(data: LMData, orders: tuple[int, ...] = (2, 3), split: str = "train") -> dict[int, int]:
    """Distinct token n-grams of a split (the A1 saturation reference; documents not crossed)."""
    ids = np.asarray(data.split(split), dtype=np.int64)
    doc = np.cumsum(data.starts[split].astype(np.int64))
    out = {}
    for n in orders:
        if len(ids) < n:
            out[n] = 0
            continue
        key = np.zeros(len(ids) - n + 1, dtype=np.int64)
        same = np.ones(len(ids) - n + 1, dtype=bool)
        for j in range(n):
            key = key * data.vocab_size + ids[j:len(ids) - n + 1 + j]   # exact while V^n < 2^63
            same &= doc[j:len(ids) - n + 1 + j] == doc[: len(ids) - n + 1]
        out[n] = int(len(np.unique(key[same])))
    return out
