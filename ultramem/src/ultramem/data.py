"""Data of this member: ``reprokit.lmdata`` (synthetic Markov tokens, the Brown corpus, a user's text folder or
token memmaps; document starts; train batches and evaluation windows), shared unchanged with over_tokenized.
The memory models attend across documents like packed OLMo batches; the document starts are unused here.
"""

from __future__ import annotations

from reprokit.lmdata import SPLITS, LMData, eval_targets, eval_windows, load_lm_data, train_batch

from .config import Cfg

__all__ = ["SPLITS", "LMData", "load_data", "train_batch", "eval_windows", "eval_targets"]


def load_data(cfg: Cfg) -> LMData:
    """The data of ``cfg.data``; sets nothing on ``cfg`` (``train`` copies the vocabulary size)."""
    return load_lm_data(cfg.data, cfg.model.vocab_size, cache_name="ultramem")
